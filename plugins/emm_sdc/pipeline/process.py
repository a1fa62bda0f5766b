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
products with lineage in one transaction). A level whose products already
exist is skipped, so re-runs change nothing unless ``reprocess`` is set.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Param, TaskGroup, TriggerRule, dag, get_current_context, task, task_group
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from emm_sdc import connections
from emm_sdc.assets import level_asset
from emm_sdc.core import coverage
from emm_sdc.core.catalog import Catalog, file_record
from emm_sdc.core.checksums import md5_file
from emm_sdc.core.config import CONFIG_FILES, ChainStep, ItfConfig
from emm_sdc.core.images import ImageNotPromoted, require_promoted
from emm_sdc.core.jobs import JobInput, JobSpec, OutputError, collect_outputs, safe_id
from emm_sdc.core.product_writes import STALE_AFTER, KeyReserved, PlannedObject, ProductWriter, sweep_stale_runs
from emm_sdc.core.refresh import sync_kernel_dir
from emm_sdc.core.settings import get_settings
from emm_sdc.core.storage import Storage
from emm_sdc.pipeline.common import START_DATE, announce_task, dag_callbacks, default_args, fail_if_any_failed
from emm_sdc.runners import run_task
from emm_sdc.runners.batch import fetch_outputs, stage_inputs
from emm_sdc.runs import archive_log, fail_run

log = logging.getLogger(__name__)


def _unit_key(cfg: ItfConfig, row: dict[str, Any]) -> str:
    if cfg.processing.group_by == "orbit":
        return f"orbit-{row['orbit_number']:04d}"
    if cfg.processing.group_by == "day":
        return f"day-{row['timetag']:%Y%m%d}"
    return f"file-{row['file_root']}"


def select_inputs(cat: Catalog, cfg: ItfConfig, params: dict[str, Any], event_files: list[str]) -> list[dict]:
    """Science L0 rows to process: from asset events, else params, else everything pending."""
    inst = cfg.instrument
    names = event_files or list(params.get("files") or [])
    if names:
        rows = list(cat.files(names).values())
        unknown = sorted(set(names) - {r["file_name"] for r in rows})
        if unknown:
            raise AirflowFailException(f"not in the catalog: {unknown}")
    elif params.get("orbits"):
        rows = cat.query("science_l0_by_orbit", {"instrument_id": inst, "orbits": list(params["orbits"])})
    elif params.get("start_date"):
        start = date.fromisoformat(params["start_date"])
        end = date.fromisoformat(params.get("end_date") or params["start_date"]) + timedelta(days=1)
        rows = cat.query("science_l0_by_time", {"instrument_id": inst, "start": start, "end": end})
    else:
        first = cfg.processing.chain[0].level
        rows = cat.query("unprocessed_inputs",
                         {"instrument_id": inst, "input_level": "l0", "target_level": first})
    return [r for r in rows if r["instrument_id"] == inst and r["data_level"] == "l0"
            and cfg.classify(r["file_name"]) == "science"]


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


