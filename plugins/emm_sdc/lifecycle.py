"""The job lifecycle: prepare, run, collect — one module for processing, reprocessing and staging checks.

A job is one work unit at one chain level. ``prepare`` resolves its inputs
from the catalog, computes its **input hash** and either skips it ("nothing
changed": an identical job already succeeded) or stages it and opens its
processing-run record; the runner's task runs the ITF processor; ``collect``
validates, uploads and indexes the products with lineage in one transaction
(core/product_writes.py) or records why not. :func:`build_chain` lays out
those three tasks for every level of a chain, wired by the levels' inputs,
for whichever DAG uses them.

The input hash (sha256 of a canonical JSON document kept on the run as
``hash_inputs``) covers the inputs' names and MD5s, the processor identity
(image digest for containers, the YAML's processor version and the command's
script bytes for local runs), the chain step's parameters, the product
version and kernel class, the calibration set and the meta-kernel's kernel
set. The catalog's partial unique index allows one successful unforced run
per hash, so two identical jobs at once cannot both index a revision; the
later one is closed as ``skipped``. A remade input has a new name (its
revision), so everything made from it hashes differently and is remade too:
the cascade needs no special case.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.sdk import TaskGroup, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from emm_sdc.core import coverage
from emm_sdc.core.catalog import Catalog, CatalogError, file_record
from emm_sdc.core.checksums import md5_file
from emm_sdc.core.config import CONFIG_FILES, ChainStep, ItfConfig, RunnerConfig
from emm_sdc.core.images import ImageNotPromoted, require_promoted
from emm_sdc.core.jobs import (
    MAX_LOG_BYTES,
    JobInput,
    JobSpec,
    OutputError,
    collect_outputs,
    output_entries,
    read_output,
    safe_id,
)
from emm_sdc.core.product_writes import KeyReserved, PlannedObject, ProductWriter
from emm_sdc.core.refresh import sync_kernel_dir
from emm_sdc.core.settings import get_settings, project_root
from emm_sdc.core.storage import LOG_ROOT, Storage
from emm_sdc.lanes import yield_cpu, yield_to_daily_work

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
PREPARE_DOC = """\
**What it does**: stages this unit's {level} job: resolves its inputs from the catalog and hashes the job
(inputs, processor, parameters, calibration, kernels). **Skipped** = nothing changed since a successful run,
no inputs, or {level} is not among the run's `levels`. Otherwise downloads the inputs, opens a processing run.

**If it fails**: S3 or the catalog was unreachable: clear it after the outage. "not the production image":
promote the image (`emm_image_promote`) or fix the YAML's image, then clear. Missing calibration or kernels:
deliver them, then clear.
"""
COLLECT_DOC = """\
**What it does**: checks the {level} outputs against the ITF contract (names, output manifest, and each product's
content: FITS that astropy verifies with CHECKSUM/DATASUM in every HDU, intact gzip, PNGs that decode), uploads
them with verified checksums and indexes the products and their lineage in one transaction (all or nothing).

**If it fails**: outputs breaking the contract are named in the log and the run's message (file: rule: what is
wrong); nothing of the job is indexed: the ITF fixes its processor. S3 or the
catalog was unreachable: wait for the outage to end. Then clear this level's `prepare` with *Downstream* (the
job's work directory is removed when collect ends, so the job is made again).
"""


class Skipped(Exception):
    """A job that needs no run: nothing to make, or nothing changed since an identical successful run."""


class NothingChanged(Skipped):
    """Every input of a job was made into products by a successful run in the same context."""

    def __init__(self, run_id: int, message: str):
        self.run_id = run_id
        super().__init__(message)


# --- identity -------------------------------------------------------------------------------------


def processor_identity(cfg: ItfConfig) -> str:
    """What ran: the image digest (docker), the image reference (batch), or version + script bytes (local)."""
    runner, proc = cfg.processing.runner, cfg.processing.processor
    if runner.kind == "docker":
        return f"docker:{image_digest(runner.image or '')}"
    if runner.kind == "batch":
        return f"batch:{runner.image}"
    digest = hashlib.sha256()
    for arg in runner.command or []:
        path = project_root() / arg
        if path.is_file():
            digest.update(arg.encode() + b"\0" + path.read_bytes())
    return f"local:{proc.name}:{proc.version}:{digest.hexdigest()[:16]}"


def image_digest(image: str) -> str:
    """The local engine's image id for ``image`` (a tag can be moved; the id cannot), else the reference."""
    try:
        import docker

        client = docker.APIClient(base_url=os.environ.get("DOCKER_HOST", "unix://var/run/docker.sock"), timeout=10)
        return str(client.inspect_image(image)["Id"])
    except Exception as exc:  # no engine on this worker, or the image is not pulled yet
        log.warning("could not inspect image %s (%s); hashing its reference", image, exc)
        return image


