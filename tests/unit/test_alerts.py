"""Late-data alerts and event-driven ingest: the pure rules (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emm_sdc.alerts import deadline_message, processing_deadline, silence
from emm_sdc.core.config import load_instrument
from emm_sdc.core.settings import get_settings
from emm_sdc.pipeline.ingest import quarantine_note, sequence_note

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


@pytest.mark.parametrize(("quiet", "silent", "notify"), [
    (timedelta(hours=23), False, False),          # within the limit
    (timedelta(hours=24, minutes=10), True, True),  # first hourly check past the limit: tell them
    (timedelta(hours=25, minutes=10), True, False),  # still silent, already told: stay red, no new message
    (timedelta(days=9), True, False),
])
def test_silence_is_notified_once_and_shown_while_it_lasts(quiet: timedelta, silent: bool, notify: bool) -> None:
    assert silence(NOW - quiet, NOW, DAY) == (silent, notify)


def test_no_delivery_ever_is_not_a_silence() -> None:
    assert silence(None, NOW, DAY) == (False, False)


def test_processing_deadline_is_queued_time_plus_the_yaml_minutes() -> None:
    from airflow.sdk import DeadlineReference

    cfg = load_instrument("exi")
    alert = processing_deadline(cfg, "processing")
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval == timedelta(minutes=cfg.alerts.processed_within_minutes) == timedelta(minutes=30)
    assert alert.callback.kwargs == {"instrument": "exi", "what": "processing", "minutes": 30}
    assert alert.callback.path == "emm_sdc.alerts.deadline_missed"


def test_deadline_message_names_the_run_and_what_to_look_at() -> None:
    ctx = {"dag_run": {"dag_id": "emm_exi_process", "dag_run_id": "asset_triggered__x", "queued_at": "t0",
                       "state": "running"}, "deadline": {"deadline_time": "t1"}}
    subject, body = deadline_message("exi", "processing", 30, ctx)
    assert subject == "[EMM SDC] EXI processing late: emm_exi_process run asset_triggered__x not finished after 30 min"
    assert "queued at t0" in body and "deadline t1" in body and "state then: running" in body


def test_quarantine_note_lists_files_with_reasons_and_caps_the_list() -> None:
    q = [{"file": f"inbox/exi/f{i}.bin", "reason_code": "checksum-mismatch", "reason": "md5 differs"}
         for i in range(10)]
    note = quarantine_note({"archived": 3, "duplicate": 0, "quarantine": q})
    assert note is not None
    assert note.startswith("**10 file(s) quarantined** (archived 3, duplicate 0):")
    assert "- `f0.bin`: checksum-mismatch: md5 differs" in note
    assert "and 2 more" in note and "`f9.bin`" not in note
    assert quarantine_note({"archived": 3, "quarantine": []}) is None


def test_sequence_note_lists_files_archived_with_packet_sequence_warnings() -> None:
    w = [{"file": f"inbox/exi/f{i}.bin", "outcome": "archived", "summary": "APID 0x114: 1 gap(s)"} for i in range(9)]
    note = sequence_note({"packet_sequence": w})
    assert note is not None and note.startswith("**9 file(s) archived with packet-sequence warnings**")
    assert "- `f0.bin`: APID 0x114: 1 gap(s)" in note and "and 1 more" in note and "`f8.bin`" not in note
    assert sequence_note({"packet_sequence": []}) is None and sequence_note({}) is None


def test_ingest_waits_on_s3_events_when_queues_are_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    from emm_sdc.pipeline.ingest import build_ingest_dag

    cfg = load_instrument("exi")
    cron_only = build_ingest_dag(cfg)
    assert cron_only.schedule == cfg.ingest.schedule
    assert cron_only.get_task("wait_for_delivery").deferrable is True

    monkeypatch.setenv("EMM_INBOX_QUEUE_URL_PREFIX", "https://sqs.us-east-1.amazonaws.com/123456789012/")
    get_settings.cache_clear()
    events = build_ingest_dag(cfg)
    from airflow.sdk import AssetOrTimeSchedule

    assert isinstance(events.schedule, AssetOrTimeSchedule)
    [asset] = events.schedule.asset_condition.objects
    assert asset.name == "emm_exi_inbox"
    [watcher] = asset.watchers
    assert watcher.trigger.sqs_queue == "https://sqs.us-east-1.amazonaws.com/123456789012/emm-sdc-inbox-exi"
    assert watcher.trigger.wait_time_seconds == 20  # long polls: a message is seen as soon as it is sent
    assert "wait_for_delivery" not in events.task_ids  # no sensor: the event is the signal
    assert events.deadline is not None


def test_queue_prefix_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMM_INBOX_QUEUE_URL_PREFIX", "https://sqs.example/queue-name")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="EMM_INBOX_QUEUE_URL_PREFIX"):
        get_settings()
