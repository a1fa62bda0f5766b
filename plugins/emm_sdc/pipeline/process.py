"""Processing: new L0 becomes Quicklook, L1 and L2 products through the ITF's processor.

DAG ``emm_<inst>_process`` runs when the instrument's L0 Asset gets an event
(the files are in the event's ``extra``). Run by hand, its params pick the
inputs (file names, orbits or a date range); with none, it processes every
archived L0 file that has no product yet.

Work is grouped into units (per orbit, day or file, from the YAML). Each unit
is one instance of a mapped task group in which every chain level has three
tasks: ``prepare`` (resolve inputs from the catalog, stage them, open a
processing-run record), ``run`` (the ITF processor through the configured
runner) and ``collect`` (validate outputs, checksum, upload, and index
products with lineage in one transaction); see emm_sdc/lifecycle.py. A level
whose products already exist is skipped, so re-runs change nothing. Every
chain task runs in the instrument's daily lane (pool ``emm_<inst>_daily``, high
priority); remaking existing products is the job of ``emm_<inst>_reprocess``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException

from emm_sdc import connections
from emm_sdc.alerts import processing_deadline
from emm_sdc.assets import level_asset, level_inlets
from emm_sdc.core import coverage
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.product_writes import STALE_AFTER, sweep_stale_runs
from emm_sdc.lanes import lane_args
from emm_sdc.lifecycle import build_chain, processing_level_tasks
from emm_sdc.pipeline.common import START_DATE, announce_task, dag_callbacks, default_args, fail_if_any_failed
from emm_sdc.pipeline.params import (
    NAME_LIST,
    ORBIT_LIST,
    day_param,
    list_param,
    orbits_param,
    pick_list,
    run_params,
    text_param,
)

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
PLAN_UNITS_DOC = """\
**What it does**: picks the inputs and groups them into work units: the L0 files of the triggering asset event;
by hand `files`, else `orbits`, else `start_date`..`end_date`, else every archived L0 without products. Each
unit (orbit/day/file, and kernel class) becomes one instance of the `unit` task group.

**If it fails**: a param error or "not in the catalog" is named in the log: trigger a new run with corrected
params. Catalog unreachable: clear this task once it answers.
"""
SWEEP_RUNS_DOC = """\
**What it does**: once every unit is done, closes as failed any processing run of this DAG run still `running`
(its worker was killed, or the catalog was down when it failed) and removes the objects it reserved.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage (the hourly
`emm_processing_sweep` also catches what it leaves).
"""


def _unit_key(cfg: ItfConfig, row: dict[str, Any]) -> str:
    if cfg.processing.group_by == "orbit":
        return f"orbit-{row['orbit_number']:04d}"
    if cfg.processing.group_by == "day":
        return f"day-{row['timetag']:%Y%m%d}"
    return f"file-{row['file_root']}"


def named_files(cat: Catalog, names: list[str], what: str = "") -> list[dict[str, Any]]:
    """The catalog rows of the given file names; fails the task naming any that are not indexed."""
    rows = list(cat.files(names).values())
    unknown = sorted(set(names) - {r["file_name"] for r in rows})
    if unknown:
        raise AirflowFailException(f"{what}not in the catalog: {unknown}")
    return rows


def science_l0(cfg: ItfConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows that are this instrument's science L0 (what its chain starts from)."""
    return [r for r in rows if r["instrument_id"] == cfg.instrument and r["data_level"] == "l0"
            and cfg.classify(r["file_name"]) == "science"]


def select_inputs(cat: Catalog, cfg: ItfConfig, params: Mapping[str, Any], event_files: list[str]) -> list[dict]:
    """Science L0 rows to process: from asset events, else params, else everything pending.

    Params left empty (``None``, ``[]``, ``""``: the Trigger form's defaults) select nothing, so a
    manual run with the defaults processes every archived L0 file that has no product yet. A file,
    orbit or date that does not parse fails the task naming the param.
    """
    inst = cfg.instrument
    names = event_files or list_param(params, "files")
    orbits = orbits_param(params)
    start_day, end_day = day_param(params, "start_date"), day_param(params, "end_date")
    if end_day and not start_day:
        raise AirflowFailException("param end_date needs start_date (the first observation day)")
    if names:
        rows = named_files(cat, names)
    elif orbits:
        rows = cat.science_l0_of_orbits(inst, orbits)
    elif start_day:
        start, end = start_day, (end_day or start_day) + timedelta(days=1)
        rows = cat.science_l0_between(inst, start, end)
    else:
        first = cfg.processing.chain[0].level
        rows = cat.unprocessed_inputs(inst, "l0", first)
    return science_l0(cfg, rows)


