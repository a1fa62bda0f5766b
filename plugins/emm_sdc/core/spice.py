"""SPICE kernel loading and inspection with spiceypy (no Airflow).

SPICE's kernel pool is process-global: :func:`kernel_pool` clears it, loads the given
kernels in order and always clears it again, so one task's kernels never leak into the
next task run in the same process. SPICE errors become :class:`KernelLoadError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import spiceypy
from spiceypy.utils.exceptions import SpiceyError

#: getfat kinds with coverage the SDC reads; text kernels (LSK, PCK, FK, SCLK, IK, MK) have none.
DAF_KINDS = ("SPK", "CK")
_MAX_INTERVALS = 100_000


@dataclass(frozen=True)
class Interval:
    """A closed UTC time interval (tz-aware datetimes)."""

    start: datetime
    end: datetime

    def __contains__(self, t: datetime) -> bool:
        return self.start <= t <= self.end


class KernelLoadError(Exception):
    """A kernel could not be loaded or read; carries SPICE's own short and long messages."""

    def __init__(self, path: str | Path, short: str, long: str = ""):
        self.path = str(path)
        self.short = short.strip()
        self.long = " ".join(long.split())
        super().__init__(f"{self.path}: {self.short}{': ' + self.long if self.long else ''}")

    @classmethod
    def from_spice(cls, path: str | Path, exc: SpiceyError) -> KernelLoadError:
        return cls(path, exc.short or type(exc).__name__, exc.long or "")


@dataclass(frozen=True)
class KernelInfo:
    """What a kernel is (``getfat``: e.g. ``DAF``/``SPK``, ``KPL``/``LSK``) and its coverage per
    SPK body or CK frame ID (empty for text kernels)."""

    arch: str
    kind: str
    coverage: dict[int, list[Interval]] = field(default_factory=dict)


def _reset_error_state() -> None:
    """Make SPICE errors raise (RETURN mode, spiceypy's default) and clear any pending error."""
    if spiceypy.erract("GET", 16).strip().upper() != "RETURN":
        spiceypy.erract("SET", 16, "RETURN")
    spiceypy.reset()


@contextmanager
def kernel_pool(paths: Sequence[str | Path]) -> Iterator[None]:
    """Load ``paths`` in order into a cleared kernel pool; clear it again on exit, whatever happens.

    Raises :class:`KernelLoadError` naming the first kernel that fails to load (the pool is left cleared).
    """
    _reset_error_state()
    spiceypy.kclear()
    try:
        for p in paths:
            try:
                spiceypy.furnsh(str(p))
            except SpiceyError as exc:
                raise KernelLoadError.from_spice(p, exc) from exc
        yield
    finally:
        spiceypy.reset()
        spiceypy.kclear()


def file_type(path: str | Path) -> tuple[str, str]:
    """``(architecture, kind)`` per ``getfat``; :class:`KernelLoadError` for files that are no SPICE kernel."""
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise KernelLoadError(p, "SPICE(FILENOTFOUND)" if not p.exists() else "SPICE(EMPTYFILE)",
                              "the file is missing or empty")
    _reset_error_state()
    try:
        arch, kind = spiceypy.getfat(str(p))
    except SpiceyError as exc:
        raise KernelLoadError.from_spice(p, exc) from exc
    if arch.strip() in ("?", "") or kind.strip() in ("?", ""):
        raise KernelLoadError(p, "SPICE(UNKNOWNKERNELTYPE)", f"getfat cannot identify the file (arch {arch!r}, "
                              f"type {kind!r}); it is not a SPICE kernel")
    return arch.strip(), kind.strip()


