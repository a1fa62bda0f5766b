"""Processing jobs under the ITF contract (docs/itf_container_contract.md).

A job is one work unit at one target level. This module writes the input
manifest and environment a processor receives, and checks what it returned:
names, the output manifest, the files' kinds and each product's content
(:mod:`emm_sdc.core.product_checks`: FITS verification and checksums, gzip,
PNG decoding). Every problem is reported together, and any problem rejects
the whole job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from emm_sdc.core import naming, product_checks

CONTRACT_VERSION = 1
OUTPUT_MANIFEST = "output_manifest.json"
#: Bounds on what a job may return (products are 2-170 MB; anything near these is an error).
MAX_PRODUCT_BYTES = 20 * 1024**3
MAX_MANIFEST_BYTES = 1024**2
MAX_LOG_BYTES = 50 * 1024**2
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class OutputError(RuntimeError):
    """A processor's outputs break the contract; ``problems`` lists every finding."""

    def __init__(self, job_id: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"job {job_id}: outputs rejected, nothing indexed:\n  - " + "\n  - ".join(problems))


def output_entries(out: Path) -> tuple[dict[str, int], list[str]]:
    """The regular files directly in a job's output directory (name -> size), and every other entry as a problem.

    Nothing is followed: symlinks, sub-directories, FIFOs and devices are
    problems, found with ``lstat`` semantics, so a processor can never make the
    SDC read a file outside its own output directory.
    """
    files: dict[str, int] = {}
    problems: list[str] = []
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode):
                    files[entry.name] = st.st_size
                elif stat.S_ISLNK(st.st_mode):
                    problems.append(f"{entry.name}: is a symbolic link; outputs must be regular files")
                else:
                    problems.append(f"{entry.name}: is not a regular file (directory, FIFO or device)")
    finally:
        os.close(fd)
    return files, problems


def _open_regular(path: Path) -> BinaryIO:
    """Open an output file for reading without following a link; OSError unless it is a regular file."""
    fh = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise OSError(f"{path.name} is not a regular file")
    return fh


def read_output(out: Path, name: str, limit: int) -> bytes:
    """Read one regular output file without following links, at most ``limit`` bytes."""
    with _open_regular(out / name) as fh:
        return fh.read(limit)


def md5_output(path: Path) -> str:
    """MD5 of a regular output file, opened without following links."""
    with _open_regular(path) as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def safe_id(text: str) -> str:
    """A file-system-safe rendering of an Airflow id (run ids hold ':' and '+')."""
    return _UNSAFE.sub("_", text).strip("._") or "job"


@dataclass
class JobInput:
    file_name: str
    s3_key: str
    md5: str
    level: str


@dataclass
class JobSpec:
    """Everything a runner and the collector need; JSON-able for XCom."""

    job_id: str
    instrument: str
    level: str
    work_unit: str
    workdir: str
    version: int
    revision: int
    kernel_class: str
    inputs: list[JobInput]
    processing_run_id: int | None = None
    meta_kernel: str | None = None
    meta_kernel_id: int | None = None
    calibration_dir: str | None = None
    environment: str = "production"
    parameters: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    runner: str = "local"
    image: str | None = None
    lane: str = "daily"  # daily | reprocessing (batch job queue)
    s3_prefix: str | None = None  # batch: s3://bucket/prefix/ holding the staged job
    calibration: list[dict[str, Any]] = field(default_factory=list)  # file_name, md5, version of each file
    calibration_version: int | None = None  # the calibration set (core/calibration.py)
    input_hash: str | None = None  # the job's content hash (lifecycle.py)
    forced: bool = False  # made although an identical job succeeded before (force)

    @property
    def input_dir(self) -> Path:
        return Path(self.workdir) / "in"

    @property
    def output_dir(self) -> Path:
        return Path(self.workdir) / "out"

    @property
    def manifest_path(self) -> Path:
        return Path(self.workdir) / "input_manifest.json"

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "job.log"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        d = dict(d)
        d["inputs"] = [JobInput(**i) for i in d["inputs"]]
        return cls(**d)

    def manifest(self, *, input_root: Path | None = None) -> dict[str, Any]:
        """The input manifest; ``input_root`` rewrites paths as the processor sees them (containers)."""
        root = input_root or self.input_dir
        return {
            "contract_version": CONTRACT_VERSION,
            "instrument": self.instrument,
            "target_level": self.level,
            "work_unit": self.work_unit,
            "product_version": self.version,
            "product_revision": self.revision,
            "kernel_class": self.kernel_class,
            "processing_run_id": str(self.processing_run_id or self.job_id),
            "environment": self.environment,
            "spice_metakernel": self.meta_kernel,
            "calibration_dir": self.calibration_dir,
            "calibration_version": self.calibration_version,
            "calibration": [
                {**c, "path": str(Path(self.calibration_dir) / c["file_name"]) if self.calibration_dir else None}
                for c in self.calibration
            ],
            "parameters": self.parameters,
            "inputs": [
                {"file_name": i.file_name, "path": str(root / i.file_name), "level": i.level, "md5": i.md5}
                for i in self.inputs
            ],
        }

    def env(self, *, manifest: str | None = None, output_dir: str | None = None) -> dict[str, str]:
        """The contract's environment variables (paths overridable for containers)."""
        return {
            "EMM_INPUT_MANIFEST": manifest or str(self.manifest_path),
            "EMM_OUTPUT_DIR": output_dir or str(self.output_dir),
            "EMM_INSTRUMENT": self.instrument,
            "EMM_TARGET_LEVEL": self.level,
            "EMM_PRODUCT_VERSION": str(self.version),
            "EMM_PRODUCT_REVISION": str(self.revision),
            "EMM_KERNEL_CLASS": self.kernel_class,
            "EMM_SPICE_METAKERNEL": self.meta_kernel or "",
            "EMM_CALIBRATION_DIR": self.calibration_dir or "",
            "EMM_ENVIRONMENT": self.environment,
            "EMM_PROCESSING_RUN_ID": str(self.processing_run_id or self.job_id),
        }

    def write_manifest(self) -> Path:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path.write_text(json.dumps(self.manifest(), indent=2))
        return self.manifest_path


