"""EMM file-name standard: parse, validate, build, and derive archive keys.

Grammar (docs/naming.md; observed on real EMM products)::

    emm_<inst>_<level>_<YYYYMMDD>T<hhmmss>_<orbit>[_<mode>][_<descriptor>]_<kernel>_v<VV>-<RR>.<ext>

Every rule is checked and all problems are reported together as structured
:class:`NameProblem` objects. Holding an :class:`EmmName` means the name is valid.

SDC-defined variants (documented in ``docs/naming.md``):

* Level 0 science: level ``l0``, kernel ``n``, extension ``.bin`` (CCSDS packets).
* Housekeeping: level ``hk``, no mode/descriptor, kernel ``n``, extension ``.bin``.
* Quicklook: level ``<source level>ql`` (EMIRS ``l2ql`` as on real products,
  EXI ``l1ql``), extension ``.png`` or FITS.
* MOC checksum sidecar: ``<file>.md5`` in ``md5sum`` format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Final

INSTRUMENTS: Final = ("exi", "emu", "emr")
INSTRUMENT_NAMES: Final = {"exi": "EXI", "emu": "EMUS", "emr": "EMIRS"}

#: Levels each instrument may carry (mission facts; docs/naming.md).
LEVELS: Final[dict[str, tuple[str, ...]]] = {
    "exi": ("l0", "hk", "l1", "l2a", "l1ql"),
    "emu": ("l0", "hk", "l1", "l2a", "l2b", "l3"),
    "emr": ("l0", "hk", "l1", "l2", "l2ql"),
}
RAW_LEVELS: Final = ("l0", "hk")
#: Time separator each instrument writes, as on real EMM products (EXI "T", EMUS/EMIRS "t"). Both are
#: accepted; a file's canonical name (its identity in the catalog and the archive) uses this one.
TIME_SEPARATOR: Final = {"exi": "T", "emu": "t", "emr": "t"}
KERNEL_CLASSES: Final = ("n", "p", "r", "f")
#: Quality order of SPICE kernel classes: larger is better.
KERNEL_QUALITY: Final = {"n": 0, "p": 1, "r": 2, "f": 3}

EXI_MODES: Final = ("xos1", "xos2", "xos3", "xos4", "xos5")
EXI_FILTERS: Final = ("f220", "f260", "f320", "f437", "f546", "f635")
EMU_MODES: Final = ("os1", "os2", "os3", "os4", "osr", "osp")
_EMU_SPECIAL_MODE = re.compile(r"^EMU\d{3}$")
_EMU_DESCRIPTOR = re.compile(r"^(sw\d+of\d+|\d+)$")

RAW_EXTENSIONS: Final = (".bin",)
SCIENCE_EXTENSIONS: Final = (".fits", ".fits.gz")
QUICKLOOK_EXTENSIONS: Final = (".png", ".fits", ".fits.gz")
SIDECAR_SUFFIX: Final = ".md5"
_ALL_EXTENSIONS: Final = (".fits.gz", ".fits", ".png", ".bin")

ARCHIVE_ROOT: Final = "emm/data"
#: Other archive-bucket areas the SDC writes: staging-check outputs and reports, Batch job staging (expire it
#: with a lifecycle rule), and the API's download bundles.
STAGING_ROOT: Final = "emm/staging"
WORK_ROOT: Final = "emm/work"
BUNDLE_ROOT: Final = "emm/bundles"

_TIMESTAMP = re.compile(r"^(?P<date>\d{8})(?P<sep>[Tt])(?P<time>\d{6})$")
_VERSION = re.compile(r"^v(?P<version>\d{2})-(?P<revision>\d{2})$")
_ORBIT = re.compile(r"^\d{4}$")
#: What any delivered or product file name may look like before its fields are checked (no path parts).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$")


@dataclass(frozen=True)
class NameProblem:
    """One broken naming rule: which field, what value, and the convention."""

    rule: str
    field: str
    value: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}={self.value!r}: {self.message} [{self.rule}]"


class InvalidNameError(ValueError):
    """Raised when a file name breaks one or more rules of the EMM standard."""

    def __init__(self, file_name: str, problems: list[NameProblem]):
        self.file_name = file_name
        self.problems = problems
        detail = "; ".join(str(p) for p in problems)
        super().__init__(f"{file_name!r} is not a valid EMM file name: {detail}")


@dataclass(frozen=True)
class EmmName:
    """A parsed, valid EMM file name."""

    instrument: str
    level: str
    start: datetime
    orbit: int
    mode: str | None
    descriptor: str | None
    kernel: str
    version: int
    revision: int
    extension: str
    time_separator: str | None = field(default=None, compare=False)  # None: the instrument's own

    @property
    def file_name(self) -> str:
        """The canonical file name these fields make."""
        return self.file_root + f"_{self.kernel}_v{self.version:02d}-{self.revision:02d}{self.extension}"

    @property
    def file_root(self) -> str:
        """Name without kernel class, version and extension: equal across reprocessings."""
        sep = self.time_separator or TIME_SEPARATOR[self.instrument]
        stamp = self.start.strftime(f"%Y%m%d{sep}%H%M%S")
        parts = ["emm", self.instrument, self.level, stamp, f"{self.orbit:04d}"]
        parts += [p for p in (self.mode, self.descriptor) if p]
        return "_".join(parts)

    @property
    def absolute_version(self) -> int:
        """VV*100 + RR; the newest product of a file root has the largest."""
        return self.version * 100 + self.revision

    @property
    def is_raw(self) -> bool:
        """True for MOC deliveries (L0 science and housekeeping)."""
        return self.level in RAW_LEVELS

    @property
    def is_quicklook(self) -> bool:
        return self.level.endswith("ql")

    @property
    def product_type(self) -> str:
        if self.level == "hk":
            return "hk"
        if self.is_quicklook:
            return "quicklook"
        return "science"

    @property
    def archive_key(self) -> str:
        """``emm/data/<inst>/<level>[/<mode>]/YYYY/MM/<file>``."""
        parts = [ARCHIVE_ROOT, self.instrument, self.level]
        if self.mode:
            parts.append(self.mode)
        parts += [f"{self.start:%Y}", f"{self.start:%m}", self.file_name]
        return "/".join(parts)

    def canonical(self) -> EmmName:
        """The same file under its canonical name: the instrument's time separator.

        Names that differ only in the separator's case are one file; the canonical
        name is its identity for duplicate/conflict detection, the catalog and the archive key.
        """
        return replace(self, time_separator=None)

    @property
    def canonical_name(self) -> str:
        return self.canonical().file_name

    def with_version(self, version: int, revision: int) -> EmmName:
        return replace(self, version=version, revision=revision)

    def with_kernel(self, kernel: str) -> EmmName:
        if kernel not in KERNEL_CLASSES:
            raise ValueError(f"kernel class must be one of {KERNEL_CLASSES}, got {kernel!r}")
        return replace(self, kernel=kernel)


def split_extension(file_name: str) -> tuple[str, str]:
    """Split a name into (stem, extension) using the standard's known extensions."""
    lowered = file_name.lower()
    for ext in _ALL_EXTENSIONS:
        if lowered.endswith(ext):
            return file_name[: -len(ext)], file_name[-len(ext) :]
    dot = file_name.find(".")
    return (file_name, "") if dot < 0 else (file_name[:dot], file_name[dot:])


