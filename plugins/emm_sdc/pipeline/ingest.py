"""Ingest: MOC deliveries in the S3 inbox become archived, indexed L0/HK files (or quarantined).

DAG ``emm_<inst>_ingest`` starts within seconds of a delivery: the inbox's S3
event notifications reach an SQS queue that the instrument's inbox Asset
watches from Airflow's triggerer (emm_sdc/inbox_events.py), and the ITF's cron
is the safety net (files whose sidecar never came, lost notifications).
Without inbox queues it runs on the cron alone, a deferrable S3 sensor waiting
in the triggerer until the inbox holds work that is ready. Each file is then
validated and archived or quarantined by its own mapped task (a quarantined
file's task ends *skipped*, so quarantines show in the grid, and the run note
lists them with their reasons); Asset events announce the new L0 and HK files.
Files in the inbox's ``calibration/`` folder are the ITF's calibration data:
the same tasks version and archive them (core/calibration.py). A run still
unfinished ``alerts.processed_within_minutes`` after it was queued alerts the
ITF and the operators (emm_sdc/alerts.py).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sdk import DAG, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from emm_sdc import connections
from emm_sdc.alerts import processing_deadline
from emm_sdc.assets import level_asset
from emm_sdc.core import calibration, delivery
from emm_sdc.core.archiving import Archiver, InboxHandler
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.settings import get_settings
from emm_sdc.inbox_events import inbox_schedule, uses_events
from emm_sdc.lanes import queue_args
from emm_sdc.notify import SdcNotifier
from emm_sdc.pipeline.common import (
    START_DATE,
    announce_task,
    dag_callbacks,
    default_args,
    fail_if_any_failed,
    run_context,
)
from emm_sdc.pipeline.inbox import handle_inbox_item, run_waiting

log = logging.getLogger(__name__)

#: Most files one run handles (each is a mapped task; Airflow caps maps at 1024).
MAX_BATCH = 500
#: Sub-folders of an instrument's inbox prefix with their own handler.
FOLDERS = (calibration.FOLDER,)


def inbox_has_work(files: list[dict[str, Any]], prefix: str, grace_minutes: int, **_context: Any) -> bool:
    """Sensor check: fire only when some file is ready or overdue, not for files still waiting."""
    plan = delivery.plan(delivery.sensor_objects(files), prefix,
                         now=datetime.now(UTC), grace=timedelta(minutes=grace_minutes), folders=FOLDERS)
    return bool(plan.actionable)


def new_calibration_note(cat: Any, cfg: ItfConfig, dag_id: str, dag_run_id: str) -> dict[str, Any] | None:
    """New calibration versions this run archived, and the backfill that remakes what uses ``latest``."""
    from emm_sdc.campaigns import backfill_command

    new = cat.calibration_archived_in_run(dag_id, dag_run_id)
    if not new:
        return None
    users = [s.level for s in cfg.processing.chain if s.calibration == "latest"]
    set_version = new[-1]["set_version"]
    cmd = backfill_command(cat, cfg, f"calibration set {set_version}", from_level=users[0],
                           campaign=f"{cfg.instrument} calibration set {set_version}") if users else None
    log.info("new calibration: %s; %s", [f"{r['file_name']} v{r['version']}" for r in new],
             f"to remake {users} with it: {cmd}" if cmd else "no chain step uses the latest set")
    return {"files": [f"{r['file_name']} v{r['version']}" for r in new], "set_version": set_version,
            "levels": users, "backfill_command": cmd}


PLAN_DOC = """\
**What it does**: lists the instrument's inbox, pairs each file with its `.md5` sidecar and hands over the
files that are ready (sidecar arrived) or overdue (no sidecar after `ingest.sidecar_grace_minutes`), at most
500 per run; the others wait (their reasons are in this task's log and in the report's `waiting`).
Skipped: nothing was ready (e.g. the event was a file still waiting for its sidecar).

**If it fails**: S3 could not be listed (endpoint or credentials): the next run tries again; clear this task
after fixing the connection `emm_s3`.
"""
HANDLE_DOC = """\
**What it does**: one delivered file (the map index names it): checks its name, sidecar, MD5, type and
CCSDS packets, then archives it write-once under `emm/data/` and indexes it, or quarantines it under
`emm/quarantine/` with a reason.

