"""The ITF side of the SDC processor contract (``docs/itf_container_contract.md``, version 1).

Reads the job from the environment and the input manifest, checks the inputs,
runs the instrument's step for the target level, and writes
``output_manifest.json``. Exit codes: 0 success, 1 processing failed, 2 bad
input (manifest or input content), 3 missing calibration or SPICE data.

Test hooks (``EMM_REF_FAIL`` or the step parameter ``ref_fail``; see
``processors/README.md``) let the SDC's tests provoke every failure path.

Standard library only, so a job that fails early (bad manifest, ``crash``
hook) does so without importing numpy/astropy.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from emmref import names

CONTRACT_VERSION = 1
MANIFEST_NAME = "output_manifest.json"

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING_AUX = 3

HOOKS = ("crash", "oom", "hang", "extra-file", "bad-name")
OOM_LIMIT_BYTES = 8 * 1024**3
OOM_BLOCK_BYTES = 64 * 1024**2
HANG_SECONDS = 3600
EXTRA_FILE_NAME = "unlisted_scratch.dat"


class ProcessorError(Exception):
    """Processing failed (exit 1)."""

    exit_code = EXIT_FAILED


class BadInput(ProcessorError):
    """The manifest or an input file is unusable (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class MissingAuxiliary(ProcessorError):
    """Calibration or SPICE data the job needs is missing (exit 3)."""

    exit_code = EXIT_MISSING_AUX


@dataclass(frozen=True)
class Processor:
    """Identity of one reference processor (written into the output manifest and headers)."""

    name: str
    version: str
    instrument: str


@dataclass(frozen=True)
class InputFile:
    """One input of the job, as the manifest lists it."""

    file_name: str
    path: Path
    level: str
    md5: str | None
    name: names.ProductName


@dataclass(frozen=True)
class Job:
    """One job: a work unit, a target level and its inputs."""

    instrument: str
    target_level: str
    work_unit: str
    product_version: int
    product_revision: int
    kernel_class: str
    processing_run_id: str
    environment: str
    spice_metakernel: Path | None
    calibration_dir: Path | None
    parameters: dict[str, Any]
    inputs: tuple[InputFile, ...]
    output_dir: Path
    manifest_path: Path

    def inputs_at(self, level: str) -> list[InputFile]:
        """Inputs of one level, in manifest order."""
        return [i for i in self.inputs if i.level == level]

    def product_name(self, source: names.ProductName, extension: str = ".fits", **changes: Any) -> str:
        """Name of a product made from ``source``: this job's instrument, level, kernel and version."""
        return source.derive(
            instrument=self.instrument, level=self.target_level, kernel=self.kernel_class,
            version=self.product_version, revision=self.product_revision, extension=extension,
            separator=names.TIME_SEPARATOR[self.instrument], **changes,
        ).format()


@dataclass(frozen=True)
class Step:
    """How one target level is made: from which input level, by which function."""

    source_level: str
    make: Callable[[Job, Outputs], None]
    auxiliary_levels: tuple[str, ...] = ()


def log(message: str) -> None:
    """Progress to stdout (the SDC copies it into the task log)."""
    print(message, flush=True)


# --------------------------------------------------------------------------- loading the job


def _manifest(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"input manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"input manifest {path} is unreadable: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"input manifest {path} must hold a JSON object, not {type(doc).__name__}")
    return doc


def _pick(env: Mapping[str, str], doc: Mapping[str, Any], var: str, key: str, where: Path) -> Any:
    """A value from the environment and/or the manifest; both given must agree."""
    in_env, in_doc = var in env, doc.get(key) is not None
    if not in_env and not in_doc:
        raise BadInput(f"neither ${var} nor '{key}' in the input manifest {where} is set")
    if in_env and in_doc and str(doc[key]) != env[var]:
        raise BadInput(f"${var}={env[var]!r} disagrees with '{key}'={doc[key]!r} "
                       f"in the input manifest {where}")
    return env[var] if in_env else doc[key]


def _optional_path(env: Mapping[str, str], doc: Mapping[str, Any], var: str, key: str) -> Path | None:
    value = env[var] if var in env else doc.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput(f"'{key}' in the input manifest must be a path string or null, got {value!r}")
    return Path(value)


def _int(value: Any, what: str, lo: int = 0, hi: int = 99) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{what} must be an integer, got {value!r}") from None
    if isinstance(value, float) or not lo <= number <= hi:
        raise BadInput(f"{what} must be an integer from {lo} to {hi}, got {value!r}")
    return number


def _inputs(doc: Mapping[str, Any], where: Path) -> tuple[InputFile, ...]:
    raw = doc.get("inputs")
    if not isinstance(raw, list) or not raw:
        raise BadInput(f"'inputs' in the input manifest {where} must be a non-empty list")
    seen: set[str] = set()
    result = []
    for n, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("file_name"), str) \
                or not isinstance(item.get("path"), str):
            raise BadInput(f"inputs[{n}] in {where} needs string 'file_name' and 'path', got {item!r}")
        file_name = item["file_name"]
        if file_name in seen:
            raise BadInput(f"input {file_name} is listed twice in {where}")
        seen.add(file_name)
        try:
            parsed = names.parse(file_name)
        except ValueError as exc:
            raise BadInput(f"input {file_name}: {exc}") from None
        level = item.get("level") or parsed.level
        if level != parsed.level:
            raise BadInput(f"input {file_name} is listed with level {level!r}, "
                           f"its name says {parsed.level!r}")
        md5 = item.get("md5")
        if md5 is not None and not (isinstance(md5, str) and re.fullmatch(r"[0-9a-fA-F]{32}", md5)):
            raise BadInput(f"input {file_name}: md5 must be 32 hex digits, got {md5!r}")
        result.append(InputFile(file_name, Path(item["path"]), level, md5.lower() if md5 else None, parsed))
    return tuple(result)