def _allowed_extensions(level: str) -> tuple[str, ...]:
    if level in RAW_LEVELS:
        return RAW_EXTENSIONS
    if level.endswith("ql"):
        return QUICKLOOK_EXTENSIONS
    return SCIENCE_EXTENSIONS


def _check_mode_descriptor(
    inst: str, level: str, extras: list[str], problems: list[NameProblem]
) -> tuple[str | None, str | None]:
    """Assign the optional tokens to mode/descriptor with per-instrument rules."""

    def bad(rule: str, fld: str, value: str, message: str) -> None:
        problems.append(NameProblem(rule, fld, value, message))

    if len(extras) > 2:
        bad("field-count", "mode/descriptor", "_".join(extras),
            "at most two fields (mode, descriptor) may sit between orbit and kernel class")
        return None, None
    mode = extras[0] if extras else None
    descriptor = extras[1] if len(extras) > 1 else None

    if level == "hk" or inst == "emr":
        if extras:
            who = "housekeeping files" if level == "hk" else "EMIRS files"
            bad("no-mode", "mode", "_".join(extras), f"{who} carry no mode or descriptor")
        return None, None

    if inst == "exi":
        if mode is None:
            bad("exi-mode", "mode", "", f"EXI files need an observation mode, one of {', '.join(EXI_MODES)}")
        elif mode not in EXI_MODES:
            bad("exi-mode", "mode", mode, f"EXI mode must be one of {', '.join(EXI_MODES)}")
        if level == "l0":
            if descriptor is not None:
                bad("exi-l0-filter", "descriptor", descriptor,
                    "EXI l0 files hold every filter of a sequence and carry no filter descriptor")
        elif descriptor is None:
            bad("exi-filter", "descriptor", "",
                f"EXI {level} files need a filter descriptor, one of {', '.join(EXI_FILTERS)}")
        elif descriptor not in EXI_FILTERS:
            bad("exi-filter", "descriptor", descriptor,
                f"EXI filter descriptor must be one of {', '.join(EXI_FILTERS)}")
        return mode, descriptor

    # EMUS
    if mode is None:
        bad("emu-mode", "mode", "",
            f"EMUS files need an observation mode, one of {', '.join(EMU_MODES)} or EMUnnn")
    elif mode not in EMU_MODES and not _EMU_SPECIAL_MODE.match(mode):
        bad("emu-mode", "mode", mode, f"EMUS mode must be one of {', '.join(EMU_MODES)} or EMUnnn (3 digits)")
    if descriptor is not None and not _EMU_DESCRIPTOR.match(descriptor):
        bad("emu-descriptor", "descriptor", descriptor,
            "EMUS descriptor must be a segment like 'sw1of3' or digits")
    return mode, descriptor


