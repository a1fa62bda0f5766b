"""SPICE refresh: kernel deliveries become archived, indexed kernels, a new meta-kernel, and reprocessing.

DAG ``emm_spice_refresh``, on a cron: a deferrable S3 sensor waits for ready
files in the SPICE inbox (``inbox/spice/`` by default); generic kernels (LSK,
PCK, FK, IK, SCLK, planetary SPK) are handled first, then Hope SPK/CK, whose
coverage check needs the LSK/SCLK. Each kernel is load-tested with spiceypy,
its coverage read with spkcov/ckcov and compared with its name, then archived,
copied into the kernel directory and indexed; bad kernels are quarantined
with the reason. When a run archived anything, a new meta-kernel version is
written (Asset ``emm_spice_meta_kernel``). Products made with a worse kernel
class whose time the new kernels now cover at ``r`` or ``f`` are queued for
reprocessing: a run of each affected instrument's ``emm_<inst>_reprocess`` (its reprocessing lane),
with a note and a ``reason`` saying which kernels and which time made it necessary.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, TriggerRule, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowSkipException

from emm_sdc import connections
from emm_sdc.assets import META_KERNEL
from emm_sdc.core import delivery, kernels
from emm_sdc.core.config_store import running_config
from emm_sdc.core.kernel_archiving import KernelArchiver
from emm_sdc.core.refresh import reprocessing_plan, write_meta_kernel
from emm_sdc.core.settings import get_settings
from emm_sdc.inbox_events import inbox_schedule, uses_events
from emm_sdc.lanes import queue_args
from emm_sdc.notify import operators_notifier
from emm_sdc.pipeline.common import START_DATE, dag_callbacks, fail_if_any_failed, run_context
from emm_sdc.pipeline.inbox import handle_inbox_item, run_waiting
from emm_sdc.pipeline.ingest import MAX_BATCH, inbox_has_work

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
WAIT_DOC = """\
**What it does**: waits in the triggerer (no worker slot) until a kernel in the SPICE inbox is ready (its
`.md5` sidecar arrived) or overdue. **Skipped** after an hour without work; the next run waits again.

**If it fails**: S3 unreachable or the `emm_s3` connection is wrong: fix it; the next run waits again (files
stay in the inbox).
"""
PLAN_GENERIC_DOC = """\
**What it does**: lists the ready or overdue generic kernels (LSK, PCK, FK, IK, SCLK, planetary SPK, anything
that is not a Hope kernel), at most one batch; they are handled before the Hope kernels.

**If it fails**: S3 unreachable: clear it after the outage.
"""
PLAN_HOPE_DOC = """\
**What it does**: lists the ready or overdue Hope SPK/CK, once the generic kernels their checks need are in.

**If it fails**: S3 unreachable: clear it after the outage.
"""
HANDLE_GENERIC_DOC = """\
**What it does**: one generic kernel (the map index names it): name, MD5 and a spiceypy load test, then
archived, copied into the kernel directory and indexed, and removed from the inbox; a bad kernel is
quarantined with its reason (the `report` mail lists it).

**If it fails**: S3 or the catalog was unreachable: clear it after the outage (the kernel stays in the inbox).
"""
HANDLE_HOPE_DOC = """\
**What it does**: one Hope SPK/CK: name, MD5, load test and spkcov/ckcov coverage against the name's dates,
then archived and indexed with its coverage (an older version is superseded); a bad kernel is quarantined
(`kernel-load-failed`, `coverage-mismatch`, ...) and the MOC re-delivers it.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage (the kernel stays in the inbox).
"""
META_KERNEL_DOC = """\
**What it does**: when this run archived kernels, writes a new meta-kernel (`emm_meta_vNNNN.tm`, p < r < f load
order) over the active kernels (Asset `emm_spice_meta_kernel`). **Skipped**: no new kernels.

**If it fails**: S3, the catalog or the kernel directory (named in the log): fix it, then clear; processing
uses the previous meta-kernel meanwhile.
"""
PLAN_REPROCESSING_DOC = """\
**What it does**: finds the products that the new Hope kernels now cover better (`r`/`f`) and prepares one
`emm_<inst>_reprocess` run per affected instrument, with the reason.