def plan_units_from(cfg: ItfConfig, rows: list[dict[str, Any]],
                    hope_coverage: dict[str, list[coverage.Span]] | None = None) -> list[dict[str, Any]]:
    """Work units: inputs grouped per orbit/day/file and, when the chain uses SPICE, per kernel class.

    The class is the best one whose Hope SPK covers the input's time, so every
    product of a unit can carry the same kernel letter.
    """
    uses_spice = any(s.uses_spice for s in cfg.processing.chain)
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        cls = coverage.best_class_at(hope_coverage or {}, row["timetag"]) if uses_spice else "n"
        groups[(_unit_key(cfg, row), cls)].append(row["file_name"])
    return [{"unit": key if cls == "n" else f"{key}-{cls}", "inputs": sorted(files), "kernel_class": cls}
            for (key, cls), files in sorted(groups.items())]


@task(trigger_rule=TriggerRule.ALL_DONE, retries=2, doc_md=SWEEP_RUNS_DOC)
def sweep_runs() -> list[dict[str, Any]]:
    """After every unit finished: a run of this DAG run still 'running' lost its task (killed worker,
    catalog down when the failure was recorded, clean-up failed). Close it and remove what it left."""
    ctx = get_current_context()
    swept = sweep_stale_runs(connections.catalog(), connections.storage(), dag_id=ctx["dag"].dag_id,
                             dag_run_id=ctx["run_id"], older_than=datetime.now(UTC) - STALE_AFTER,
                             reason=f"its task ended without closing it (swept by {ctx['run_id']})")
    return swept


def process_params(levels: list[str]) -> dict[str, Param]:
    """The Params of ``emm_<inst>_process``: every one optional, so the form triggers with its defaults."""
    return {
        "files": Param(None, **NAME_LIST, title="L0 files",
                       description="L0 file names to process, one per line (empty: use orbits, dates or "
                                   "everything pending)"),
        "orbits": Param(None, **ORBIT_LIST, title="Orbits",
                        description="orbit numbers to process, one per line; used when files is empty"),
        "start_date": Param(None, type=["null", "string"], format="date", title="Start date",
                            description="first observation day (YYYY-MM-DD); used when files and orbits are empty"),
        "end_date": Param(None, type=["null", "string"], format="date", title="End date",
                          description="last observation day (YYYY-MM-DD); empty: start_date only"),
        "levels": pick_list(levels, title="Levels", description="levels to make (empty: the whole chain)"),
        "reason": Param(None, type=["null", "string"], title="Reason",
                        description="why this run was started (optional; recorded on its processing runs)"),
    }


def build_process_dag(cfg: ItfConfig) -> DAG:
    """The processing DAG of one instrument, from its validated ITF config."""
    inst = cfg.instrument
    chain = cfg.processing.chain
    levels = [s.level for s in chain]

    @dag(
        dag_id=f"emm_{inst}_process",
        schedule=[level_asset(inst, "l0")],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=cfg.airflow.max_active_runs,
        max_active_tasks=cfg.airflow.max_active_tasks,
        default_args={**default_args(cfg, "processing"), **lane_args(cfg, "daily")},  # every task in the lane
        deadline=processing_deadline(cfg, "processing"),
        **dag_callbacks(cfg.notifications, "processing"),
        tags=["emm", inst, "processing"],
        doc_md=__doc__,
        params=process_params(levels),
    )
    def process() -> None:
        @task(doc_md=PLAN_UNITS_DOC)
        def plan_units() -> list[dict[str, Any]]:
            """Group the inputs into work units (orbit/day/file)."""
            ctx = get_current_context()
            event_files: list[str] = []
            for events in (ctx.get("triggering_asset_events") or {}).values():
                for ev in events:
                    event_files += list((ev.extra or {}).get("files", []))
            cat = connections.catalog()
            params = run_params(ctx)
            rows = select_inputs(cat, cfg, params, event_files)
            units = plan_units_from(cfg, rows, coverage.by_class(cat.hope_coverage()))
            log.info("%d input file(s) in %d unit(s): %s", len(rows), len(units), [u["unit"] for u in units])
            return [{**u, "lane": "daily", "reason": text_param(params, "reason")} for u in units]

        @task_group(group_id="unit")
        def unit_chain(unit: dict[str, Any]) -> None:
            build_chain(chain, unit, cfg.processing.runner, lambda step: processing_level_tasks(cfg, step),
                        lane_args(cfg, "daily"))

        groups = unit_chain.expand(unit=plan_units())
        groups >> [announce_task(level_asset(inst, step.level), step.level, "products",
                                 inlets=level_inlets(inst, step)) for step in chain]
        swept = sweep_runs()
        groups >> swept
        [groups, swept] >> fail_if_any_failed()

    return process()

