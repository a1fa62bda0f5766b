"""SPICE kernel loading and inspection with spiceypy (no Airflow).

SPICE's kernel pool is process-global: :func:`kernel_pool` clears it, loads the given
kernels in order and always clears it again, so one task's kernels never leak into the
next task run in the same process. SPICE errors become :class:`KernelLoadError` naming the file.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import spiceypy
from spiceypy import cyice
from spiceypy.utils.exceptions import SpiceyError

log = logging.getLogger(__name__)

_MAX_INTERVALS = 100_000

#: SPICE's J2000 epoch as a UTC instant: ``deltet`` takes UTC epochs as seconds past it, 86,400 s a day.
J2000_UTC: Final = datetime(2000, 1, 1, 12, tzinfo=UTC)


def utc_seconds(times: Sequence[datetime]) -> np.ndarray:
    """UTC seconds past J2000 (2000-01-01T12:00Z) with 86400 s days, the ``UTC`` epochs SPICE's ``deltet``
    takes; naive datetimes are taken as UTC."""
    return np.array([((t if t.tzinfo else t.replace(tzinfo=UTC)) - J2000_UTC).total_seconds() for t in times],
                    dtype=float)


def has_lsk() -> bool:
    """Whether the kernel pool holds a leap-second kernel's table (``DELTET/DELTA_AT``)."""
    return bool(spiceypy.expool("DELTET/DELTA_AT"))


def utc_to_et(times: Sequence[datetime]) -> np.ndarray:
    """TDB seconds past J2000 of UTC datetimes, as ``str2et``: ``UTC + deltet(UTC)`` (``cyice.deltet_v``) with
    the LSK in the kernel pool. Raises ``SpiceyError`` (``SPICE(KERNELVARNOTFOUND)``) when no LSK is loaded."""
    utc = utc_seconds(times)
    return utc + cyice.deltet_v(utc, "UTC")


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
    SPK body or CK frame ID (empty for text kernels), in ``time_scale``: ``UTC`` (an LSK was loaded)
    or ``TDB`` (none was: the intervals are TDB calendar times, ~69 s after UTC since 2017)."""

    arch: str
    kind: str
    coverage: dict[int, list[Interval]] = field(default_factory=dict)
    time_scale: str = "UTC"


def _reset_error_state() -> None:
    """Make SPICE errors raise (RETURN mode, spiceypy's default) and clear any pending error."""
    if spiceypy.erract("GET", 16).strip().upper() != "RETURN":
        spiceypy.erract("SET", 16, "RETURN")
    spiceypy.reset()


@contextmanager
def kernel_pool(paths: Sequence[str | Path]) -> Iterator[None]:
    """Load ``paths`` in order into a cleared kernel pool; clear it again on exit, whatever happens.

    Raises :class:`KernelLoadError` naming the first kernel that fails to load (the pool is left cleared).
    Not re-entrant: a nested ``kernel_pool`` (or :func:`inspect_kernel`, ``compute_geometry``) empties the outer one.
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
        raise KernelLoadError(p, "SDC(FILENOTFOUND)" if not p.exists() else "SDC(EMPTYFILE)",
                              "the file is missing or empty")
    _reset_error_state()
    try:
        arch, kind = spiceypy.getfat(str(p))
    except SpiceyError as exc:
        raise KernelLoadError.from_spice(p, exc) from exc
    if arch.strip() in ("?", "") or kind.strip() in ("?", ""):
        raise KernelLoadError(p, "SDC(UNKNOWNKERNELTYPE)", f"getfat cannot identify the file (arch {arch!r}, "
                              f"type {kind!r}); it is not a SPICE kernel")
    return arch.strip(), kind.strip()


def et_to_datetime(et: float) -> datetime:
    """UTC datetime (microseconds) of TDB seconds past J2000: ``et2utc`` with the LSK in the kernel pool
    (a time inside a leap second becomes 23:59:59.999999). Raises ``SpiceyError`` when no LSK is loaded."""
    iso = spiceypy.et2utc(float(et), "ISOC", 6)
    if iso[17:19] == "60":  # inside a leap second: datetime cannot express it
        iso = iso[:17] + "59.999999"
    return datetime.fromisoformat(iso).replace(tzinfo=UTC)


def et_to_tdb_datetime(et: float) -> datetime:
    """TDB seconds past J2000 as a datetime on the TDB calendar (J2000 is 2000-01-01T12:00 TDB; days of
    86,400 s, as ``etcal``): no kernel needed, tagged UTC but ~69 s ahead of it since 2017."""
    return J2000_UTC + timedelta(microseconds=round(float(et) * 1e6))


def window_intervals(window: spiceypy.utils.support_types.SpiceCell) -> list[tuple[float, float]]:
    """The ``(start, end)`` TDB pairs of a SPICE window."""
    return [tuple(spiceypy.wnfetd(window, i)) for i in range(spiceypy.wncard(window))]  # type: ignore[misc]


def _intervals(window: spiceypy.utils.support_types.SpiceCell) -> list[Interval]:
    """A window's intervals in UTC (LSK loaded) or else on the TDB calendar."""
    convert = et_to_datetime if has_lsk() else et_to_tdb_datetime
    return [Interval(convert(a), convert(b)) for a, b in window_intervals(window)]


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

    ``support`` kernels load first: an LSK (to express coverage in UTC; without one, coverage is on
    the TDB calendar, ``time_scale="TDB"``, and a warning is logged) and, for a CK, the spacecraft's
    SCLK (required). DAF kernels must
    hold every record their file record promises, and the last word of each segment is read.
    SPK coverage: ``spkobj`` + ``spkcov`` per body; CK coverage: ``ckobj`` + ``ckcov`` per frame
    (interval level, zero tolerance, TDB, angular velocity not required). Any SPICE failure
    (corrupt, truncated, unreadable, not a kernel) raises :class:`KernelLoadError`.
    """
    p = Path(path)
    arch, kind = file_type(p)
    coverage: dict[int, list[Interval]] = {}
    with kernel_pool([*support, p]):
        time_scale = "UTC" if has_lsk() else "TDB"
        try:
            if arch == "DAF":
                _check_daf(p)
            if kind == "SPK":
                for body in spiceypy.spkobj(str(p)):
                    coverage[int(body)] = _intervals(spiceypy.spkcov(str(p), int(body)))
            elif kind == "CK":
                for frame in spiceypy.ckobj(str(p)):
                    window = spiceypy.ckcov(str(p), int(frame), False, "INTERVAL", 0.0, "TDB")
                    coverage[int(frame)] = _intervals(window)
        except SpiceyError as exc:
            raise KernelLoadError.from_spice(p, exc) from exc
    if coverage and time_scale == "TDB":
        log.warning("%s: no LSK loaded, so its coverage is given on the TDB calendar (not UTC)", p)
    return KernelInfo(arch, kind, coverage, time_scale)