def latest_per_root(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest version (highest absolute version) of each file root among ``rows``."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["file_root"] not in best or r["absolute_version"] > best[r["file_root"]]["absolute_version"]:
            best[r["file_root"]] = r
    return sorted(best.values(), key=lambda r: r["file_name"])


def prepare_job(
    cat: Catalog, storage: Storage, cfg: ItfConfig, step: ChainStep, unit: dict[str, Any], *,
    dag_id: str, run_id: str, task_id: str, map_index: int, reprocess: bool, reason: str | None,
) -> JobSpec | None:
    """Resolve, stage and register one job; None when its products already exist."""
    settings = get_settings()
    runner = cfg.processing.runner
    image = runner.image if runner.kind in ("docker", "batch") else None
    if image is not None:
        try:
            require_promoted(cat, cfg.instrument, image, CONFIG_FILES[cfg.instrument])
        except ImageNotPromoted as exc:
            raise AirflowFailException(str(exc)) from None
    roots = list(cat.files(unit["inputs"]).values())
    root_ids = [r["id"] for r in roots]
    sources: list[dict[str, Any]] = []
    for src in step.inputs:
        if src == "l0":
            sources += roots
        else:
            found = cat.query("descendants_at_level", {"root_ids": root_ids, "data_level": src})
            sources += latest_per_root(found)
    if not sources:
        log.info("no %s inputs for %s", step.inputs, unit["unit"])
        return None
    version = cfg.processing.product_version
    children = cat.query("children_at_level", {"input_ids": [s["id"] for s in sources], "data_level": step.level})
    covered = {c["input_id"] for c in children if c["version"] == version}
    if not reprocess:
        sources = [s for s in sources if s["id"] not in covered]
        if not sources:
            log.info("%s %s: every input already has a v%02d product; skipping", unit["unit"], step.level, version)
            return None
    # A new revision whenever this unit already has products of the level at this version, so a
    # product never reuses an indexed name (its file root is only known once the processor ran).
    # Every version of the inputs' roots counts: a corrected L0 (v01-01) makes the same products as the one
    # it corrects, so its products need a revision after theirs (the unique index on file root + version
    # refuses a reused one).
    all_versions = [r["id"] for r in cat.query("versions_of_roots", {"ids": root_ids})]
    existing = cat.query("descendants_at_level", {"root_ids": all_versions, "data_level": step.level})
    used = [e["revision"] for e in existing if e["version"] == version]
    revision = max(used) + 1 if used else 0

    meta_kernel = current_meta_kernel(cat, storage) if step.uses_spice else None
    job_id = safe_id(f"{dag_id}__{run_id}__{unit['unit']}__{step.level}")
    workdir = settings.work_dir / safe_id(dag_id) / safe_id(run_id) / unit["unit"] / step.level
    if workdir.exists():
        shutil.rmtree(workdir)
    spec = JobSpec(
        job_id=job_id, instrument=cfg.instrument, level=step.level, work_unit=unit["unit"],
        workdir=str(workdir), version=version, revision=revision,
        kernel_class=unit.get("kernel_class", "n") if step.uses_spice else "n",
        meta_kernel=meta_kernel["path"] if meta_kernel else None,
        meta_kernel_id=meta_kernel["id"] if meta_kernel else None,
        inputs=[JobInput(s["file_name"], s["s3_key"], s["md5checksum"].strip(), s["data_level"]) for s in sources],
        environment=settings.environment, parameters=dict(step.parameters), reason=reason,
        runner=runner.kind, image=image, lane="reprocessing" if reprocess else "daily",
    )
    for inp in spec.inputs:
        path = spec.input_dir / inp.file_name
        storage.download(settings.archive_bucket, inp.s3_key, path)
        if md5_file(path) != inp.md5:
            raise AirflowFailException(f"staged copy of {inp.file_name} does not match its catalogued MD5")
    open_job(cat, storage, cfg, spec, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index)
    return spec


def open_job(cat: Catalog, storage: Storage, cfg: ItfConfig, spec: JobSpec, *, dag_id: str, run_id: str,
             task_id: str, map_index: int) -> None:
    """Open the job's processing-run record and write its manifest (and, for batch, stage it in S3)."""
    spec.processing_run_id = cat.start_run(
        dag_id=dag_id, dag_run_id=run_id, task_id=task_id, map_index=map_index, try_number=1,
        instrument_id=spec.instrument, data_level=spec.level, work_unit=spec.work_unit, runner=spec.runner,
        processor_name=cfg.processing.processor.name, processor_version=cfg.processing.processor.version,
        image=spec.image, environment=spec.environment,
        meta_kernel=Path(spec.meta_kernel).name if spec.meta_kernel else None, reason=spec.reason,
        started_at=datetime.now(UTC),
    )
    if spec.meta_kernel_id is not None:
        cat.query("set_run_meta_kernel", {"run_id": spec.processing_run_id, "meta_kernel_id": spec.meta_kernel_id})
    spec.write_manifest()
    if spec.runner == "batch":
        spec.s3_prefix = stage_inputs(storage, spec, get_settings().archive_bucket)


def current_meta_kernel(cat: Catalog, storage: Storage) -> dict[str, Any] | None:
    """The newest meta-kernel, present in the kernel directory (fetched from the archive if not)."""
    rows = cat.query("latest_meta_kernel")
    if not rows:
        return None
    path = sync_kernel_dir(storage, get_settings().archive_bucket, get_settings().kernel_dir, rows[0])
    return {"id": rows[0]["id"], "path": str(path), "file_name": rows[0]["file_name"]}


def check_kernel_letters(cat: Catalog, spec: JobSpec, products: list[Any]) -> None:
    """A product's kernel letter must be a class whose Hope SPK covers the product's time."""
    if spec.kernel_class == "n":
        return
    spans = coverage.by_class(cat.query("hope_coverage")).get(spec.kernel_class, [])
    bad = [p.name.file_name for p in products if not any(s <= p.name.start <= e for s, e in spans)]
    if bad:
        raise OutputError(spec.job_id, [f"{n}: kernel class {spec.kernel_class!r} in its name, but no "
                                        f"{spec.kernel_class!r} Hope kernel covers its time" for n in bad])


def product_geometry(cat: Catalog, storage: Storage, spec: JobSpec, times: list[datetime]) -> list[dict[str, Any]]:
    """EMM API geometry fields at each product's time (empty without kernels)."""
    mk = spec.meta_kernel or (current_meta_kernel(cat, storage) or {}).get("path")
    if not mk:
        return [{} for _ in times]
    from emm_sdc.core.geometry import compute_geometry

    return compute_geometry(mk, times)


def collect_job(cat: Catalog, storage: Storage, spec: JobSpec) -> list[str]:
    """Validate, upload and index a finished job's products: all or nothing (core/product_writes.py)."""
    bucket = get_settings().archive_bucket
    assert spec.processing_run_id is not None
    writer = ProductWriter(cat, storage, bucket, spec.processing_run_id)
    if writer.committed():  # an earlier attempt indexed them (perhaps without seeing the acknowledgement)
        return [r["file_name"] for r in cat.query("products_of_run_id", {"run_id": spec.processing_run_id})]
    try:
        if spec.runner == "batch":
            fetch_outputs(storage, spec)
        products, processor = collect_outputs(spec)
        taken = cat.files([p.name.file_name for p in products])
        if taken:
            raise OutputError(spec.job_id, [f"{n}: already indexed; products are never overwritten" for n in taken])
    except OutputError as exc:
        fail_run(cat, storage, spec, 0, str(exc))
        raise AirflowFailException(str(exc)) from None
    planned = [PlannedObject(p.path, p.name.archive_key, p.md5) for p in products]
    try:
        writer.reserve(planned)
        for obj in planned:
            writer.upload(obj)
        log_uri = archive_log(storage, spec)
        check_kernel_letters(cat, spec, products)
        geometry = product_geometry(cat, storage, spec, [p.name.start for p in products])
        records = [(file_record(p.name, size=p.size, md5=p.md5, bucket=bucket, geometry=g,
                                meta_kernel_id=spec.meta_kernel_id), p.inputs) for p, g in zip(products, geometry,
                                                                                                strict=True)]
        if processor.get("name") and processor.get("version"):  # what actually ran, as the processor says
            cat.query("set_run_processor", {"run_id": spec.processing_run_id,
                                            "processor_name": str(processor["name"]),
                                            "processor_version": str(processor["version"])})
        writer.commit(records, ended_at=datetime.now(UTC), log_uri=log_uri)
    except Exception as exc:
        _abandon(cat, storage, spec, writer, exc)
        if isinstance(exc, KeyReserved | OutputError):
            raise AirflowFailException(str(exc)) from None
        raise
    log.info("indexed %d %s product(s) from %s (processor %s)", len(products), spec.level,
             spec.work_unit, processor)
    return [p.name.file_name for p in products]


def _abandon(cat: Catalog, storage: Storage, spec: JobSpec, writer: ProductWriter, exc: BaseException) -> None:
    """After a failure before commit: remove only this run's uncommitted objects and record the failure.

    When the catalog cannot say whether the commit happened, or the clean-up itself fails, everything
    stays as it is for the retry or the sweeper (which decide from the catalog).
    """
    try:
        if writer.committed():
            return
        removed = writer.abandon()
        fail_run(cat, storage, spec, 0, f"indexing failed: {exc}" + (f"; removed {removed}" if removed else ""))
    except Exception as cleanup:
        log.error("clean-up after the failure of run %s failed too (%s); the sweeper finishes it",
                  spec.processing_run_id, cleanup)


def _chain_group(cfg: ItfConfig, step: ChainStep) -> tuple[Any, Any]:
    """The prepare and collect tasks of one level (the runner's task goes between them)."""

    @task(task_id="prepare", trigger_rule=TriggerRule.NONE_FAILED)
    def prepare(unit: dict[str, Any]) -> dict[str, Any]:
        ctx = get_current_context()
        params = ctx["params"]
        if params.get("levels") and step.level not in params["levels"]:
            raise AirflowSkipException(f"{step.level} not among the requested levels {params['levels']}")
        spec = prepare_job(
            connections.catalog(), connections.storage(), cfg, step, unit,
            dag_id=ctx["dag"].dag_id, run_id=ctx["run_id"], task_id=ctx["ti"].task_id,
            map_index=ctx["ti"].map_index, reprocess=bool(params.get("reprocess")),
            reason=params.get("reason") or None,
        )
        if spec is None:
            raise AirflowSkipException(f"nothing to make at {step.level} for {unit['unit']}")
        return spec.to_dict()

    @task(task_id="collect")
    def collect(job: dict[str, Any], result: dict[str, Any]) -> list[str]:
        spec = JobSpec.from_dict(job)
        names = collect_job(connections.catalog(), connections.storage(), spec)
        shutil.rmtree(spec.workdir, ignore_errors=True)
        return names

    return prepare, collect


@task(trigger_rule=TriggerRule.ALL_DONE, retries=2)
def sweep_runs() -> list[dict[str, Any]]:
    """After every unit finished: a run of this DAG run still 'running' lost its task (killed worker,
    catalog down when the failure was recorded, clean-up failed). Close it and remove what it left."""
    ctx = get_current_context()
    swept = sweep_stale_runs(connections.catalog(), connections.storage(), dag_id=ctx["dag"].dag_id,
                             dag_run_id=ctx["run_id"], older_than=datetime.now(UTC) - STALE_AFTER,
                             reason=f"its task ended without closing it (swept by {ctx['run_id']})")
    return swept


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
        default_args=default_args(cfg, "processing"),
        **dag_callbacks(cfg.notifications, "processing"),
        tags=["emm", inst, "processing"],
        doc_md=__doc__,
        params={
            "files": Param([], type="array", items={"type": "string"},
                           description="L0 file names to process (manual runs)"),
            "orbits": Param([], type="array", items={"type": "integer"}, description="orbits to process"),
            "start_date": Param(None, type=["null", "string"], format="date",
                                description="first observation day (YYYY-MM-DD)"),
            "end_date": Param(None, type=["null", "string"], format="date",
                              description="last observation day (YYYY-MM-DD); defaults to start_date"),
            "levels": Param([], type="array", items={"type": "string", "enum": levels},
                            description="levels to make (default: the whole chain)"),
            "reprocess": Param(False, type="boolean",
                               description="make a new revision even where products exist"),
            "reason": Param("", type="string", description="why this run was started (recorded)"),
        },
    )
    def process() -> None:
        @task
        def plan_units() -> list[dict[str, Any]]:
            """Group the inputs into work units (orbit/day/file)."""
            ctx = get_current_context()
            event_files: list[str] = []
            for events in (ctx.get("triggering_asset_events") or {}).values():
                for ev in events:
                    event_files += list((ev.extra or {}).get("files", []))
            cat = connections.catalog()
            rows = select_inputs(cat, cfg, dict(ctx["params"]), event_files)
            units = plan_units_from(cfg, rows, coverage.by_class(cat.query("hope_coverage")))
            log.info("%d input file(s) in %d unit(s): %s", len(rows), len(units), [u["unit"] for u in units])
            return units

        @task_group(group_id="unit")
        def unit_chain(unit: dict[str, Any]) -> None:
            done: dict[str, Any] = {}
            for step in chain:
                with TaskGroup(group_id=step.level):
                    prepare, collect = _chain_group(cfg, step)
                    job = prepare(unit)
                    finished = collect(job, run_task(cfg.processing.runner, job))
                for src in step.inputs:
                    if src in done:
                        done[src] >> job
                done[step.level] = finished

        groups = unit_chain.expand(unit=plan_units())
        groups >> [announce_task(level_asset(inst, lvl), lvl, "products_of_run", "products") for lvl in levels]
        swept = sweep_runs()
        groups >> swept
        [groups, swept] >> fail_if_any_failed()

    return process()