def et_to_datetime(et: float) -> datetime:
    """UTC datetime (microsecond precision) of TDB seconds past J2000; needs an LSK in the pool."""
    iso = spiceypy.et2utc(float(et), "ISOC", 6)
    if iso[17:19] == "60":  # inside a leap second: datetime cannot express it
        iso = iso[:17] + "59.999999"
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def datetime_to_et(t: datetime) -> float:
    """TDB seconds past J2000 of a tz-aware UTC datetime; needs an LSK in the pool."""
    if t.tzinfo is None:
        raise ValueError("times must be timezone-aware (UTC)")
    return float(spiceypy.str2et(t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")))


def window_intervals(window: spiceypy.utils.support_types.SpiceCell) -> list[tuple[float, float]]:
    """The ``(start, end)`` TDB pairs of a SPICE window."""
    return [tuple(spiceypy.wnfetd(window, i)) for i in range(spiceypy.wncard(window))]  # type: ignore[misc]


def _utc_intervals(window: spiceypy.utils.support_types.SpiceCell) -> list[Interval]:
    return [Interval(et_to_datetime(a), et_to_datetime(b)) for a, b in window_intervals(window)]


def loaded_files(kind: str) -> list[str]:
    """Files of a SPICE kind (``SPK``, ``CK``, ``TEXT``, ``META``, ``ALL``...) loaded in the pool, in load order."""
    return [spiceypy.kdata(i, kind)[0] for i in range(spiceypy.ktotal(kind))]


def spk_coverage_et(body: int, files: Sequence[str] | None = None) -> list[tuple[float, float]]:
    """Union of ``body``'s coverage (TDB pairs) over ``files`` (default: every loaded SPK)."""
    cover = spiceypy.cell_double(2 * _MAX_INTERVALS)
    for f in loaded_files("SPK") if files is None else files:
        spiceypy.spkcov(f, body, cover)
    return window_intervals(cover)


def _check_daf(path: Path) -> None:
    """Read the last word of every segment of a loaded DAF, and check the file holds all its records."""
    handle = next(h for f, _, _, h in (spiceypy.kdata(i, "ALL") for i in range(spiceypy.ktotal("ALL")))
                  if Path(f) == path)
    nd, ni, _, _, _, free = spiceypy.dafrfr(handle)
    size = path.stat().st_size
    if (free - 1) * 8 > size:
        raise KernelLoadError(path, "SDC(TRUNCATEDDAF)", f"the file record says the DAF holds {(free - 1) * 8} "
                              f"bytes of data but the file is {size} bytes long: it is truncated")
    spiceypy.dafbfs(handle)
    while spiceypy.daffna():
        _, ints = spiceypy.dafus(spiceypy.dafgs(), nd, ni)
        end = int(ints[ni - 1])
        spiceypy.dafgda(handle, end, end)


def inspect_kernel(path: str | Path, *, support: Sequence[str | Path] = ()) -> KernelInfo:
    """Load-test a kernel and read its coverage.

    ``support`` kernels load first: an LSK (always needed to express coverage in UTC) and, for a
    CK, the spacecraft's SCLK. SPK coverage: ``spkobj`` + ``spkcov`` per body; CK coverage:
    ``ckobj`` + ``ckcov`` per frame (interval level, zero tolerance, TDB, angular velocity not
    required). Any SPICE failure (corrupt, truncated, unreadable, not a kernel) raises
    :class:`KernelLoadError`.
    """
    p = Path(path)
    arch, kind = file_type(p)
    coverage: dict[int, list[Interval]] = {}
    with kernel_pool([*support, p]):
        try:
            if arch == "DAF":
                _check_daf(p)
            if kind == "SPK":
                for body in spiceypy.spkobj(str(p)):
                    coverage[int(body)] = _utc_intervals(spiceypy.spkcov(str(p), int(body)))
            elif kind == "CK":
                for frame in spiceypy.ckobj(str(p)):
                    window = spiceypy.ckcov(str(p), int(frame), False, "INTERVAL", 0.0, "TDB")
                    coverage[int(frame)] = _utc_intervals(window)
        except SpiceyError as exc:
            raise KernelLoadError.from_spice(p, exc) from exc
    return KernelInfo(arch, kind, coverage)