def problems_in(file_name: str) -> tuple[EmmName | None, list[NameProblem]]:
    """Check every rule; return the parsed name (if valid) and all problems found."""
    problems: list[NameProblem] = []

    def bad(rule: str, fld: str, value: str, message: str) -> None:
        problems.append(NameProblem(rule, fld, value, message))

    if "/" in file_name or "\\" in file_name or not SAFE_NAME.match(file_name):
        bad("safe-characters", "file_name", file_name,
            "names use only letters, digits, '.', '_' and '-', start with a letter or digit, "
            "have no path separators and are at most 255 characters")
        return None, problems

    stem, ext = split_extension(file_name)
    tokens = stem.split("_")
    if len(tokens) > 4 and re.fullmatch(r"\d{8}", tokens[3]) and re.fullmatch(r"\d{6}", tokens[4]):
        bad("timestamp", "timestamp", f"{tokens[3]}_{tokens[4]}",
            "date and time are joined by 'T' (YYYYMMDDThhmmss), not '_'")
        tokens[3:5] = [f"{tokens[3]}T{tokens[4]}"]
    if len(tokens) < 7:
        bad("structure", "file_name", file_name,
            "expected emm_<inst>_<level>_<YYYYMMDD>T<hhmmss>_<orbit>[_<mode>][_<descriptor>]"
            "_<kernel>_v<VV>-<RR>.<ext>")
        return None, problems

    prefix, inst, level, stamp, orbit_s = tokens[:5]
    kernel, version_s = tokens[-2], tokens[-1]
    extras = tokens[5:-2]

    if prefix != "emm":
        bad("mission-prefix", "mission", prefix, "names start with the mission code 'emm'")
    inst_ok = inst in INSTRUMENTS
    if not inst_ok:
        bad("instrument", "instrument", inst, f"instrument must be one of {', '.join(INSTRUMENTS)}")
    level_ok = inst_ok and level in LEVELS[inst]
    if inst_ok and not level_ok:
        bad("level", "level", level,
            f"{INSTRUMENT_NAMES[inst]} levels are {', '.join(LEVELS[inst])}")

    start: datetime | None = None
    sep = "T"
    m = _TIMESTAMP.match(stamp)
    if not m:
        bad("timestamp", "timestamp", stamp, "observation start must be YYYYMMDDThhmmss (T or t), UTC")
    else:
        sep = m["sep"]
        try:
            start = datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
        except ValueError:
            bad("timestamp", "timestamp", stamp, "observation start is not a real calendar date and time")

    if not _ORBIT.match(orbit_s):
        bad("orbit", "orbit", orbit_s, "orbit number is 4 digits, zero padded (e.g. 0011)")

    mode = descriptor = None
    if inst_ok and level_ok:
        mode, descriptor = _check_mode_descriptor(inst, level, extras, problems)

    if kernel not in KERNEL_CLASSES:
        bad("kernel-class", "kernel", kernel,
            "kernel class must be p (predicted), r (reconstructed), f (final) or n (none)")
    elif level in RAW_LEVELS and kernel != "n":
        bad("raw-kernel-class", "kernel", kernel, f"{level} files use no SPICE kernels: class must be 'n'")

    vm = _VERSION.match(version_s)
    if not vm:
        bad("version", "version", version_s, "version is v<VV>-<RR>, two digits each (e.g. v01-00)")

    if level_ok and ext not in _allowed_extensions(level):
        bad("extension", "extension", ext,
            f"{level} files use extension {' or '.join(_allowed_extensions(level))}")

    if problems:
        return None, problems
    assert start is not None and vm is not None
    return EmmName(
        instrument=inst,
        level=level,
        start=start,
        orbit=int(orbit_s),
        mode=mode,
        descriptor=descriptor,
        kernel=kernel,
        version=int(vm["version"]),
        revision=int(vm["revision"]),
        extension=ext,
        time_separator=sep,
    ), []


def parse(file_name: str) -> EmmName:
    """Parse a valid EMM file name or raise :class:`InvalidNameError` listing every problem."""
    name, problems = problems_in(file_name)
    if name is None:
        raise InvalidNameError(file_name, problems)
    return name


def is_valid(file_name: str) -> bool:
    return problems_in(file_name)[0] is not None


def sidecar_name(file_name: str) -> str:
    """The MOC checksum sidecar that accompanies ``file_name``."""
    return file_name + SIDECAR_SUFFIX


def safe_basename(key: str, limit: int = 200) -> str:
    """A path-safe rendering of an untrusted key's last segment (for quarantine keys)."""
    base = key.rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".") or "unnamed"
    return cleaned[:limit]


def task_label(text: str, limit: int = 250) -> str:
    """A label for the Airflow UI (rendered map index) within Airflow's ``limit`` characters.

    Long labels keep their start and end (where names differ) around an ellipsis.
    """
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[-(limit - 1 - head):]
