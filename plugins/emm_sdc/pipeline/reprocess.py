"""Reprocessing campaigns: ``emm_<inst>_reprocess``, a DAG made for Airflow's own backfill.

Each run covers one day of mission time (daily data intervals from Mars
orbit insertion, 2021-02-09) and remakes the products whose L0 observation
time falls in its interval, in the instrument's **reprocessing lane** (pool
``emm_<inst>_reprocessing``, low priority weight, the Batch runner's
reprocessing job queue), so daily processing keeps its own slots and goes
first. Operators reprocess a range with::

    airflow backfill create --dag-id emm_exi_reprocess --from-date 2021-06-01 --to-date 2021-06-30 \\
        --dag-run-conf '{"reason": "EXI flat field v2"}' --max-active-runs 2

or the UI's Trigger → Backfill form (same fields). Add
``--reprocess-behavior completed`` to re-run days that already have runs.

**It never reprocesses on its own**: the DAG is active so that backfills run,
and its scheduled daily runs are no-ops by design (``plan`` skips them and
everything after it), because new data is the daily lane's job.

Params (form and ``--dag-run-conf``): ``reason`` (required, recorded on every
processing run and the campaign), ``from_level`` (remake that level and
everything made from it; default the whole chain), ``force`` (remake even
when nothing changed), ``dry_run`` (report what would be remade, change
nothing), ``files`` (a manual run: exactly these L0 files instead of the
interval) and ``campaign`` (a name grouping runs into one campaign record).

A job whose input hash (inputs, processor, parameters, calibration, kernels:
see emm_sdc/lifecycle.py) already has a successful run is skipped with
"nothing changed", so a second identical backfill writes nothing; a remade
product's descendants are remade in the same run, because their inputs
changed. Every run records its campaign (``./sdc campaigns``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TriggerRule, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from emm_sdc import connections
from emm_sdc.assets import level_asset, level_inlets
from emm_sdc.core import coverage
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.storage import Storage
from emm_sdc.lanes import lane_args
from emm_sdc.lifecycle import (
    NothingChanged,
    Skipped,
    build_chain,
    downstream_levels,
    plan_job,
    prior_success,
    processing_level_tasks,
    processor_identity,
)
from emm_sdc.pipeline.common import announce_task, dag_callbacks, default_args, fail_if_any_failed
from emm_sdc.pipeline.params import NAME_LIST, list_param, run_params
from emm_sdc.pipeline.process import named_files, plan_units_from, science_l0

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
PLAN_DOC = """\
**What it does**: scheduled runs skip here (by design: reprocess with a backfill or a manual run). Otherwise
selects the science L0 observed in the run's day (or `files`) and opens the campaign records; a dry run logs
what would be remade and stops here.

**If it fails**: "reason is required" or a param error: start the run again with it. "not in the catalog":
check the file names. Catalog unreachable: clear it after the outage.
"""
CLOSE_CAMPAIGN_DOC = """\
**What it does**: counts the jobs this run remade, skipped (nothing changed) and failed, closes its campaign
record and writes the run note. Skipped for scheduled (no-op) runs.

