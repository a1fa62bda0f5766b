"""``emm_integrity_reconcile``: prove that the archive and the catalog agree, byte for byte (daily, or by hand).

``plan`` opens the run's record (its deep-verification slice) and splits the work into partitions: one per
archive prefix (or the whole bucket through an S3 Inventory), the catalog checks, one per inbox. ``check``
(mapped, ``parallel_tasks`` at once) merges each partition's objects with the catalog rows that expect
them and records findings: orphan, phantom, size/checksum mismatch (listing ETags, and a throttled re-read
of a rotating slice), duplicate latest rows, lineage to missing rows, kernel-class disagreements, quarantine
rows without their reason, stale inbox files. ``repair`` (only when asked: ``repair: true``; a dry run
unless ``dry_run: false``) plans or applies the safe repairs and audits each on its finding. ``report``
writes ``report.json`` and ``findings.csv`` to ``emm/reports/reconciliation/YYYY/MM/DD/<run>/``, closes
the run, writes the DAG run note, tells the operators (and each ITF about its instrument), and returns the
counts per kind; ``verdict`` turns the run red when any finding has severity error.

Settings: ``reconciliation:`` in the site config (``include/sdc.yaml``). See docs/reconciliation.md.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, CronTriggerTimetable, Param, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from emm_sdc import connections
from emm_sdc.core import calibration, naming
from emm_sdc.core import reconcile as rc
from emm_sdc.core.config import ConfigError
from emm_sdc.core.config_store import running_config
from emm_sdc.core.settings import get_settings
from emm_sdc.core.site_config import reconciliation
from emm_sdc.pipeline.common import START_DATE, dag_callbacks, fail_if_any_failed
from emm_sdc.pipeline.params import list_param, pick_list, run_params

log = logging.getLogger(__name__)
DAG_ID = "emm_integrity_reconcile"
_DEFAULT_ARGS = {"owner": "sdc-ops", "retries": 1, "retry_delay": timedelta(minutes=10)}

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
PLAN_DOC = """\
**What it does**: validates the Params, opens the run's record (`reconciliation_runs`: its deep-verification slice
and whether an S3 Inventory or live listing is read) and splits the work into partitions: one per archive prefix,
the catalog checks, one per inbox (each a `check` task).

**If it fails**: a Param error names the field and the rule: trigger again with a corrected value. S3 or the
catalog unreachable: clear the task after the outage. A broken inventory manifest is named: fix the inventory
configuration or set `inventory: null` in the site config.
"""
CHECK_DOC = """\
**What it does**: compares one partition (its name is the map index): the objects under an archive prefix with
the catalog rows expecting them, in key order, re-reading this run's slice of them (throttled); or the catalog
checks; or one inbox. Findings go to `reconciliation_findings` (docs/reconciliation.md says what each means).

**If it fails**: findings never fail it; S3 or the catalog being unreachable does: clear it after the outage (a
retried partition replaces its own findings). The other partitions and the report still run.
"""
REPAIR_DOC = """\
**What it does**: only with `repair: true`: plans (`dry_run: true`, the default) or applies the safe repairs of
the findings (re-index or quarantine orphans, restore or mark phantoms, fix duplicate latest rows, rewrite
missing reasons), audited on each finding. Skipped when a check failed.

**If it fails**: one repair failing is recorded on its finding (`repair_status` failed) and does not fail the
task; S3 or the catalog unreachable does: clear it after the outage (applied repairs are not redone).
"""
REPORT_DOC = """\
**What it does**: writes `report.json` and `findings.csv` under `emm/reports/reconciliation/YYYY/MM/DD/<run>/`
(once), closes the run, writes the run note, tells the operators (and each ITF about its instrument) and
returns the counts per kind.

**If it fails**: S3 or the catalog unreachable: clear it (a retry finds the report it wrote). "did not open a
run": `plan` failed first; see it.
"""
VERDICT_DOC = """\
**What it does**: turns the run red when any finding has severity error (after the report and the messages).