def load_job(env: Mapping[str, str], processor: Processor) -> Job:
    """The job described by the environment and the input manifest (raises BadInput)."""
    for var in ("EMM_INPUT_MANIFEST", "EMM_OUTPUT_DIR"):
        if not env.get(var):
            raise BadInput(f"${var} is not set")
    manifest_path = Path(env["EMM_INPUT_MANIFEST"])
    doc = _manifest(manifest_path)
    if doc.get("contract_version", CONTRACT_VERSION) != CONTRACT_VERSION:
        raise BadInput(f"{manifest_path}: contract_version {doc['contract_version']!r} is not supported "
                       f"(this processor implements version {CONTRACT_VERSION})")

    def pick(var: str, key: str) -> Any:
        return _pick(env, doc, var, key, manifest_path)

    instrument = pick("EMM_INSTRUMENT", "instrument")
    if instrument != processor.instrument:
        raise BadInput(f"{processor.name} processes instrument {processor.instrument!r}, "
                       f"the job is for {instrument!r}")
    kernel = pick("EMM_KERNEL_CLASS", "kernel_class")
    if kernel not in names.KERNEL_CLASSES:
        raise BadInput(f"kernel class must be one of {', '.join(names.KERNEL_CLASSES)}, got {kernel!r}")
    parameters = doc.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadInput(f"'parameters' in {manifest_path} must be a mapping, got {parameters!r}")
    return Job(
        instrument=instrument,
        target_level=str(pick("EMM_TARGET_LEVEL", "target_level")),
        work_unit=str(doc.get("work_unit", "")),
        product_version=_int(pick("EMM_PRODUCT_VERSION", "product_version"), "product version"),
        product_revision=_int(pick("EMM_PRODUCT_REVISION", "product_revision"), "product revision"),
        kernel_class=kernel,
        processing_run_id=str(pick("EMM_PROCESSING_RUN_ID", "processing_run_id")),
        environment=str(pick("EMM_ENVIRONMENT", "environment")),
        spice_metakernel=_optional_path(env, doc, "EMM_SPICE_METAKERNEL", "spice_metakernel"),
        calibration_dir=_optional_path(env, doc, "EMM_CALIBRATION_DIR", "calibration_dir"),
        parameters=parameters,
        inputs=_inputs(doc, manifest_path),
        output_dir=Path(env["EMM_OUTPUT_DIR"]),
        manifest_path=manifest_path,
    )