@dataclass(frozen=True)
class Product:
    """One validated output: parsed name, local path, checksum, lineage."""

    name: naming.EmmName
    path: Path
    md5: str
    size: int
    inputs: tuple[str, ...]


def collect_outputs(spec: JobSpec) -> tuple[list[Product], dict[str, Any]]:
    """Validate a finished job's output directory against the contract and the job, and each product's content.

    Returns the products and the processor block of the output manifest;
    raises :class:`OutputError` listing every problem.
    """
    out = spec.output_dir
    regular, problems = output_entries(out)
    if OUTPUT_MANIFEST not in regular:
        problems.insert(0, f"{OUTPUT_MANIFEST} is missing from the output directory (or is not a regular file)")
        raise OutputError(spec.job_id, problems)
    if regular[OUTPUT_MANIFEST] > MAX_MANIFEST_BYTES:
        raise OutputError(spec.job_id, [f"{OUTPUT_MANIFEST} is {regular[OUTPUT_MANIFEST]} bytes, more than "
                                        f"{MAX_MANIFEST_BYTES}"])
    try:
        manifest = json.loads(read_output(out, OUTPUT_MANIFEST, MAX_MANIFEST_BYTES))
    except (OSError, ValueError) as exc:
        raise OutputError(spec.job_id, [f"{OUTPUT_MANIFEST} is not valid JSON: {exc}"]) from None
    entries = manifest.get("products") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        raise OutputError(spec.job_id, [f"{OUTPUT_MANIFEST}: 'products' must be a list"])
    processor = manifest.get("processor") or {}

    input_names = {i.file_name for i in spec.inputs}
    listed: dict[str, tuple[str, ...]] = {}
    for n, entry in enumerate(entries):
        where = f"{OUTPUT_MANIFEST} products[{n}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
            problems.append(f"{where}: needs a 'file_name' string")
            continue
        fname = entry["file_name"]
        parents = entry.get("inputs")
        if not isinstance(parents, list) or not parents or not all(isinstance(p, str) for p in parents):
            problems.append(f"{where} ({fname}): 'inputs' must list the input file names it was made from")
            parents = []
        unknown = sorted(set(parents) - input_names)
        if unknown:
            problems.append(f"{fname}: lists inputs that were not given to the job: {unknown}")
        if fname in listed:
            problems.append(f"{fname}: listed twice in {OUTPUT_MANIFEST}")
        listed[fname] = tuple(parents)

    present = {n for n in regular if n != OUTPUT_MANIFEST and not n.endswith(".log")}
    for extra in sorted(present - set(listed)):
        problems.append(f"{extra}: written to the output directory but not listed in {OUTPUT_MANIFEST}")
    for missing in sorted(set(listed) - present):
        problems.append(f"{missing}: listed in {OUTPUT_MANIFEST} but not written")

    products: list[Product] = []
    for fname, parents in sorted(listed.items()):
        if fname not in present:
            continue
        parsed, name_problems = naming.problems_in(fname)
        if parsed is None:
            problems += [f"{fname}: {p}" for p in name_problems]
            continue
        expect = {
            "instrument": spec.instrument, "level": spec.level, "version": spec.version,
            "revision": spec.revision, "kernel": spec.kernel_class,
        }
        for attr, want in expect.items():
            got = getattr(parsed, attr)
            if got != want:
                problems.append(f"{fname}: {attr} is {got!r}, the job asked for {want!r}")
        path = out / fname
        size = regular[fname]
        if size == 0:
            problems.append(f"{fname}: is empty")
        elif size > MAX_PRODUCT_BYTES:
            problems.append(f"{fname}: is {size} bytes, more than the {MAX_PRODUCT_BYTES} a product may have")
            continue
        try:
            md5 = md5_output(path)
            with _open_regular(path) as fh:
                content = product_checks.verify_product(fh, fname, parsed.extension) if size else []
        except OSError as exc:
            problems.append(f"{fname}: cannot be read as a regular file: {exc}")
            continue
        problems += content
        if not content:
            products.append(Product(parsed, path, md5, size, parents))
    if not listed and not problems:
        problems.append(f"{OUTPUT_MANIFEST} lists no products")
    if problems:
        raise OutputError(spec.job_id, problems)
    return products, processor
