"""Notifications: always logged; the provider notifiers are used only when a connection is named."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from emm_sdc.core.config import Notifications
from emm_sdc.notify import (
    MAX_LISTED,
    DagFailureNotifier,
    SdcNotifier,
    TaskState,
    _from_state_key,
    dag_failure_notifier,
    failure_message,
    operators_notifier,
)
from emm_sdc.pipeline.common import WATCHER_TASK_ID, dag_callbacks


def test_logs_subject_and_body_without_connections(caplog: pytest.LogCaptureFixture) -> None:
    n = SdcNotifier.from_config(Notifications(emails=["itf@example.org"]), "3 files quarantined", "- a: empty")
    with caplog.at_level(logging.WARNING, logger="emm_sdc.notify"):
        n.notify({})
    assert "3 files quarantined" in caplog.text and "- a: empty" in caplog.text


@pytest.fixture
def smtp_sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """What the smtp provider's notifier was asked to send (the provider class itself is replaced)."""
    sent: list[tuple] = []

    class FakeSmtp:
        def __init__(self, **kw: object) -> None:
            self.kw = kw

        def notify(self, context: object) -> None:
            sent.append((self.kw["smtp_conn_id"], self.kw["to"], self.kw["subject"]))

    monkeypatch.setattr("airflow.providers.smtp.notifications.smtp.SmtpNotifier", FakeSmtp)
    return sent


def test_smtp_is_used_when_configured(smtp_sent: list[tuple]) -> None:
    cfg = Notifications(emails=["itf@example.org"], smtp_conn_id="itf_smtp")
    SdcNotifier.from_config(cfg, "subject", "body").notify({})
    assert smtp_sent == [("itf_smtp", ["itf@example.org"], "subject")]


def test_one_mail_per_smtp_connection_for_several_contacts(smtp_sent: list[tuple]) -> None:
    itf = Notifications(emails=["itf@example.org", "pi@example.org"], smtp_conn_id="smtp")
    ops = Notifications(emails=["ops@example.org", "pi@example.org"], smtp_conn_id="smtp")
    other = Notifications(emails=["night@example.org"], smtp_conn_id="other_smtp")
    unsent = Notifications(emails=["log-only@example.org"])
    n = SdcNotifier.from_config([itf, ops, other, unsent], "subject", "body")
    assert n.emails == ["itf@example.org", "pi@example.org", "ops@example.org", "night@example.org",
                        "log-only@example.org"]
    n.notify({})
    assert smtp_sent == [("smtp", ["itf@example.org", "pi@example.org", "ops@example.org"], "subject"),
                         ("other_smtp", ["night@example.org"], "subject")]


def test_failure_message_lists_every_failed_instance_once() -> None:
    tasks = [TaskState("handle_file", 0, "success", "a.bin"), TaskState("handle_file", 1, "failed", "b.bin"),
             TaskState("handle_file", 2, "failed", "2"), TaskState("report", -1, "success"),
             TaskState("announce_l0", -1, "upstream_failed"), TaskState(WATCHER_TASK_ID, -1, "failed")]
    subject, body = failure_message("ingest", "emm_exi_ingest", "manual__1", "task_failure", tasks,
                                    run_url="http://ui/dags/emm_exi_ingest/runs/manual__1", ignore=[WATCHER_TASK_ID])
    assert subject == "[EMM SDC] ingest failed: emm_exi_ingest run manual__1"
    assert body.splitlines() == [
        "DAG emm_exi_ingest, run manual__1 failed (task_failure).",
        "2 failed task instance(s):",
        "  - handle_file[1] b.bin",
        "  - handle_file[2]",
        "1 task instance(s) did not run because of them (upstream_failed).",
        "Run: http://ui/dags/emm_exi_ingest/runs/manual__1",
    ]
    # the watcher is listed when it is all that failed; long lists are cut
    _, body = failure_message("x", "d", "r", None, [TaskState(WATCHER_TASK_ID, -1, "failed")], ignore=[WATCHER_TASK_ID])
    assert f"  - {WATCHER_TASK_ID}" in body
    many = [TaskState("t", i, "failed") for i in range(MAX_LISTED + 5)]
    _, body = failure_message("x", "d", "r", None, many)
    assert f"{MAX_LISTED + 5} failed task instance(s)" in body and "... and 5 more" in body
    _, body = failure_message("x", "d", "r", None, None)
    assert "could not be listed" in body
    _, body = failure_message("x", "d", "r", "timed_out", [TaskState("t", -1, "running")])
    assert body.splitlines() == ["DAG d, run r failed (timed_out).", "No task instance failed."]