**If it fails**: the catalog or the Airflow API was unreachable: clear it after the outage (it only counts and
records). Failed jobs are the `unit` tasks, not this one.
"""

#: Mars orbit insertion: the first day of mission time a backfill can cover.
MISSION_START = datetime(2021, 2, 9, tzinfo=UTC)
NO_OP = "scheduled runs never reprocess: use a backfill or a manual run (see the DAG's docs)"


def campaign_identity(dag_id: str, run_type: str, run_id: str, conf: dict[str, Any]) -> tuple[str, str]:
    """The campaign a run belongs to, and its kind.

    A named campaign (``campaign`` in the conf) groups whatever runs carry its name; the runs of one
    backfill share its conf, so an unnamed backfill is keyed by its conf; any other run is its own campaign.
    """
    kind = {"backfill": "backfill", "operator_triggered": "triggered"}.get(run_type, "manual")
    if conf.get("campaign"):
        return f"{dag_id}:{conf['campaign']}", kind
    if kind == "backfill":
        digest = hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:12]
        return f"{dag_id}:backfill:{digest}", kind
    return f"{dag_id}:{run_id}", kind


def select_interval(
    cat: Catalog, cfg: ItfConfig, params: dict[str, Any], start: datetime | None, end: datetime | None
) -> list[dict[str, Any]]:
    """The science L0 rows a run reprocesses: ``files`` if given, else those observed in [start, end)."""
    names = list_param(params, "files")
    if names:
        return science_l0(cfg, named_files(cat, names, "files: "))
    if start is None or end is None:
        raise AirflowFailException("this run has no data interval; give files, or use a backfill")
    return science_l0(cfg, cat.science_l0_between(cfg.instrument, start, end))


def dry_run_report(
    cat: Catalog,
    storage: Storage,
    cfg: ItfConfig,
    units: list[dict[str, Any]],
    levels: list[str],
    *,
    dag_id: str,
    run_id: str,
) -> list[dict[str, Any]]:
    """What a run would remake, job by job, without staging or recording anything.

    A level is remade when its hash is new (or ``force``); a level made from a level that would be
    remade is remade too (its inputs will be new files).
    """
    report = []
    for unit in units:
        remade: set[str] = set()
        for step in cfg.processing.chain:
            if step.level not in levels:
                continue
            if any(src in remade for src in step.inputs):
                action, why = "remake", "made from a level this run remakes"
            else:
                try:
                    spec, _doc = plan_job(cat, storage, cfg, step, unit, dag_id=dag_id, run_id=run_id)
                except Skipped as exc:
                    action = "skip" if isinstance(exc, NothingChanged) else "nothing"
                    report.append({"unit": unit["unit"], "level": step.level, "action": action, "why": str(exc)})
                    continue
                same = None if unit.get("force") else prior_success(cat, spec)
                action = "skip" if same else "remake"
                why = (
                    f"nothing changed since processing run {same['id']}"
                    if same
                    else "forced"
                    if unit.get("force")
                    else "new input hash (inputs, processor, parameters, calibration or kernels changed)"
                )
            if action == "remake":
                remade.add(step.level)
            report.append({"unit": unit["unit"], "level": step.level, "action": action, "why": why})
    return report


def run_note(run: dict[str, Any], summary: dict[str, Any]) -> str:
    """The DAG run's note: its campaign and what it did (Markdown, as the UI shows notes)."""
    head = f"**{run['campaign_key']}**: {run['reason']}"
    if summary.get("dry_run"):
        actions: dict[str, int] = {}
        for p in summary["planned"]:
            actions[p["action"]] = actions.get(p["action"], 0) + 1
        return head + "\n\nDRY RUN, nothing written: would " + ", ".join(f"{k} {v}" for k, v in sorted(actions.items()))
    return (head + f"\n\n{summary['inputs']} L0 file(s): remade {summary['remade']}, skipped {summary['skipped']} "
            f"(nothing changed), failed {summary['failed']} job(s). `./sdc campaigns` has the whole campaign.")