**Skipped** = the file was **quarantined**: the log and the run note give the reason; the ITF was told.
Fix the cause and re-deliver the file (a new delivery is a new version).

**If it fails**: S3 or the catalog was unreachable; the file stays in the inbox and is retried (this task's
retries, then the next run). A repeating error on the last try quarantines it as `handling-failed`.
"""
REPORT_DOC = """\
**What it does**: sums the run up from the catalog (archived / duplicate / quarantined, what is left in the
inbox and why, files archived with packet-sequence warnings), writes the run note (quarantines with reasons,
sequence warnings) and tells the ITF of quarantined files.
Its return value (XCom tab) is the full report.

**If it fails**: the catalog or the Airflow API was unreachable; nothing is lost (the report is a summary
of the catalog): clear it to rewrite the note.
"""


def quarantine_note(summary: dict[str, Any], limit: int = 8) -> str | None:
    """The run note of an ingest run that quarantined files (Markdown), or None when it quarantined none."""
    quarantined = summary.get("quarantine") or []
    if not quarantined:
        return None
    lines = [f"**{len(quarantined)} file(s) quarantined** (archived {summary.get('archived', 0)}, "
             f"duplicate {summary.get('duplicate', 0)}):", ""]
    lines += [f"- `{q['file'].rsplit('/', 1)[-1]}`: {q['reason_code']}: {(q['reason'] or '')[:160]}"
              for q in quarantined[:limit]]
    if len(quarantined) > limit:
        lines.append(f"- ... and {len(quarantined) - limit} more: see the `report` task's XCom")
    lines += ["", "Each file's `handle_file` task is *skipped*; quarantined copies and reasons are under "
              "`emm/quarantine/<inst>/<delivery id>/` (`F.reason.json`)."]
    return "\n".join(lines)


def sequence_note(summary: dict[str, Any], limit: int = 8) -> str | None:
    """The run note's lines on files archived with CCSDS sequence-count warnings (Markdown), or None."""
    warned = summary.get("packet_sequence") or []
    if not warned:
        return None
    lines = [f"**{len(warned)} file(s) archived with packet-sequence warnings** (`ingest.packet_sequence: warn`):",
             ""]
    lines += [f"- `{w['file'].rsplit('/', 1)[-1]}`: {w['summary'][:200]}" for w in warned[:limit]]
    if len(warned) > limit:
        lines.append(f"- ... and {len(warned) - limit} more: see the `report` task's XCom")
    return "\n".join(lines)