**If it fails**: a broken ITF YAML: fix it, then clear. Catalog unreachable: clear it after the outage.
"""
QUEUE_REPROCESSING_DOC = """\
**What it does**: starts one instrument's `emm_<inst>_reprocess` run (its reprocessing lane) with the files,
the level to start from and the reason, which is also the run's note.

**If it fails**: "already exists": that run was queued before; nothing to do. Otherwise clear it once the
Airflow API answers.
"""
REPORT_DOC = """\
**What it does**: sums the run up: kernels archived, quarantined (the operators are mailed the reasons) and
still waiting in the inbox.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage (it only reports).
"""
META_KERNEL_ASSET = META_KERNEL
SIDECAR_GRACE_MINUTES = 60
INSTRUMENTS = ("exi", "emu", "emr")
#: Run ids of the processing runs a refresh queues start with this.
REPROCESSING_RUN_PREFIX = "spice_refresh__"


def reprocessing_runs(dag_id: str | None = None, *, queued_only: bool = False) -> list[dict[str, Any]]:
    """Processing runs queued by SPICE refreshes (dag_id, run_id, conf, note), oldest run id first."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        query = session.query(DagRun).filter(DagRun.run_id.like(f"{REPROCESSING_RUN_PREFIX}%"))
        if dag_id is not None:
            query = query.filter(DagRun.dag_id == dag_id)
        if queued_only:
            query = query.filter(DagRun.state == DagRunState.QUEUED)
        return [{"dag_id": r.dag_id, "run_id": r.run_id, "conf": dict(r.conf or {}), "note": r.note}
                for r in sorted(query.all(), key=lambda r: r.run_id)]


def _is_hope(key: str) -> bool:
    try:
        return kernels.parse_kernel_name(key.rsplit("/", 1)[-1]).is_hope
    except kernels.InvalidKernelNameError:
        return False