**If it fails**: that is its job: read the report (or the `report` task's return value) and act on each
finding as docs/reconciliation.md says; then trigger the DAG again (with `repair: true` for the repairable
kinds, dry run first).
"""


def inbox_targets(instruments: tuple[str, ...] = ()) -> list[rc.InboxTarget]:
    """The inboxes to watch: each ITF's (with its YAML's sidecar grace; calibration/ is its own folder) and
    the SPICE inbox. An instrument whose YAML does not load is left out (its DAGs show that error)."""
    from emm_sdc.pipeline.spice import SIDECAR_GRACE_MINUTES

    s = get_settings()
    out = []
    for inst in instruments or naming.INSTRUMENTS:
        try:
            cfg = running_config(inst)
        except ConfigError as exc:
            log.error("inbox of %s not checked: %s", inst, exc)
            continue
        out.append(rc.InboxTarget(inst, s.inbox_bucket, cfg.ingest.inbox_prefix, cfg.ingest.sidecar_grace_minutes,
                                  (calibration.FOLDER,)))
    if not instruments:
        out.append(rc.InboxTarget("spice", s.inbox_bucket, s.spice_inbox_prefix, SIDECAR_GRACE_MINUTES))
    return out


def _params_of(ctx: Any) -> dict[str, Any]:
    p = run_params(ctx)
    return {"instruments": list_param(p, "instruments"), "prefixes": list_param(p, "prefixes"),
            "deep_fraction": p.get("deep_fraction"), "repair": bool(p.get("repair")),
            "dry_run": bool(p.get("dry_run", True))}


def build_reconcile_dag() -> DAG:
    """``emm_integrity_reconcile`` with its schedule and parallelism from the site config."""
    cfg = reconciliation()

    @dag(
        dag_id=DAG_ID,
        schedule=CronTriggerTimetable(cfg.schedule, timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=_DEFAULT_ARGS,
        **dag_callbacks(None, "integrity reconciliation"),
        tags=["emm", "maintenance", "integrity"],
        doc_md=__doc__,
        params={
            "instruments": pick_list(naming.INSTRUMENTS, title="Instruments",
                                     description="only these instruments' archive folders, inboxes and catalog "
                                                 "rows (default: everything)"),
            "prefixes": Param(None, type=["null", "array"], title="Prefixes",
                              items={"type": "string", "pattern": r"^\s*(emm/([^/]+/)+)?\s*$"},
                              description="only these archive folders, one per line, e.g. emm/data/exi/l1/ (no "
                                          "catalog or inbox checks then)"),
            "deep_fraction": Param(None, type=["null", "number"], minimum=0, maximum=1,
                                   description="share of the archive to re-read and re-checksum (0-1); empty: "
                                               "the scheduled rotation (every object within deep_verify_days)"),
            "repair": Param(False, type="boolean",
                            description="repair what can be repaired safely (re-index/quarantine orphans, restore "
                                        "or mark phantoms, fix duplicate latest rows, rewrite missing reasons)"),
            "dry_run": Param(True, type="boolean",
                             description="with repair: only record what each repair would do (default); set false "
                                         "to apply"),
        },
    )
    def integrity_reconcile() -> None:
        @task(doc_md=PLAN_DOC)
        def plan() -> list[dict[str, Any]]:
            """Open the run's record and split the work into partitions (mapped by ``check``)."""
            ctx = get_current_context()
            p = _params_of(ctx)
            try:
                scope = rc.check_scope(p["instruments"], p["prefixes"])
            except ValueError as exc:
                raise AirflowFailException(str(exc)) from None
            now = datetime.now(UTC)
            storage, bucket = connections.storage(), get_settings().archive_bucket
            manifest = rc.choose_listing(storage.client, cfg, scope, now)
            run = rc.open_run(connections.catalog(), dag_id=ctx["dag"].dag_id, dag_run_id=ctx["run_id"], params=p,
                              scope=scope, cfg=cfg, now=now, listing="inventory" if manifest else "listing",
                              deep_fraction=p["deep_fraction"])
            ctx["ti"].xcom_push(key="run", value=run)
            parts = rc.plan_partitions(storage.client, bucket, scope, manifest=manifest,
                                       inbox=inbox_targets(scope.instruments) if not scope.prefixes else ())
            log.info("run %s: %d partition(s) via %s; deep verification of %.2f%% of the key space from %.4f",
                     run["id"], len(parts), run["listing"], 100 * run["deep_fraction"], run["deep_start"])
            return parts

        @task(map_index_template="{{ partition_name }}", max_active_tis_per_dagrun=cfg.parallel_tasks,
              doc_md=CHECK_DOC)
        def check(part: dict[str, Any]) -> dict[str, Any]:
            """Compare one partition; its findings go to the catalog."""
            ctx = get_current_context()
            ctx["partition_name"] = naming.task_label(part["name"])  # type: ignore[typeddict-unknown-key]
            run = ctx["ti"].xcom_pull(task_ids="plan", key="run")
            result = rc.check_partition(connections.storage(), connections.catalog(), connections.catalog().conn,
                                        run, part, bucket=get_settings().archive_bucket, cfg=cfg,
                                        now=datetime.now(UTC), parallel=cfg.parallel_tasks)
            log.info("%s: %s", part["name"], result.to_dict())
            return result.to_dict()

        @task(trigger_rule=TriggerRule.NONE_FAILED, doc_md=REPAIR_DOC)
        def repair(results: list[dict[str, Any]]) -> dict[str, int]:
            """Plan (dry run) or apply the safe repairs, when the run asks for them."""
            ctx = get_current_context()
            p = _params_of(ctx)
            if not p["repair"]:
                log.info("repairs are off (param repair: false)")
                return {}
            run = ctx["ti"].xcom_pull(task_ids="plan", key="run")
            done = rc.repair(connections.storage(), connections.catalog(), run, bucket=get_settings().archive_bucket,
                             dry_run=p["dry_run"])
            log.info("%s: %s", "dry run, nothing changed" if p["dry_run"] else "repairs applied", done)
            return done

        @task(trigger_rule=TriggerRule.ALL_DONE, doc_md=REPORT_DOC)
        def report(repairs: dict[str, int] | None) -> dict[str, Any]:
            """Report (JSON + CSV, once), close the run, note it, tell operators and ITFs; counts per kind."""
            ctx = get_current_context()
            run = ctx["ti"].xcom_pull(task_ids="plan", key="run")
            if not run:
                raise AirflowFailException("the plan task did not open a run: nothing to report")
            cat = connections.catalog()
            summary = rc.write_report(connections.storage(), cat, run, bucket=get_settings().archive_bucket,
                                      work_dir=get_settings().work_dir / "reconciliation")
            connections.set_run_note(ctx["dag"].dag_id, ctx["run_id"], summary.note())
            log.info("%s", summary.note())
            notify(cat, summary, ctx)
            return {**summary.to_dict(), "repairs": repairs or {}}

        @task(retries=0, doc_md=VERDICT_DOC)
        def verdict(summary: dict[str, Any]) -> None:
            """Red when any finding has severity error (the report and messages are out already)."""
            if summary["severities"].get("error"):
                raise AirflowFailException(f"{summary['severities']['error']} error finding(s): {summary['counts']}; "
                                           f"report {summary['report']}")

        parts = plan()
        results = check.expand(part=parts)
        done = repair(results)
        summary = report(done)
        verdict(summary) >> fail_if_any_failed()

    return integrity_reconcile()


def notify(cat: Any, summary: rc.Summary, ctx: Any) -> None:
    """Every finding to the operators; each instrument's to its ITF (site config ``notify_itfs``)."""
    from emm_sdc.core.site_config import operators
    from emm_sdc.notify import SdcNotifier

    cfg = reconciliation()
    for audience, (subject, body) in rc.messages(cat, summary).items():
        if audience is None:
            contacts = operators()
        elif cfg.notify_itfs:
            try:
                contacts = running_config(audience).notifications
            except ConfigError as exc:
                log.error("the %s ITF is not told (its YAML does not load): %s", audience, exc)
                continue
        else:
            continue
        try:
            SdcNotifier.from_config(contacts, subject, body).notify(ctx)
        except Exception:  # a message is a courtesy: the report and the catalog hold the record
            log.exception("the reconciliation message to %s was not sent", audience or "the operators")