def check_inputs(job: Job, step: Step) -> None:
    """Every input exists, has the level the step takes, and matches its manifest MD5."""
    accepted = (step.source_level, *step.auxiliary_levels)
    for inp in job.inputs:
        if inp.name.instrument != job.instrument:
            raise BadInput(f"input {inp.file_name} is an {inp.name.instrument} file, "
                           f"the job is {job.instrument}")
        if inp.level not in accepted:
            raise BadInput(f"input {inp.file_name} has level {inp.level}; {job.target_level} is made from "
                           f"{' and '.join(accepted)} inputs")
        if not inp.path.is_file():
            raise BadInput(f"input {inp.file_name} is missing: no file at {inp.path}")
        if inp.md5 is not None:
            with open(inp.path, "rb") as fh:
                actual = hashlib.file_digest(fh, "md5").hexdigest()
            if actual != inp.md5:
                raise BadInput(f"input {inp.file_name} has MD5 {actual}, the manifest says {inp.md5}")
    if not job.inputs_at(step.source_level):
        raise BadInput(f"no {step.source_level} input: {job.target_level} is made from {step.source_level}")


def check_auxiliary(job: Job) -> None:
    """SPICE: record-only, unless the step parameter ``require_spice`` asks for a meta-kernel (exit 3)."""
    mk = job.spice_metakernel
    if job.parameters.get("require_spice") and (mk is None or not mk.is_file()):
        raise MissingAuxiliary(f"this step requires a SPICE meta-kernel, got {str(mk) if mk else 'none'}")
    if mk is not None and not mk.is_file():
        print(f"warning: SPICE meta-kernel {mk} is not readable here; recording its name only",
              file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- test hooks


def active_hook(env: Mapping[str, str], job: Job) -> str | None:
    """The test hook for this job: ``EMM_REF_FAIL`` or parameter ``ref_fail``, ``hook[@level,...]``."""
    spec = env.get("EMM_REF_FAIL") or job.parameters.get("ref_fail") or ""
    if not spec:
        return None
    hook, _, levels = str(spec).partition("@")
    if hook not in HOOKS:
        raise BadInput(f"unknown test hook EMM_REF_FAIL={spec!r}; expected one of {', '.join(HOOKS)}"
                       " optionally followed by @level[,level]")
    if levels and job.target_level not in levels.split(","):
        return None
    return hook


def run_early_hook(hook: str | None) -> None:
    """``crash``, ``oom`` and ``hang`` act before anything is written."""
    if hook == "crash":
        raise ProcessorError("EMM_REF_FAIL=crash: simulated processing failure, nothing was written")
    if hook == "oom":
        import numpy as np

        log(f"EMM_REF_FAIL=oom: allocating up to {OOM_LIMIT_BYTES >> 30} GiB until killed")
        blocks = []
        try:
            while len(blocks) * OOM_BLOCK_BYTES < OOM_LIMIT_BYTES:
                blocks.append(np.ones(OOM_BLOCK_BYTES // 8))  # np.ones touches every page
                if len(blocks) % 16 == 0:
                    log(f"  holding {len(blocks) * OOM_BLOCK_BYTES >> 20} MiB")
        except MemoryError:
            raise ProcessorError("EMM_REF_FAIL=oom: out of memory (MemoryError)") from None
        raise ProcessorError(f"EMM_REF_FAIL=oom: held {OOM_LIMIT_BYTES >> 30} GiB without being killed")
    if hook == "hang":
        print(f"EMM_REF_FAIL=hang: sleeping {HANG_SECONDS} s", file=sys.stderr, flush=True)
        time.sleep(HANG_SECONDS)
        raise ProcessorError(f"EMM_REF_FAIL=hang: slept {HANG_SECONDS} s without being stopped")


# --------------------------------------------------------------------------- outputs


@dataclass
class Outputs:
    """Products written so far and their lineage; :meth:`finish` writes the output manifest."""

    job: Job
    processor: Processor
    hook: str | None = None
    products: list[dict[str, Any]] = field(default_factory=list)

    def path(self, file_name: str) -> Path:
        """Where to write a product (refuses a name already produced by this job)."""
        if any(p["file_name"] == file_name for p in self.products):
            raise ProcessorError(f"two products of this job would both be named {file_name}")
        return self.job.output_dir / file_name

    def add(self, file_name: str, inputs: Sequence[str]) -> None:
        """Record a written product and the input file names it was made from."""
        if not (self.job.output_dir / file_name).is_file():
            raise ProcessorError(f"product {file_name} was not written")
        known = {i.file_name for i in self.job.inputs}
        unknown = [i for i in inputs if i not in known]
        if unknown or not inputs:
            raise ProcessorError(f"product {file_name} lists inputs {list(inputs)} not all in the job")
        self.products.append({"file_name": file_name, "inputs": list(dict.fromkeys(inputs))})
        log(f"wrote {file_name} <- {', '.join(inputs)}")

    def finish(self) -> Path:
        """Apply the output hooks and write ``output_manifest.json`` (atomically)."""
        if not self.products:
            raise ProcessorError("no product was made")
        out = self.job.output_dir
        if self.hook == "bad-name":
            first = self.products[0]
            wrong = names.broken(first["file_name"])
            (out / first["file_name"]).rename(out / wrong)
            print(f"EMM_REF_FAIL=bad-name: renamed {first['file_name']} to {wrong}", file=sys.stderr)
            first["file_name"] = wrong
        if self.hook == "extra-file":
            (out / EXTRA_FILE_NAME).write_text("scratch data the manifest does not list\n")
            print(f"EMM_REF_FAIL=extra-file: also wrote {EXTRA_FILE_NAME}", file=sys.stderr)
        doc = {
            "contract_version": CONTRACT_VERSION,
            "processor": {"name": self.processor.name, "version": self.processor.version},
            "products": self.products,
        }
        tmp = out / (MANIFEST_NAME + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(out / MANIFEST_NAME)
        log(f"wrote {MANIFEST_NAME}: {len(self.products)} product(s)")
        return out / MANIFEST_NAME


# --------------------------------------------------------------------------- entry point


def run(processor: Processor, steps: Mapping[str, Step], env: Mapping[str, str] | None = None) -> int:
    """Run one job per the contract; returns the exit status."""
    env = os.environ if env is None else env
    try:
        job = load_job(env, processor)
        log(f"{processor.name} {processor.version}: {job.instrument} {job.target_level} "
            f"work unit {job.work_unit or '-'} ({len(job.inputs)} input(s), run {job.processing_run_id}, "
            f"{job.environment})")
        hook = active_hook(env, job)
        run_early_hook(hook)
        step = steps.get(job.target_level)
        if step is None:
            raise BadInput(f"{processor.name} makes {', '.join(steps)}; target level "
                           f"{job.target_level!r} is not one of them")
        check_inputs(job, step)
        check_auxiliary(job)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        leftovers = sorted(p.name for p in job.output_dir.iterdir())
        if leftovers:
            print(f"warning: output directory is not empty: {', '.join(leftovers)}", file=sys.stderr)
        outputs = Outputs(job, processor, hook)
        step.make(job, outputs)
        outputs.finish()
    except ProcessorError as exc:
        print(f"{processor.name}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except Exception:  # an unexpected bug is a processing failure, with its traceback in the log
        traceback.print_exc()
        print(f"{processor.name}: error: processing failed", file=sys.stderr, flush=True)
        return EXIT_FAILED
    return EXIT_OK


def main(processor: Processor, steps: Mapping[str, Step]) -> NoReturn:
    """A processor program's entry point: run the job in the environment and exit with its status."""
    sys.exit(run(processor, steps))