def test_task_state_keys_of_the_supervisor_channel() -> None:
    ids = {"handle_file", "unit.l1.run", "step_2"}
    assert _from_state_key(ids, "handle_file_12", "failed") == TaskState("handle_file", 12, "failed")
    assert _from_state_key(ids, "unit.l1.run_0", "failed") == TaskState("unit.l1.run", 0, "failed")
    assert _from_state_key(ids, "step_2", "failed") == TaskState("step_2", -1, "failed")
    assert _from_state_key(ids, "report", "success") == TaskState("report", -1, "success")


def test_operator_contacts_come_from_the_site_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "sdc.yaml"
    site.write_text("operators:\n  emails: [night-ops@example.org]\n  smtp_conn_id: ops_smtp\n"
                    "  slack_conn_id: ops_slack\n  slack_channel: '#emm-ops'\n")
    monkeypatch.setenv("EMM_SITE_CONFIG", str(site))
    ops = Notifications(emails=["night-ops@example.org"], smtp_conn_id="ops_smtp", slack_conn_id="ops_slack",
                        slack_channel="#emm-ops")
    n = operators_notifier("2 SPICE kernel(s) quarantined", "- k.bsp: coverage-mismatch")
    assert n.contacts == [ops] and n.emails == ["night-ops@example.org"]
    assert (n.subject, n.body) == ("2 SPICE kernel(s) quarantined", "- k.bsp: coverage-mismatch")

    itf = Notifications(emails=["exi-itf@example.org"])
    callback = dag_callbacks(itf, "processing")["on_failure_callback"]
    assert isinstance(callback, DagFailureNotifier)
    assert callback.contacts == [itf, ops] and callback.what == "processing"
    assert callback.ignore == (WATCHER_TASK_ID,)
    assert dag_callbacks(None, "SPICE refresh")["on_failure_callback"].contacts == [ops]


def _notices(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("NOTIFY ")]


def test_a_shared_notifier_renders_every_failure_afresh(caplog: pytest.LogCaptureFixture) -> None:
    """One callback object for many tasks in one process: each message has its own text."""
    n = SdcNotifier("{{ ti.task_id }} failed in {{ run_id }}", "error: {{ exception }}",
                    contacts=[Notifications(emails=["itf@example.org"])])
    with caplog.at_level(logging.WARNING, logger="emm_sdc.notify"):
        n({"ti": SimpleNamespace(task_id="unit.l1.run"), "run_id": "r1", "exception": "exit status 1"})
        n({"ti": SimpleNamespace(task_id="unit.l2.run"), "run_id": "r2", "exception": "timed out"})
    assert _notices(caplog) == ["NOTIFY unit.l1.run failed in r1\nerror: exit status 1",
                                "NOTIFY unit.l2.run failed in r2\nerror: timed out"]
    assert (n.subject, n.body) == ("{{ ti.task_id }} failed in {{ run_id }}", "error: {{ exception }}")


def test_a_shared_dag_failure_notifier_reports_each_run(caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    failed = {"r1": [TaskState("handle_file", 0, "failed", "a.bin")], "r2": [TaskState("report", -1, "failed")]}
    monkeypatch.setattr("emm_sdc.notify.run_task_states", lambda dag, run_id: failed[run_id])
    callback = dag_failure_notifier(Notifications(emails=["itf@example.org"]), "ingest")
    with caplog.at_level(logging.WARNING, logger="emm_sdc.notify"):
        for dag_id, run_id in (("emm_exi_ingest", "r1"), ("emm_emr_ingest", "r2")):
            callback({"dag": SimpleNamespace(dag_id=dag_id), "run_id": run_id, "reason": "task_failure"})
    first, second = _notices(caplog)
    assert first.startswith("NOTIFY [EMM SDC] ingest failed: emm_exi_ingest run r1\n")
    assert "handle_file[0] a.bin" in first
    assert second.startswith("NOTIFY [EMM SDC] ingest failed: emm_emr_ingest run r2\n") and "  - report" in second
    assert "a.bin" not in second