def build_spice_refresh_dag() -> DAG:
    settings = get_settings()
    prefix = settings.spice_inbox_prefix

    @dag(
        dag_id="emm_spice_refresh",
        schedule=inbox_schedule("spice", "*/10 * * * *"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "sdc-ops", "retries": 2, "retry_delay": timedelta(minutes=5), **queue_args("ingest")},
        **dag_callbacks(None, "SPICE refresh"),
        tags=["emm", "spice"],
        doc_md=__doc__,
    )
    def spice_refresh() -> None:
        # With inbox S3 events the kernels' upload starts the run (inbox_events.py); otherwise the cron arms
        # a deferrable sensor.
        wait = None if uses_events("spice") else S3KeySensor(
            task_id="wait_for_kernels", bucket_name=settings.inbox_bucket, bucket_key=f"{prefix}*",
            wildcard_match=True, check_fn=partial(inbox_has_work, prefix=prefix, grace_minutes=SIDECAR_GRACE_MINUTES),
            metadata_keys=["Key", "Size", "LastModified"], aws_conn_id=settings.aws_conn_id, deferrable=True,
            poke_interval=60, timeout=60 * 60, soft_fail=True, doc_md=WAIT_DOC,
        )

        def plan(hope: bool) -> list[dict[str, Any]]:
            objects = connections.storage().list(settings.inbox_bucket, prefix)
            found = delivery.plan(objects, prefix, now=datetime.now(UTC),
                                  grace=timedelta(minutes=SIDECAR_GRACE_MINUTES))
            mine = delivery.DeliveryPlan([i for i in found.ready if _is_hope(i.key) == hope],
                                         [i for i in found.overdue if _is_hope(i.key) == hope], found.waiting)
            work, waiting = mine.batch(MAX_BATCH)
            get_current_context()["ti"].xcom_push(key="waiting", value=waiting)
            return [i.to_dict() for i in work]

        @task(doc_md=PLAN_GENERIC_DOC)
        def plan_generic() -> list[dict[str, Any]]:
            """Ready/overdue generic kernels (and anything that is not a Hope kernel): handled first."""
            return plan(hope=False)

        @task(trigger_rule=TriggerRule.NONE_FAILED, doc_md=PLAN_HOPE_DOC)
        def plan_hope() -> list[dict[str, Any]]:
            """Ready/overdue Hope SPK/CK, once the generic kernels their checks need are in."""
            return plan(hope=True)

        def handler() -> KernelArchiver:
            return KernelArchiver(connections.storage(), connections.catalog(), kernel_dir=settings.kernel_dir,
                                  inbox_bucket=settings.inbox_bucket, archive_bucket=settings.archive_bucket,
                                  ctx=run_context())

        @task(map_index_template="{{ file_name }}", doc_md=HANDLE_GENERIC_DOC)
        def handle_generic(item: dict[str, Any]) -> dict[str, Any]:
            return handle_inbox_item(handler(), item)

        @task(map_index_template="{{ file_name }}", trigger_rule=TriggerRule.NONE_FAILED, doc_md=HANDLE_HOPE_DOC)
        def handle_hope(item: dict[str, Any]) -> dict[str, Any]:
            return handle_inbox_item(handler(), item)

        @task(outlets=[META_KERNEL_ASSET], trigger_rule=TriggerRule.ALL_DONE, doc_md=META_KERNEL_DOC)
        def meta_kernel() -> dict[str, Any]:
            """A new meta-kernel version when this run archived kernels."""
            ctx = get_current_context()
            cat = connections.catalog()
            if not cat.kernels_archived_in_run(ctx["run_id"]):
                raise AirflowSkipException("no new kernels in this run")
            mk = write_meta_kernel(cat, connections.storage(), settings.kernel_dir, settings.archive_bucket,
                                   ctx["run_id"])
            ctx["outlet_events"][META_KERNEL_ASSET].extra = {"version": mk["version"], "file": mk["file_name"]}
            log.info("meta-kernel %s loads %d kernels", mk["file_name"], len(mk["kernels"]))
            return mk

        @task(doc_md=PLAN_REPROCESSING_DOC)
        def plan_reprocessing() -> list[dict[str, Any]]:
            """Trigger arguments for each instrument whose products better kernels now cover."""
            ctx = get_current_context()
            configs = {inst: running_config(inst) for inst in INSTRUMENTS}
            plans = reprocessing_plan(connections.catalog(), configs, ctx["run_id"])
            for p in plans:
                log.info("%s: reprocess %d L0 file(s) at %s: %s", p["instrument"], len(p["files"]), p["levels"],
                         p["reason"])
            return [{
                "trigger_dag_id": f"emm_{p['instrument']}_reprocess",
                "trigger_run_id": f"{REPROCESSING_RUN_PREFIX}{ctx['run_id']}__{p['instrument']}",
                "conf": {"files": p["files"], "from_level": p["levels"][0], "reason": p["reason"],
                         "campaign": f"spice-refresh {ctx['run_id']}"},
                "note": p["reason"][:1000],
            } for p in plans]

        @task(trigger_rule=TriggerRule.ALL_DONE, doc_md=REPORT_DOC)
        def report() -> dict[str, Any]:
            ctx = run_context()
            rows = connections.catalog().run_deliveries(ctx.dag_id, ctx.dag_run_id)
            waiting = run_waiting(connections.storage(), settings.inbox_bucket, prefix,
                                  ("plan_generic", "plan_hope"), ("handle_generic", "handle_hope"))
            quarantined = [r for r in rows if r["outcome"] == "quarantined"]
            if quarantined:
                operators_notifier(f"[EMM SDC] {len(quarantined)} SPICE kernel(s) quarantined", "\n".join(
                    f"- {r['inbox_key']}: {r['reason_code']}: {r['reason']}" for r in quarantined)).notify(
                    get_current_context())
            return {"archived": sum(r["outcome"] == "archived" for r in rows), "quarantined": len(quarantined),
                    "waiting": waiting}

        generic_items = plan_generic()
        if wait is not None:
            wait >> generic_items
        generic = handle_generic.expand(item=generic_items)
        hope_items = plan_hope()
        generic >> hope_items
        hope = handle_hope.expand(item=hope_items)
        mk = meta_kernel()
        hope >> mk
        plans = plan_reprocessing()
        mk >> plans
        TriggerDagRunOperator.partial(task_id="queue_reprocessing", wait_for_completion=False,
                                      doc_md=QUEUE_REPROCESSING_DOC).expand_kwargs(plans)
        [generic, hope] >> report()
        [generic, hope, mk] >> fail_if_any_failed()

    return spice_refresh()