def job_context_doc(spec: JobSpec, processor: str, kernels: list[str] | None) -> dict[str, Any]:
    """Everything but the inputs that decides a job's products."""
    return {
        "instrument": spec.instrument, "level": spec.level, "product_version": spec.version,
        "kernel_class": spec.kernel_class, "processor": processor, "parameters": spec.parameters,
        "calibration": sorted([c["file_name"], c["md5"]] for c in spec.calibration) if spec.calibration else None,
        "calibration_version": spec.calibration_version,
        "kernels": sorted(kernels) if kernels is not None else None,
    }


def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def per_input_hashes(context: dict[str, Any], inputs: list[JobInput]) -> dict[str, str]:
    """Hash of (one input's name and MD5, the job's context), per input file name."""
    return {i.file_name: _digest({**context, "input": [i.file_name, i.md5]}) for i in inputs}


def input_hash(context: dict[str, Any], inputs: list[JobInput]) -> tuple[str, dict[str, Any]]:
    """The job's content hash and the document it hashes (kept on the run to explain a remake)."""
    doc = {**context, "inputs": sorted([i.file_name, i.md5] for i in inputs)}
    return _digest(doc), doc


# --- prepare --------------------------------------------------------------------------------------


def latest_per_root(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest version (highest absolute version) of each file root among ``rows``."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["file_root"] not in best or r["absolute_version"] > best[r["file_root"]]["absolute_version"]:
            best[r["file_root"]] = r
    return sorted(best.values(), key=lambda r: r["file_name"])


def current_meta_kernel(cat: Catalog, storage: Storage) -> dict[str, Any] | None:
    """The newest meta-kernel, present in the kernel directory (fetched from the archive if not)."""
    row = cat.latest_meta_kernel()
    if row is None:
        return None
    path = sync_kernel_dir(storage, get_settings().archive_bucket, get_settings().kernel_dir, row)
    kernels = row["kernels"]
    return {
        "id": row["id"],
        "path": str(path),
        "file_name": row["file_name"],
        "kernels": [str(k) for k in (kernels if isinstance(kernels, list) else json.loads(kernels))],
    }


def plan_job(
    cat: Catalog,
    storage: Storage,
    cfg: ItfConfig,
    step: ChainStep,
    unit: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
) -> tuple[JobSpec, dict[str, Any]]:
    """Resolve one job's inputs from the catalog and hash it (nothing staged, nothing recorded).

    Returns the job and its hash document; raises :class:`Skipped` when there is nothing to make.
    ``unit`` is the planner's work unit: ``inputs`` (L0 names), ``kernel_class`` and, for reprocessing,
    ``lane``, ``reprocess``, ``force``, ``reason`` and ``campaign_run_id``.
    """
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
            sources += latest_per_root(cat.descendants_at_level(root_ids, src))
    if not sources:
        raise Skipped(f"no {step.inputs} inputs for {unit['unit']}")
    version = cfg.processing.product_version
    if not unit.get("reprocess"):
        children = cat.children_at_level([s["id"] for s in sources], step.level)
        covered = {c["input_id"] for c in children if c["version"] == version}
        sources = [s for s in sources if s["id"] not in covered]
        if not sources:
            raise Skipped(f"{unit['unit']} {step.level}: every input already has a v{version:02d} product")
    # A new revision whenever this unit already has products of the level at this version, so a product
    # never reuses an indexed name. Every version of the inputs' roots counts: a corrected L0 (v01-01)
    # makes the same products as the one it corrects (the unique index on root + version refuses reuse).
    existing = cat.descendants_at_level(cat.versions_of_roots(root_ids), step.level)
    used = [e["revision"] for e in existing if e["version"] == version]
    meta_kernel = current_meta_kernel(cat, storage) if step.uses_spice else None
    spec = JobSpec(
        job_id=safe_id(f"{dag_id}__{run_id}__{unit['unit']}__{step.level}"),
        instrument=cfg.instrument,
        level=step.level,
        work_unit=unit["unit"],
        workdir=str(settings.work_dir / safe_id(dag_id) / safe_id(run_id) / unit["unit"] / step.level),
        version=version,
        revision=max(used) + 1 if used else 0,
        kernel_class=unit.get("kernel_class", "n") if step.uses_spice else "n",
        meta_kernel=meta_kernel["path"] if meta_kernel else None,
        meta_kernel_id=meta_kernel["id"] if meta_kernel else None,
        inputs=[JobInput(s["file_name"], s["s3_key"], s["md5checksum"].strip(), s["data_level"]) for s in sources],
        environment=settings.environment,
        parameters=dict(step.parameters),
        reason=unit.get("reason") or None,
        runner=runner.kind,
        image=image,
        lane=unit.get("lane", "daily"),
        forced=bool(unit.get("force")),
    )
    cal = calibration_for(cat, cfg, step)
    if cal is not None:
        spec.calibration_version = cal.set_version
        spec.calibration = [asdict(f) for f in cal.files]
    context = job_context_doc(spec, processor_identity(cfg), meta_kernel["kernels"] if meta_kernel else None)
    if not spec.forced:
        # Inputs whose products a successful run made in this same context: nothing changed for them.
        hashes = per_input_hashes(context, spec.inputs)
        made = cat.inputs_already_made(list(hashes.values()))
        if made:
            spec.inputs = [i for i in spec.inputs if hashes[i.file_name] not in made]
            if not spec.inputs:
                raise NothingChanged(max(made.values()), f"{unit['unit']} {step.level}: nothing changed since "
                                     f"processing run {max(made.values())} made it from the same inputs, processor, "
                                     "parameters, calibration and kernels; set force to remake")
    spec.input_hash, doc = input_hash(context, spec.inputs)
    return spec, doc


def prior_success(cat: Catalog, spec: JobSpec) -> dict[str, Any] | None:
    """The successful run of this job's input hash, if any ("nothing changed")."""
    return cat.successful_run_with_hash(spec.input_hash)


def prepare_job(
    cat: Catalog,
    storage: Storage,
    cfg: ItfConfig,
    step: ChainStep,
    unit: dict[str, Any],
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    try_number: int,
) -> JobSpec:
    """Plan, hash, stage and register one job; raise :class:`Skipped` when it needs no run.

    A job whose input hash already has a successful run is recorded as ``skipped`` ("nothing changed")
    unless the unit says ``force``.
    """
    fields = {"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index,
              "try_number": try_number}
    try:
        spec, doc = plan_job(cat, storage, cfg, step, unit, dag_id=dag_id, run_id=run_id)
    except NothingChanged as exc:
        _record_skip(cat, cfg, step, unit, fields, str(exc))
        raise
    identity = {"input_hash": spec.input_hash, "hash_inputs": json.dumps(doc), "forced": spec.forced,
                "lane": spec.lane, "calibration_version": spec.calibration_version,
                "campaign_run_id": unit.get("campaign_run_id")}
    same = None if spec.forced else prior_success(cat, spec)
    if same is not None:
        why = (f"{unit['unit']} {step.level}: nothing changed since processing run {same['id']} "
               f"({same['dag_run_id']}) made it from the same inputs, processor, parameters, calibration and "
               "kernels; set force to remake")
        _record_skip(cat, cfg, step, unit, fields, why, spec=spec, identity=identity)
        raise NothingChanged(same["id"], why)
    settings = get_settings()
    workdir = Path(spec.workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    for inp in spec.inputs:
        path = spec.input_dir / inp.file_name
        storage.download(settings.archive_bucket, inp.s3_key, path)
        if md5_file(path) != inp.md5:
            raise AirflowFailException(f"staged copy of {inp.file_name} does not match its catalogued MD5")
    if spec.calibration:
        from emm_sdc.core.calibration import CalibrationFile, CalibrationSet, stage_set

        spec.calibration_dir = str(workdir / "calibration")
        staged = CalibrationSet(spec.instrument, spec.calibration_version or 0,
                                tuple(CalibrationFile(**c) for c in spec.calibration))
        stage_set(storage, settings.archive_bucket, staged, Path(spec.calibration_dir))
    open_job(
        cat,
        storage,
        cfg,
        spec,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        try_number=try_number,
    )
    assert spec.processing_run_id is not None
    cat.set_run_identity(spec.processing_run_id, **identity)
    context = {k: v for k, v in doc.items() if k != "inputs"}
    cat.record_run_inputs(spec.processing_run_id, per_input_hashes(context, spec.inputs))
    return spec


def _record_skip(cat: Catalog, cfg: ItfConfig, step: ChainStep, unit: dict[str, Any], fields: dict[str, Any],
                 message: str, *, spec: JobSpec | None = None, identity: dict[str, Any] | None = None) -> None:
    """A ``skipped`` processing run: the audit trail (and the campaign's count) of a job not remade."""
    runner = cfg.processing.runner
    cat.record_skipped_job(**{
        "dag_id": fields["dag_id"], "dag_run_id": fields["run_id"], "task_id": fields["task_id"],
        "map_index": fields["map_index"], "try_number": fields["try_number"], "instrument_id": cfg.instrument,
        "data_level": step.level, "work_unit": unit["unit"], "runner": runner.kind,
        "processor_name": cfg.processing.processor.name, "processor_version": cfg.processing.processor.version,
        "image": runner.image if runner.kind != "local" else None, "environment": get_settings().environment,
        "reason": unit.get("reason") or None, "message": message,
        "input_hash": spec.input_hash if spec else None, "hash_inputs": (identity or {}).get("hash_inputs"),
        "lane": unit.get("lane", "daily"), "calibration_version": spec.calibration_version if spec else None,
        "campaign_run_id": unit.get("campaign_run_id"),
    })


def calibration_for(cat: Catalog, cfg: ItfConfig, step: ChainStep) -> Any:
    """The calibration set a chain step's jobs get (``calibration`` in its YAML), or None."""
    if step.calibration is None:
        return None
    from emm_sdc.core.calibration import CalibrationError, calibration_set

    try:
        return calibration_set(cat, cfg.instrument, step.calibration)
    except CalibrationError as exc:
        raise AirflowFailException(f"{CONFIG_FILES[cfg.instrument]}: processing.chain ({step.level}).calibration: "
                                   f"{exc}") from None


def _run_fields(
    cfg: ItfConfig, spec: JobSpec, *, dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int
) -> dict[str, Any]:
    return {
        "dag_id": dag_id,
        "dag_run_id": run_id,
        "task_id": task_id,
        "map_index": map_index,
        "try_number": try_number,
        "instrument_id": spec.instrument,
        "data_level": spec.level,
        "work_unit": spec.work_unit,
        "runner": spec.runner,
        "processor_name": cfg.processing.processor.name,
        "processor_version": cfg.processing.processor.version,
        "image": spec.image,
        "environment": spec.environment,
        "reason": spec.reason,
    }


def open_job(
    cat: Catalog,
    storage: Storage,
    cfg: ItfConfig,
    spec: JobSpec,
    *,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int,
    try_number: int,
    staging_check_id: int | None = None,
) -> None:
    """Open the job's processing-run record and write its manifest (and, for batch, stage it in S3).

    ``try_number`` is the task instance's real try; ``staging_check_id`` links a staging check's job to its check.
    """
    from emm_sdc.runners.batch import stage_inputs

    spec.processing_run_id = cat.start_run(
        **_run_fields(
            cfg, spec, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, try_number=try_number
        ),
        meta_kernel=Path(spec.meta_kernel).name if spec.meta_kernel else None,
        started_at=datetime.now(UTC),
        staging_check_id=staging_check_id,
    )
    if spec.meta_kernel_id is not None:
        cat.set_run_meta_kernel(spec.processing_run_id, spec.meta_kernel_id)
    spec.write_manifest()
    if spec.runner == "batch":
        spec.s3_prefix = stage_inputs(storage, spec, get_settings().archive_bucket)


# --- collect --------------------------------------------------------------------------------------


def check_kernel_letters(cat: Catalog, spec: JobSpec, products: list[Any]) -> None:
    """A product's kernel letter must be a class whose Hope SPK covers the product's time."""
    if spec.kernel_class == "n":
        return
    spans = coverage.by_class(cat.hope_coverage()).get(spec.kernel_class, [])
    bad = [p.name.file_name for p in products if not any(s <= p.name.start <= e for s, e in spans)]
    if bad:
        raise OutputError(
            spec.job_id,
            [
                f"{n}: kernel class {spec.kernel_class!r} in its name, but no "
                f"{spec.kernel_class!r} Hope kernel covers its time"
                for n in bad
            ],
        )


def product_geometry(cat: Catalog, storage: Storage, spec: JobSpec, times: list[datetime]) -> list[dict[str, Any]]:
    """EMM API geometry fields at each product's time (empty without kernels)."""
    mk = spec.meta_kernel or (current_meta_kernel(cat, storage) or {}).get("path")
    if not mk:
        return [{} for _ in times]
    from emm_sdc.core.geometry import compute_geometry

    return compute_geometry(mk, times)


def _identical_job(cat: Catalog, spec: JobSpec) -> dict[str, Any] | None:
    """Another run of this job's hash that succeeded or is running (None when forced or unhashed)."""
    if spec.forced or not spec.input_hash:
        return None
    return cat.active_run_with_hash(spec.input_hash, other_than=spec.processing_run_id)


def _skip_as_duplicate(cat: Catalog, spec: JobSpec, other: dict[str, Any]) -> None:
    assert spec.processing_run_id is not None
    why = (
        f"nothing changed: processing run {other['id']} ({other['dag_run_id']}, {other['status']}) made the same "
        "job at the same time; this one indexed nothing"
    )
    cat.skip_run(spec.processing_run_id, why)
    raise Skipped(why)


def collect_job(cat: Catalog, storage: Storage, spec: JobSpec) -> list[str]:
    """Validate, upload and index a finished job's products: all or nothing (core/product_writes.py).

    Raises :class:`Skipped` when an identical job (same input hash) indexed, or is indexing, the same
    products first: this job's conflict with it is "nothing changed", not a failure.
    """
    bucket = get_settings().archive_bucket
    assert spec.processing_run_id is not None
    writer = ProductWriter(cat, storage, bucket, spec.processing_run_id)
    if writer.committed():  # an earlier attempt indexed them (perhaps without seeing the acknowledgement)
        return [r["file_name"] for r in cat.products_of_run_id(spec.processing_run_id)]
    other = _identical_job(cat, spec)
    if other is not None and other["status"] == "success":
        _skip_as_duplicate(cat, spec, other)
    try:
        if spec.runner == "batch":
            from emm_sdc.runners.batch import fetch_outputs

            fetch_outputs(storage, spec)
        products, processor = collect_outputs(spec)
        taken = cat.files([p.name.file_name for p in products])
        if taken:
            if (other := _identical_job(cat, spec)) is not None:
                _skip_as_duplicate(cat, spec, other)
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
        records = [
            (file_record(p.name, size=p.size, md5=p.md5, bucket=bucket, geometry=g, meta_kernel_id=spec.meta_kernel_id),
             p.inputs)
            for p, g in zip(products, geometry, strict=True)
        ]
        if processor.get("name") and processor.get("version"):  # what actually ran, as the processor says
            cat.set_run_processor(spec.processing_run_id, str(processor["name"]), str(processor["version"]))
        writer.commit(records, ended_at=datetime.now(UTC), log_uri=log_uri)
    except Exception as exc:
        # Lost a race to an identical job: its reservation (same names), or the catalog's one-success-per-hash
        # index (other names), stopped this one. Clean up only this run's objects and call it "nothing changed".
        conflict = isinstance(exc, KeyReserved | CatalogError) or _unique_violation(exc)
        duplicate = _identical_job(cat, spec) if conflict else None
        _abandon(cat, storage, spec, writer, exc, duplicate=duplicate is not None)
        if duplicate is not None:
            _skip_as_duplicate(cat, spec, duplicate)
        if isinstance(exc, KeyReserved | OutputError):
            raise AirflowFailException(str(exc)) from None
        raise
    log.info("indexed %d %s product(s) from %s (processor %s)", len(products), spec.level, spec.work_unit, processor)
    return [p.name.file_name for p in products]


def _unique_violation(exc: BaseException) -> bool:
    """A PostgreSQL unique violation (SQLSTATE 23505) from psycopg 3 or psycopg2."""
    return getattr(exc, "sqlstate", None) == "23505" or getattr(exc, "pgcode", None) == "23505"


def _abandon(
    cat: Catalog, storage: Storage, spec: JobSpec, writer: ProductWriter, exc: BaseException, *, duplicate: bool = False
) -> None:
    """After a failure before commit: remove only this run's uncommitted objects and record the failure.

    When the catalog cannot say whether the commit happened, or the clean-up itself fails, everything
    stays as it is for the retry or the sweeper (which decide from the catalog). A run that lost the race
    to an identical job is closed by the caller as skipped instead.
    """
    try:
        if writer.committed():
            return
        removed = writer.abandon()
        if not duplicate:
            fail_run(cat, storage, spec, 0, f"indexing failed: {exc}" + (f"; removed {removed}" if removed else ""))
    except Exception as cleanup:
        log.error(
            "clean-up after the failure of run %s failed too (%s); the sweeper finishes it",
            spec.processing_run_id,
            cleanup,
        )


# --- run records and logs -------------------------------------------------------------------------


def _log_key(spec: JobSpec) -> str:
    now = datetime.now(UTC)
    return f"{LOG_ROOT}/{spec.instrument}/{spec.level}/{now:%Y/%m}/{spec.job_id}.log"


def job_log_text(spec: JobSpec) -> bytes | None:
    """``job.log`` and the processor's own ``out/*.log`` files, each under a header; None if there is none."""
    parts: list[bytes] = []
    if spec.log_path.is_file() and not spec.log_path.is_symlink():
        parts.append(spec.log_path.read_bytes()[-MAX_LOG_BYTES:])
    if spec.output_dir.is_dir() and not spec.output_dir.is_symlink():
        files, _ = output_entries(spec.output_dir)
        for name in sorted(n for n in files if n.endswith(".log")):
            body = read_output(spec.output_dir, name, MAX_LOG_BYTES)
            cut = b"\n[... cut at %d bytes]\n" % MAX_LOG_BYTES if files[name] > MAX_LOG_BYTES else b""
            parts.append(f"\n===== processor log out/{name} =====\n".encode() + body + cut)
    return b"".join(parts) if parts else None


def archive_log(storage: Storage, spec: JobSpec) -> str | None:
    """Store the job's log (with the processor's ``out/*.log``) next to the products; return its s3:// URI."""
    text = job_log_text(spec)
    if text is None:
        return None
    bucket = get_settings().archive_bucket
    key = _log_key(spec)
    storage.put_bytes(bucket, key, text, "text/plain")
    return f"s3://{bucket}/{key}"


def fail_run(cat: Catalog, storage: Storage, spec: JobSpec, exit_status: int | None, message: str) -> None:
    """Close the processing-run record as failed and keep the log."""
    uri = archive_log(storage, spec)
    assert spec.processing_run_id is not None
    cat.finish_run(
        spec.processing_run_id,
        status="failed",
        ended_at=datetime.now(UTC),
        exit_status=exit_status,
        message=message[-4000:],
        log_uri=uri,
    )


def fail_job(spec: JobSpec, exit_status: int | None, message: str) -> None:
    """:func:`fail_run` through the Airflow connections (for tasks and runner operators)."""
    from emm_sdc import connections

    if spec.processing_run_id is not None:
        fail_run(connections.catalog(), connections.storage(), spec, exit_status, message)


# --- the chain of tasks ---------------------------------------------------------------------------


def job_context() -> dict[str, Any]:
    """The identity of the running task, for processing-run records."""
    ctx = get_current_context()
    ti = ctx["ti"]
    return {
        "dag_id": ctx["dag"].dag_id,
        "run_id": ctx["run_id"],
        "task_id": ti.task_id,
        "map_index": ti.map_index,
        "try_number": ti.try_number,
    }


def processing_level_tasks(cfg: ItfConfig, step: ChainStep) -> tuple[Any, Any]:
    """``prepare`` and ``collect`` of one level of a processing or reprocessing chain."""

    @task(task_id="prepare", trigger_rule=TriggerRule.NONE_FAILED, doc_md=PREPARE_DOC.format(level=step.level))
    def prepare(unit: dict[str, Any]) -> dict[str, Any]:
        """Resolve inputs from the catalog, hash the job, skip it if nothing changed, else stage it."""
        from emm_sdc import connections

        lane = unit.get("lane", "daily")
        yield_cpu(lane)
        wanted = unit.get("levels") or get_current_context()["params"].get("levels")
        if lane == "reprocessing" and not (wanted and step.level not in wanted):
            yield_to_daily_work(get_current_context())
        if wanted and step.level not in wanted:
            raise AirflowSkipException(f"{step.level} not among the levels to make {wanted}")
        try:
            spec = prepare_job(connections.catalog(), connections.storage(), cfg, step, unit, **job_context())
        except Skipped as why:
            raise AirflowSkipException(str(why)) from None
        return spec.to_dict()

    @task(task_id="collect", doc_md=COLLECT_DOC.format(level=step.level))
    def collect(job: dict[str, Any], _result: Any, _unit: dict[str, Any]) -> list[str]:
        """Validate the outputs, upload and index the products with lineage (all or nothing)."""
        from emm_sdc import connections

        spec = JobSpec.from_dict(job)
        yield_cpu(spec.lane)
        try:
            names = collect_job(connections.catalog(), connections.storage(), spec)
        except Skipped as why:
            raise AirflowSkipException(str(why)) from None
        finally:
            shutil.rmtree(spec.workdir, ignore_errors=True)
        return names

    return prepare, collect


LevelTasks = Callable[[ChainStep], tuple[Any, Any]]


def build_chain(
    steps: list[ChainStep],
    item: Any,
    runner: RunnerConfig,
    level_tasks: LevelTasks,
    task_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Lay out prepare → run → finish for every chain level (a task group per level), wired by inputs.

    ``level_tasks(step)`` gives the level's prepare task (taking ``item``) and its finish task (taking the
    job, the runner's result and ``item``); ``task_args`` (pool, priority) apply to all three.
    """
    from emm_sdc.runners import run_task

    args = dict(task_args or {})
    done: dict[str, Any] = {}
    for step in steps:
        with TaskGroup(group_id=step.level):
            prepare, finish = level_tasks(step)
            job = prepare.override(**args)(item)
            finished = finish.override(**args)(job, run_task(runner, job, **args), item)
        for src in step.inputs:
            if src in done:
                done[src] >> job
        done[step.level] = finished
    return done


def downstream_levels(steps: list[ChainStep], from_level: str | None) -> list[str]:
    """``from_level`` and every level made from it, directly or not (the whole chain when None)."""
    if not from_level:
        return [s.level for s in steps]
    chosen = {from_level}
    for s in steps:
        if any(src in chosen for src in s.inputs):
            chosen.add(s.level)
    return [s.level for s in steps if s.level in chosen]