def build_reprocess_dag(cfg: ItfConfig) -> DAG:
    """``emm_<inst>_reprocess``: backfillable reprocessing of one instrument, in its reprocessing lane."""
    inst = cfg.instrument
    chain = cfg.processing.chain
    levels = [s.level for s in chain]

    @dag(
        dag_id=f"emm_{inst}_reprocess",
        schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
        start_date=MISSION_START,
        catchup=False,
        is_paused_upon_creation=False,
        max_active_runs=cfg.airflow.reprocess_max_active_runs,
        max_active_tasks=cfg.airflow.max_active_tasks,
        default_args={**default_args(cfg, "reprocessing"), **lane_args(cfg, "reprocessing")},  # every task
        **dag_callbacks(cfg.notifications, "reprocessing"),
        tags=["emm", inst, "reprocessing"],
        doc_md=__doc__,
        params={
            # Required by design: the form refuses to trigger while it is empty, and plan() fails a run
            # without one (a scheduled DAG's params need valid defaults, so the default is "").
            "reason": Param(
                "",
                type="string",
                title="Reason (required)",
                description="why these products are remade; required: the Trigger and Backfill forms need it "
                "and a run without one fails (recorded on the campaign and every processing run)",
            ),
            "from_level": Param(
                None,
                type=["null", "string"],
                enum=[None, *levels],
                title="From level",
                description="remake this level and everything made from it (empty: the whole chain)",
            ),
            "force": Param(
                False,
                type="boolean",
                title="Force",
                description="remake even jobs whose inputs, processor, parameters, calibration and "
                "kernels are unchanged",
            ),
            "dry_run": Param(
                False, type="boolean", title="Dry run", description="report what would be remade; change nothing"
            ),
            "files": Param(
                None,
                **NAME_LIST,
                title="L0 files",
                description="manual runs: reprocess exactly these L0 files (one per line) instead of the "
                "data interval; empty: the run's data interval",
            ),
            "campaign": Param(
                None,
                type=["null", "string"],
                title="Campaign name",
                description="group runs under one campaign record (default: one per backfill)",
            ),
        },
    )
    def reprocess() -> None:
        @task(doc_md=PLAN_DOC)
        def plan() -> list[dict[str, Any]]:
            """Select the interval's L0, open the campaign record; a dry run reports and stops here."""
            ctx = get_current_context()
            dag_run = ctx["dag_run"]
            run_type = str(getattr(dag_run.run_type, "value", dag_run.run_type))
            if run_type == "scheduled":
                raise AirflowSkipException(NO_OP)
            params = run_params(ctx)
            reason = str(params.get("reason") or "").strip()
            if not reason:
                raise AirflowFailException(
                    "reason is required: say why these products are remade, e.g. "
                    '--dag-run-conf \'{"reason": "EXI flat field v2"}\''
                )
            wanted = downstream_levels(chain, params.get("from_level"))
            start, end = ctx.get("data_interval_start"), ctx.get("data_interval_end")
            cat, storage = connections.catalog(), connections.storage()
            rows = select_interval(cat, cfg, params, None if list_param(params, "files") else start, end)
            units = plan_units_from(cfg, rows, coverage.by_class(cat.hope_coverage()))
            dag_id, run_id = ctx["dag"].dag_id, ctx["run_id"]
            key, kind = campaign_identity(dag_id, run_type, run_id, dict(dag_run.conf or {}))
            force, dry = bool(params.get("force")), bool(params.get("dry_run"))
            cal_steps = sorted(
                {str(s.calibration) for s in chain if getattr(s, "calibration", None) is not None and s.level in wanted}
            )
            campaign_id = cat.upsert_campaign(
                campaign_key=key,
                instrument_id=inst,
                dag_id=dag_id,
                kind=kind,
                requested_by=getattr(dag_run, "triggering_user_name", None),
                reason=reason,
                levels=json.dumps(wanted),
                force=force,
                dry_run=dry,
                image=cfg.processing.runner.image if cfg.processing.runner.kind != "local" else None,
                processor=processor_identity(cfg),
                calibration=",".join(cal_steps) or None,
            )
            campaign_run_id = cat.open_campaign_run(
                campaign_id=campaign_id,
                dag_id=dag_id,
                dag_run_id=run_id,
                clear_number=int(getattr(dag_run, "clear_number", 0) or 0),
                interval_start=start,
                interval_end=end,
                inputs=len(rows),
            )
            units = [
                {
                    **u,
                    "lane": "reprocessing",
                    "reprocess": True,
                    "force": force,
                    "levels": wanted,
                    "reason": f"{reason} [campaign {key}]",
                    "campaign_run_id": campaign_run_id,
                }
                for u in units
            ]
            log.info(
                "campaign %s (%s): %d L0 file(s) in %d unit(s), levels %s%s%s",
                key,
                kind,
                len(rows),
                len(units),
                wanted,
                ", forced" if force else "",
                ", DRY RUN" if dry else "",
            )
            if dry:
                report = dry_run_report(cat, storage, cfg, units, wanted, dag_id=dag_id, run_id=run_id)
                for line in report:
                    log.info("would %s %s %s: %s", line["action"], line["unit"], line["level"], line["why"])
                cat.close_campaign_run(campaign_run_id, status="success", inputs=len(rows), remade=0, skipped=0,
                                       failed=0, planned=json.dumps(report))
                return []
            return units

        @task_group(group_id="unit")
        def unit_chain(unit: dict[str, Any]) -> None:
            build_chain(
                chain,
                unit,
                cfg.processing.runner,
                lambda step: processing_level_tasks(cfg, step),
                lane_args(cfg, "reprocessing"),
            )

        @task(trigger_rule=TriggerRule.ALL_DONE, retries=2, doc_md=CLOSE_CAMPAIGN_DOC)
        def close_campaign() -> dict[str, Any]:
            """Count what the run remade, skipped and failed; close its campaign record."""
            ctx = get_current_context()
            cat = connections.catalog()
            run = cat.campaign_run_of_dag_run(ctx["dag"].dag_id, ctx["run_id"])
            if run is None:
                raise AirflowSkipException(NO_OP)
            if run["planned"] is not None:  # a dry run: closed by plan
                summary = {"dry_run": True, "planned": run["planned"]}
                connections.set_run_note(ctx["dag"].dag_id, ctx["run_id"], run_note(run, summary))
                return summary
            counts = cat.job_counts_of_campaign_run(run["id"])
            inputs = run["inputs"]
            status = "failed" if counts["failed"] else "success"
            cat.close_campaign_run(run["id"], status=status, inputs=inputs, planned=None, **counts)
            summary = {"campaign_run": run["id"], "status": status, "inputs": inputs, **counts}
            log.info("campaign run %s: %s", run["id"], summary)
            connections.set_run_note(ctx["dag"].dag_id, ctx["run_id"], run_note(run, summary))
            return summary

        units = plan()
        groups = unit_chain.expand(unit=units)
        closed = close_campaign()
        groups >> closed
        groups >> [announce_task(level_asset(inst, step.level), step.level, "products",
                                 inlets=level_inlets(inst, step)) for step in chain]
        [groups, closed] >> fail_if_any_failed()

    return reprocess()
