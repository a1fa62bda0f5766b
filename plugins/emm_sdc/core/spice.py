"""SPICE kernel loading and inspection with spiceypy (no Airflow).

SPICE's kernel pool is process-global: :func:`kernel_pool` clears it, loads the given
kernels in order and always clears it again, so one task's kernels never leak into the
next task run in the same process. SPICE errors become :class:`KernelLoadError` naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np
import spiceypy
from spiceypy.utils.exceptions import SpiceyError

_MAX_INTERVALS = 100_000

# NAIF's LSK constants and leap-second table, as in naif0012.tls (TAI - UTC = 37 s since 2017-01-01).
# Used only when no LSK is loaded (and by the synthetic LSK writer); a loaded LSK always wins.
J2000_UTC: Final = datetime(2000, 1, 1, 12, tzinfo=UTC)
DELTET_DELTA_T_A: Final = 32.184
DELTET_K: Final = 1.657e-3
DELTET_EB: Final = 1.671e-2
DELTET_M: Final = (6.239996, 1.99096871e-7)
#: (TAI - UTC in seconds, UTC date it starts).
LEAP_SECONDS: Final = (
    (10, date(1972, 1, 1)), (11, date(1972, 7, 1)), (12, date(1973, 1, 1)), (13, date(1974, 1, 1)),
    (14, date(1975, 1, 1)), (15, date(1976, 1, 1)), (16, date(1977, 1, 1)), (17, date(1978, 1, 1)),
    (18, date(1979, 1, 1)), (19, date(1980, 1, 1)), (20, date(1981, 7, 1)), (21, date(1982, 7, 1)),
    (22, date(1983, 7, 1)), (23, date(1985, 7, 1)), (24, date(1988, 1, 1)), (25, date(1990, 1, 1)),
    (26, date(1991, 1, 1)), (27, date(1992, 7, 1)), (28, date(1993, 7, 1)), (29, date(1994, 7, 1)),
    (30, date(1996, 1, 1)), (31, date(1997, 7, 1)), (32, date(1999, 1, 1)), (33, date(2006, 1, 1)),
    (34, date(2009, 1, 1)), (35, date(2012, 7, 1)), (36, date(2015, 7, 1)), (37, date(2017, 1, 1)),
)
_BUILTIN_TABLE = np.array([[n, (datetime(d.year, d.month, d.day, tzinfo=UTC) - J2000_UTC).total_seconds()]
                           for n, d in LEAP_SECONDS])


def utc_seconds(times: Sequence[datetime]) -> np.ndarray:
    """UTC seconds past J2000 (2000-01-01T12:00Z) with 86400 s days, as SPICE's ``UTC`` epochs;
    naive datetimes are taken as UTC."""
    return np.array([((t if t.tzinfo else t.replace(tzinfo=UTC)) - J2000_UTC).total_seconds() for t in times],
                    dtype=float)


def deltet_utc(utc: np.ndarray, *, pool: bool = True) -> np.ndarray:
    """ET - UTC at UTC epochs (seconds past J2000): SPICE's ``deltet(.., "UTC")``, what ``str2et`` uses,
    in numpy. Constants come from the LSK in the kernel pool, or with ``pool=False`` (or no LSK
    loaded) from the built-in table above."""
    if pool and spiceypy.expool("DELTET/DELTA_AT"):
        delta_t_a = spiceypy.gdpool("DELTET/DELTA_T_A", 0, 1)[0]
        k = spiceypy.gdpool("DELTET/K", 0, 1)[0]
        eb = spiceypy.gdpool("DELTET/EB", 0, 1)[0]
        m0, m1 = spiceypy.gdpool("DELTET/M", 0, 2)
        table = np.asarray(spiceypy.gdpool("DELTET/DELTA_AT", 0, 1000)).reshape(-1, 2)
    else:
        delta_t_a, k, eb, (m0, m1), table = DELTET_DELTA_T_A, DELTET_K, DELTET_EB, DELTET_M, _BUILTIN_TABLE
    utc = np.asarray(utc, dtype=float)
    idx = np.searchsorted(table[:, 1], utc, side="right") - 1
    dta = np.where(idx >= 0, table[np.clip(idx, 0, None), 0], table[0, 0] - 1)
    m = m0 + m1 * (utc + dta + delta_t_a)
    return dta + delta_t_a + k * np.sin(m + eb * np.sin(m))


def utc_to_et(times: Sequence[datetime], *, pool: bool = True) -> np.ndarray:
    """TDB seconds past J2000 of UTC datetimes (as ``str2et``), vectorised; see :func:`deltet_utc`."""
    utc = utc_seconds(times)
    return utc + deltet_utc(utc, pool=pool)


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


def et_to_datetime(et: float, *, pool: bool = True) -> datetime:
    """UTC datetime (microseconds) of TDB seconds past J2000: ``et2utc`` with the LSK in the pool, or
    the built-in leap-second table when none is loaded (or ``pool=False``)."""
    if pool and spiceypy.expool("DELTET/DELTA_AT"):
        iso = spiceypy.et2utc(float(et), "ISOC", 6)
        if iso[17:19] == "60":  # inside a leap second: datetime cannot express it
            iso = iso[:17] + "59.999999"
        return datetime.fromisoformat(iso).replace(tzinfo=UTC)
    utc = float(et) - 69.184
    for _ in range(3):  # fixed point of utc + deltet(utc) = et
        utc = float(et) - float(deltet_utc(np.array([utc]), pool=False)[0])
    return J2000_UTC + timedelta(microseconds=round(utc * 1e6))


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

    ``support`` kernels load first: an LSK (to express coverage in UTC; without one, the built-in
    leap-second table is used) and, for a CK, the spacecraft's SCLK (required). DAF kernels must
    hold every record their file record promises, and the last word of each segment is read.
    SPK coverage: ``spkobj`` + ``spkcov`` per body; CK coverage: ``ckobj`` + ``ckcov`` per frame
    (interval level, zero tolerance, TDB, angular velocity not required). Any SPICE failure
    (corrupt, truncated, unreadable, not a kernel) raises :class:`KernelLoadError`.
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