def build_ingest_dag(cfg: ItfConfig) -> DAG:
    """The ingest DAG of one instrument, from its validated ITF config."""
    settings = get_settings()
    inst = cfg.instrument
    prefix = cfg.ingest.inbox_prefix
    grace = cfg.ingest.sidecar_grace_minutes
    events = uses_events(inst)

    @dag(
        dag_id=f"emm_{inst}_ingest",
        schedule=inbox_schedule(inst, cfg.ingest.schedule),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        max_active_tasks=cfg.airflow.max_active_tasks,
        default_args={**default_args(cfg, "ingest"), **queue_args("ingest")},
        deadline=processing_deadline(cfg, "ingest"),
        **dag_callbacks(cfg.notifications, "ingest"),
        tags=["emm", inst, "ingest"],
        doc_md=__doc__,
    )
    def ingest() -> None:
        @task(doc_md=PLAN_DOC)
        def plan_batch() -> list[dict[str, Any]]:
            """Pair files with sidecars; return the ready and overdue ones (at most MAX_BATCH)."""
            objects = connections.storage().list(settings.inbox_bucket, prefix)
            plan = delivery.plan(objects, prefix, now=datetime.now(UTC), grace=timedelta(minutes=grace),
                                 folders=FOLDERS)
            work, waiting = plan.batch(MAX_BATCH)
            for key, why in list(waiting.items())[:50]:
                log.info("waiting: %s: %s", key, why)
            log.info("%d ready, %d overdue, %d waiting; handling %d now", len(plan.ready), len(plan.overdue),
                     len(waiting), len(work))
            get_current_context()["ti"].xcom_push(key="waiting", value=waiting)
            if not work:
                raise AirflowSkipException(f"nothing ready in the inbox ({len(waiting)} file(s) waiting)")
            return [item.to_dict() for item in work]

        @task(map_index_template="{{ file_name }}", doc_md=HANDLE_DOC)
        def handle_file(item: dict[str, Any]) -> dict[str, Any]:
            """Validate one delivery (name, sidecar, MD5, packets) and archive or quarantine it."""
            common: dict[str, Any] = {"inbox_bucket": settings.inbox_bucket,
                                      "archive_bucket": settings.archive_bucket, "ctx": run_context()}
            if item.get("folder") == calibration.FOLDER:
                handler: InboxHandler = calibration.CalibrationArchiver(
                    connections.storage(), connections.catalog(), inst, **common)
            else:
                handler = Archiver(connections.storage(), connections.catalog(), cfg, **common)
            return handle_inbox_item(handler, item)

        @task(trigger_rule=TriggerRule.ALL_DONE, doc_md=REPORT_DOC)
        def report() -> dict[str, Any]:
            """Summarise the run from the catalog; notify the ITF of quarantined files."""
            ctx = run_context()
            cat = connections.catalog()
            rows = cat.run_deliveries(ctx.dag_id, ctx.dag_run_id)
            summary: dict[str, Any] = {"archived": 0, "duplicate": 0, "quarantined": 0}
            for r in rows:
                summary[r["outcome"]] += 1
            quarantined = [r for r in rows if r["outcome"] == "quarantined"]
            summary["quarantine"] = [
                {"file": r["inbox_key"], "reason_code": r["reason_code"], "reason": r["reason"]}
                for r in quarantined
            ]
            summary["waiting"] = run_waiting(connections.storage(), settings.inbox_bucket, prefix, folders=FOLDERS)
            if quarantined:
                body = "\n".join(f"- {q['file']}: {q['reason_code']}: {q['reason']}" for q in summary["quarantine"])
                SdcNotifier.from_config(
                    cfg.notifications,
                    subject=f"[EMM SDC] {len(quarantined)} {inst} file(s) quarantined",
                    body=f"Run {ctx.dag_run_id} of {ctx.dag_id} quarantined:\n{body}",
                ).notify(get_current_context())
            summary["packet_sequence"] = [
                {"file": r["inbox_key"], "outcome": r["outcome"], "summary": r["summary"]}
                for r in cat.packet_sequence_anomalies(ctx.dag_id, ctx.dag_run_id) if r["verdict"] == "warned"
            ]
            summary["calibration"] = new_calibration_note(cat, cfg, ctx.dag_id, ctx.dag_run_id)
            note = "\n\n".join(n for n in (quarantine_note(summary), sequence_note(summary)) if n)
            if note:
                summary["note_set"] = connections.set_run_note(ctx.dag_id, ctx.dag_run_id, note)
            log.info("ingest summary: %s", {k: v for k, v in summary.items() if k != "waiting"}
                     | {"waiting": len(summary["waiting"])})
            return summary

        items = plan_batch()
        handled = handle_file.expand(item=items)
        if not events:
            S3KeySensor(
                task_id="wait_for_delivery",
                bucket_name=settings.inbox_bucket,
                bucket_key=f"{prefix}*",
                wildcard_match=True,
                check_fn=partial(inbox_has_work, prefix=prefix, grace_minutes=grace),
                metadata_keys=["Key", "Size", "LastModified"],
                aws_conn_id=settings.aws_conn_id,
                deferrable=True,
                poke_interval=60,
                timeout=cfg.ingest.wait_minutes * 60,
                soft_fail=True,  # nothing arrived in wait_minutes: skip this run; the next one re-arms
                doc_md="**What it does**: waits in the triggerer (no worker slot) until the inbox holds a file "
                       "that is ready or overdue. *Skipped*: nothing came within `ingest.wait_minutes`.\n\n"
                       "**If it fails**: S3 could not be listed (connection `emm_s3`); the next cron run re-arms it.",
            ) >> items
        announced = [announce_task(level_asset(inst, lvl), lvl, "files") for lvl in ("l0", "hk")]
        handled >> announced
        handled >> report()
        handled >> fail_if_any_failed()

    return ingest()
