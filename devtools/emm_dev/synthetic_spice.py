"""Synthetic SPICE kernels: what the MOC's kernel deliveries stand in for in tests and demos.

Plain Python (no Airflow, no network). Everything is computed here from published constants:

* :func:`write_lsk` — the NAIF leap-second kernel (the ``naif0012.tls`` table, 37 s since 2017-01-01).
* :func:`write_pck` — Mars (499) radii and IAU 2009 rotation (``pck00010`` values).
* :func:`write_sclk` — a linear Hope (-62) clock: 65536 ticks per second since 2000-01-01.
* :func:`write_planets_spk` — stands in for a DE planetary ephemeris: the Mars barycentre (4)
  relative to the Sun (10) from Standish's J2000 mean elements and rates (Keplerian orbit with
  linearly varying elements, "Keplerian elements for approximate positions of the major
  planets", JPL), plus the Sun (10) at the solar-system barycentre (0) and Mars (499) at its
  barycentre (4), so every SPICE chain a DE gives (Sun from Mars, Mars from the SSB) works.
* :func:`write_hope_spk` — Hope (-62) relative to Mars (499): a two-body Keplerian science
  orbit (periapsis altitude 20,000 km, 55 h period so periapsis falls at every
  :func:`emm_dev.synthetic.orbit_start`, 25 deg inclination to Mars' equator).
  :func:`hope_state` is the same orbit in pure numpy, for independent checks.
* :func:`write_hope_ck` — nadir-pointing attitude of frame -62000 relative to J2000 (type 3 CK).
* :func:`kernel_delivery` — a delivery with EMM kernel names (``core/kernels.py``) and md5sum sidecars.

Writers leave SPICE's (process-global) kernel pool as they found it: times are converted by SPICE
itself (:func:`utc_to_et`, :func:`et_to_utc`) with this module's LSK put into the pool for the call
and the pool's own ``DELTET/*`` values put back afterwards. The same arguments always write
byte-identical files.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final

import numpy as np
import spiceypy

from emm_dev.synthetic import ORBIT_EPOCH, ORBIT_PERIOD, Delivered
from emm_sdc.core import checksums, kernels, naming, spice

# --------------------------------------------------------------------------- time

#: The leap-second kernel :func:`write_lsk` writes: NAIF's LSK constants and leap-second table, as in
#: naif0012.tls (TAI - UTC = 37 s since 2017-01-01). (TAI - UTC in seconds, UTC date it starts.)
LEAP_SECONDS: Final = (
    (10, date(1972, 1, 1)), (11, date(1972, 7, 1)), (12, date(1973, 1, 1)), (13, date(1974, 1, 1)),
    (14, date(1975, 1, 1)), (15, date(1976, 1, 1)), (16, date(1977, 1, 1)), (17, date(1978, 1, 1)),
    (18, date(1979, 1, 1)), (19, date(1980, 1, 1)), (20, date(1981, 7, 1)), (21, date(1982, 7, 1)),
    (22, date(1983, 7, 1)), (23, date(1985, 7, 1)), (24, date(1988, 1, 1)), (25, date(1990, 1, 1)),
    (26, date(1991, 1, 1)), (27, date(1992, 7, 1)), (28, date(1993, 7, 1)), (29, date(1994, 7, 1)),
    (30, date(1996, 1, 1)), (31, date(1997, 7, 1)), (32, date(1999, 1, 1)), (33, date(2006, 1, 1)),
    (34, date(2009, 1, 1)), (35, date(2012, 7, 1)), (36, date(2015, 7, 1)), (37, date(2017, 1, 1)),
)
_MONTHS: Final = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
#: The LSK's data lines (between ``\\begindata`` and ``\\begintext``).
LSK_DATA: Final = (
    "DELTET/DELTA_T_A       =   32.184",
    "DELTET/K               =    1.657D-3",
    "DELTET/EB              =    1.671D-2",
    "DELTET/M               = (  6.239996D0   1.99096871D-7 )",
    "",
    "DELTET/DELTA_AT        = (",
    *(f"                           {n:2d}, @{d.year}-{_MONTHS[d.month - 1]}-{d.day}{' )' * (d == LEAP_SECONDS[-1][1])}"
      for n, d in LEAP_SECONDS),
)
_LSK_VARIABLES: Final = ("DELTET/DELTA_T_A", "DELTET/K", "DELTET/EB", "DELTET/M", "DELTET/DELTA_AT")


@contextmanager
def _this_lsk() -> Iterator[None]:
    """This module's LSK in SPICE's kernel pool for the duration; the ``DELTET/*`` values the pool held
    before (or their absence) are restored afterwards, whatever else the pool holds."""
    saved: dict[str, list[float] | None] = {}
    for name in _LSK_VARIABLES:
        saved[name] = list(spiceypy.gdpool(name, 0, spiceypy.dtpool(name)[0])) if spiceypy.expool(name) else None
    spiceypy.lmpool(list(LSK_DATA))
    try:
        yield
    finally:
        for name, values in saved.items():
            if values is None:
                spiceypy.dvpool(name)
            else:
                spiceypy.pdpool(name, values)


def utc_to_et(times: datetime | Sequence[datetime]) -> np.ndarray:
    """TDB seconds past J2000 of UTC ``times`` (as ``str2et`` with the LSK :func:`write_lsk` writes)."""
    seq = [times] if isinstance(times, datetime) else list(times)
    if any(t.tzinfo is None for t in seq):
        raise ValueError("times must be timezone-aware (UTC)")
    with _this_lsk():
        return spice.utc_to_et(seq)


def et_to_utc(et: float) -> datetime:
    """UTC datetime (microseconds) of TDB seconds past J2000 — the inverse of :func:`utc_to_et`."""
    with _this_lsk():
        return spice.et_to_datetime(et)


# --------------------------------------------------------------------------- text kernels

MARS_RADII_KM: Final = (3396.19, 3396.19, 3376.20)
MARS_GM: Final = 42828.37  # km^3 s^-2
SUN_GM: Final = 132712440041.9394  # km^3 s^-2
MARS_POLE_RA: Final = (317.68143, -0.1061, 0.0)  # deg, deg/century
MARS_POLE_DEC: Final = (52.88650, -0.0609, 0.0)
MARS_PM: Final = (176.630, 350.89198226, 0.0)  # deg, deg/day
#: Hope's clock: SCLK ticks are 1/65536 s counted from this TDB epoch (2000-01-01T00:00:00 UTC to 0.1 ms).
SCLK_EPOCH_ET: Final = -43135.816
SCLK_TICKS_PER_S: Final = 65536


def _fmt(values: Sequence[float]) -> str:
    return " ".join(f"{v!r}" for v in values)


def write_lsk(path: str | Path) -> Path:
    """Write a NAIF leap-second kernel with the published table (as in ``naif0012.tls``)."""
    data = "\n".join(LSK_DATA)
    text = f"""KPL/LSK

EMM SDC synthetic leap-second kernel: the NAIF LSK constants and the leap-second
table up to 2017-01-01 (TAI - UTC = 37 s), as published in naif0012.tls.

\\begindata

{data}

\\begintext
"""
    return _write_text(path, text)


def write_pck(path: str | Path) -> Path:
    """Write a text PCK with Mars' radii, GM and IAU 2009 rotation (``pck00010``), and the Sun's GM."""
    text = f"""KPL/PCK

EMM SDC synthetic planetary constants: Mars (499) shape and rotation from the
IAU WGCCRE 2009 report (the values in NAIF's pck00010.tpc), GMs in km^3/s^2.

\\begindata

BODY499_RADII     = ( {_fmt(MARS_RADII_KM)} )
BODY499_POLE_RA   = ( {_fmt(MARS_POLE_RA)} )
BODY499_POLE_DEC  = ( {_fmt(MARS_POLE_DEC)} )
BODY499_PM        = ( {_fmt(MARS_PM)} )
BODY499_GM        = ( {MARS_GM!r} )
BODY10_GM         = ( {SUN_GM!r} )

\\begintext
"""
    return _write_text(path, text)


def write_sclk(path: str | Path) -> Path:
    """Write a linear type 1 SCLK for Hope (-62): ``<seconds>.<1/65536 s>`` since 2000-01-01."""
    end = float(2**32 * SCLK_TICKS_PER_S)
    text = f"""KPL/SCLK

EMM SDC synthetic spacecraft clock for Hope (-62): two fields (seconds, 1/65536 s),
counting from TDB {SCLK_EPOCH_ET} s past J2000 (2000-01-01T00:00:00 UTC), no drift.

\\begindata

SCLK_KERNEL_ID           = ( @2021-01-01/00:00:00 )
SCLK_DATA_TYPE_62        = ( 1 )
SCLK01_TIME_SYSTEM_62    = ( 1 )
SCLK01_N_FIELDS_62       = ( 2 )
SCLK01_MODULI_62         = ( 4294967296 {SCLK_TICKS_PER_S} )
SCLK01_OFFSETS_62        = ( 0 0 )
SCLK01_OUTPUT_DELIM_62   = ( 1 )
SCLK_PARTITION_START_62  = ( 0.0 )
SCLK_PARTITION_END_62    = ( {end!r} )
SCLK01_COEFFICIENTS_62   = ( 0.0  {SCLK_EPOCH_ET!r}  1.0 )

\\begintext
"""
    return _write_text(path, text)


def et_to_sclk_ticks(et: np.ndarray | float) -> np.ndarray:
    """Encoded (continuous) SCLK ticks of TDB epochs for the clock :func:`write_sclk` writes."""
    return (np.asarray(et, dtype=float) - SCLK_EPOCH_ET) * SCLK_TICKS_PER_S


def sclk_ticks_to_et(ticks: np.ndarray | float) -> np.ndarray:
    return np.asarray(ticks, dtype=float) / SCLK_TICKS_PER_S + SCLK_EPOCH_ET


def _write_text(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# --------------------------------------------------------------------------- orbits

AU_KM: Final = 149597870.7
OBLIQUITY_J2000_DEG: Final = 84381.448 / 3600.0  # SPICE's ECLIPJ2000
#: Standish's J2000 mean elements of Mars and their rates per Julian century (1800-2050 fit):
#: a (AU), e, I, L, long. perihelion, long. node (deg), ecliptic and equinox of J2000.
MARS_ELEMENTS: Final = {
    "a": (1.52371034, 0.00001847), "e": (0.09339410, 0.00007882), "I": (1.84969142, -0.00813131),
    "L": (-4.55343205, 19140.30268499), "varpi": (-23.94362959, 0.44441088), "node": (49.55953891, -0.29257343),
}
PLANETS_START: Final = datetime(2019, 1, 1, tzinfo=UTC)
PLANETS_END: Final = datetime(2035, 1, 1, tzinfo=UTC)

HOPE_ID: Final = kernels.HOPE_ID
HOPE_CK_FRAME: Final = kernels.HOPE_CK_FRAME
HOPE_PERIAPSIS_ALT_KM: Final = 20000.0
HOPE_INCLINATION_DEG: Final = 25.0
HOPE_NODE_DEG: Final = 0.0  # ascending node on Mars' equator, from the equator's node on the J2000 equator
HOPE_ARG_PERIAPSIS_DEG: Final = 0.0  # periapsis at the ascending node: over the equator
HOPE_PERIOD_S: Final = ORBIT_PERIOD.total_seconds()
HOPE_MEAN_MOTION: Final = 2 * np.pi / HOPE_PERIOD_S
HOPE_SMA_KM: Final = float((MARS_GM / HOPE_MEAN_MOTION**2) ** (1 / 3))
HOPE_PERIAPSIS_KM: Final = MARS_RADII_KM[0] + HOPE_PERIAPSIS_ALT_KM
HOPE_ECCENTRICITY: Final = 1 - HOPE_PERIAPSIS_KM / HOPE_SMA_KM
HOPE_APOAPSIS_ALT_KM: Final = HOPE_SMA_KM * (1 + HOPE_ECCENTRICITY) - MARS_RADII_KM[0]
#: TDB of orbit 0000's periapsis; orbit n's periapsis is n periods (of TDB) later, which is
#: synthetic.orbit_start(n) to within 3 ms (the periodic part of TDB - UTC).
HOPE_PERIAPSIS_ET: Final = float(utc_to_et(ORBIT_EPOCH)[0])


def _kepler(mean_anomaly: np.ndarray, e: np.ndarray | float) -> np.ndarray:
    """Eccentric anomaly (Newton's method on Kepler's equation, elliptic orbits)."""
    m = np.remainder(mean_anomaly + np.pi, 2 * np.pi) - np.pi
    ecc = m + e * np.sin(m)
    for _ in range(50):
        step = (ecc - e * np.sin(ecc) - m) / (1 - e * np.cos(ecc))
        ecc = ecc - step
        if np.all(np.abs(step) < 1e-15):
            break
    return ecc


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def mars_pole(et: float) -> np.ndarray:
    """Unit vector (J2000) of Mars' north pole at TDB ``et`` (IAU formula, PCK constants above)."""
    t = et / (36525 * 86400.0)
    ra = np.radians(MARS_POLE_RA[0] + MARS_POLE_RA[1] * t)
    dec = np.radians(MARS_POLE_DEC[0] + MARS_POLE_DEC[1] * t)
    return np.array([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def hope_orbit_matrix() -> np.ndarray:
    """Rotation from Hope's perifocal frame to J2000.

    The orbit is defined in the frame of Mars' equator at orbit 0000's periapsis: z = Mars' pole,
    x = the ascending node of Mars' equator on the J2000 equator (the IAU ``Q`` point). Mars' pole
    moves ~0.1 deg per century, so the inclination to the current equator stays 25 deg.
    """
    pole = mars_pole(HOPE_PERIAPSIS_ET)
    x = np.cross([0.0, 0.0, 1.0], pole)
    x /= np.linalg.norm(x)
    equator = np.column_stack([x, np.cross(pole, x), pole])
    return (equator @ _rot_z(np.radians(HOPE_NODE_DEG)) @ _rot_x(np.radians(HOPE_INCLINATION_DEG))
            @ _rot_z(np.radians(HOPE_ARG_PERIAPSIS_DEG)))


def hope_state(et: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Hope's position (km) and velocity (km/s) relative to Mars in J2000 at TDB ``et`` (shape (n, 3)).

    Two-body Keplerian orbit solved with numpy (no SPICE): the trajectory :func:`write_hope_spk` samples.
    """
    t = np.atleast_1d(np.asarray(et, dtype=float))
    a, e = HOPE_SMA_KM, HOPE_ECCENTRICITY
    ecc = _kepler(HOPE_MEAN_MOTION * (t - HOPE_PERIAPSIS_ET), e)
    cos_e, sin_e = np.cos(ecc), np.sin(ecc)
    b = a * np.sqrt(1 - e * e)
    edot = HOPE_MEAN_MOTION / (1 - e * cos_e)
    pf_pos = np.column_stack([a * (cos_e - e), b * sin_e, np.zeros_like(t)])
    pf_vel = np.column_stack([-a * sin_e * edot, b * cos_e * edot, np.zeros_like(t)])
    rot = hope_orbit_matrix()
    return pf_pos @ rot.T, pf_vel @ rot.T


def mars_heliocentric(et: np.ndarray | float) -> np.ndarray:
    """Mars' (barycentre's) heliocentric position (km, J2000) from Standish's mean elements and rates."""
    t = np.atleast_1d(np.asarray(et, dtype=float)) / (36525 * 86400.0)
    el = {k: v0 + v1 * t for k, (v0, v1) in MARS_ELEMENTS.items()}
    a, e = el["a"] * AU_KM, el["e"]
    inc, node, varpi = np.radians(el["I"]), np.radians(el["node"]), np.radians(el["varpi"])
    ecc = _kepler(np.radians(el["L"]) - varpi, e)
    xp, yp = a * (np.cos(ecc) - e), a * np.sqrt(1 - e * e) * np.sin(ecc)
    w = varpi - node
    cw, sw, co, so, ci, si = np.cos(w), np.sin(w), np.cos(node), np.sin(node), np.cos(inc), np.sin(inc)
    ecl = np.column_stack([
        (cw * co - sw * so * ci) * xp + (-sw * co - cw * so * ci) * yp,
        (cw * so + sw * co * ci) * xp + (-sw * so + cw * co * ci) * yp,
        (sw * si) * xp + (cw * si) * yp,
    ])
    return ecl @ _rot_x(np.radians(OBLIQUITY_J2000_DEG)).T


def _mars_states(et: np.ndarray) -> np.ndarray:
    h = 60.0  # central difference: velocity consistent with the slowly varying elements
    vel = (mars_heliocentric(et + h) - mars_heliocentric(et - h)) / (2 * h)
    return np.hstack([mars_heliocentric(et), vel])


# --------------------------------------------------------------------------- binary kernels


def _epochs(et0: float, et1: float, step_s: float) -> np.ndarray:
    if not et1 > et0:
        raise ValueError("kernel coverage must end after it starts")
    n = max(int(np.ceil((et1 - et0) / step_s)), 1)
    return np.append(et0 + step_s * np.arange(n), et1)


def _new_daf(path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.unlink(missing_ok=True)
    return p


def _comments(handle: int, lines: Sequence[str]) -> None:
    spiceypy.dafac(handle, list(lines))


def write_planets_spk(path: str | Path, start: datetime = PLANETS_START, end: datetime = PLANETS_END,
                      *, step_s: float = 86400.0) -> Path:
    """Write the planetary SPK: Sun (10) wrt SSB (0), Mars barycentre (4) wrt Sun, Mars (499) wrt 4.

    The Sun is held at the barycentre and Mars at its system barycentre (zero offsets); Mars'
    heliocentric orbit is Standish's approximate one (arcminute-level), sampled every ``step_s``
    in a Hermite (type 13) segment.
    """
    p = _new_daf(path)
    et0, et1 = (float(x) for x in utc_to_et([start, end]))
    ets = _epochs(et0, et1, step_s)
    zero = np.zeros((2, 6))
    handle = spiceypy.spkopn(str(p), "EMM SDC PLANETS", 1024)
    try:
        _comments(handle, ["EMM SDC synthetic planetary ephemeris (stands in for a JPL DE kernel).",
                           "Mars barycentre (4) wrt Sun (10): Standish J2000 mean elements and rates.",
                           "Sun (10) at the solar-system barycentre (0); Mars (499) at its barycentre (4)."])
        spiceypy.spkw08(handle, 10, 0, "J2000", et0, et1, "SUN AT SSB", 1, 2, zero, et0, et1 - et0)
        spiceypy.spkw13(handle, 4, 10, "J2000", et0, et1, "MARS BARYCENTER STANDISH", 7, len(ets),
                        _mars_states(ets), ets)
        spiceypy.spkw08(handle, 499, 4, "J2000", et0, et1, "MARS AT MARS BARYCENTER", 1, 2, zero, et0, et1 - et0)
    finally:
        spiceypy.spkcls(handle)
    return p


def write_hope_spk(path: str | Path, start: datetime, end: datetime, *, step_s: float = 600.0,
                   shift_km: Sequence[float] = (0.0, 0.0, 0.0), segment_id: str = "EMM HOPE SYNTHETIC") -> Path:
    """Write Hope (-62) relative to Mars (499), J2000, from :func:`hope_state`, covering exactly [start, end].

    ``shift_km`` adds a constant J2000 offset (to tell kernels apart in load-order tests).
    Type 13 (Hermite, degree 7) with samples every ``step_s``: interpolation error is below 1 mm.
    """
    p = _new_daf(path)
    et0, et1 = (float(x) for x in utc_to_et([start, end]))
    ets = _epochs(et0, et1, step_s)
    pos, vel = hope_state(ets)
    states = np.hstack([pos + np.asarray(shift_km, dtype=float), vel])
    handle = spiceypy.spkopn(str(p), "EMM SDC HOPE SPK", 1024)
    try:
        _comments(handle, ["EMM SDC synthetic Hope trajectory: two-body orbit about Mars,",
                           f"periapsis altitude {HOPE_PERIAPSIS_ALT_KM:.0f} km, period {HOPE_PERIOD_S:.0f} s, "
                           f"inclination {HOPE_INCLINATION_DEG:.0f} deg to Mars' equator."])
        spiceypy.spkw13(handle, HOPE_ID, kernels.MARS_ID, "J2000", et0, et1, segment_id, 7, len(ets), states, ets)
    finally:
        spiceypy.spkcls(handle)
    return p


def quaternions(m: np.ndarray) -> np.ndarray:
    """SPICE-style quaternions (scalar first, as ``m2q``) of rotation matrices (n, 3, 3), Shepperd's method."""
    tr = np.trace(m, axis1=1, axis2=2)
    d = m[:, [0, 1, 2], [0, 1, 2]]
    case = np.argmax(np.column_stack([tr, d]), axis=1)
    a = (m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1])  # antisymmetric parts
    b = (m[:, 0, 1] + m[:, 1, 0], m[:, 0, 2] + m[:, 2, 0], m[:, 1, 2] + m[:, 2, 1])  # symmetric parts
    q = np.empty((len(m), 4))
    with np.errstate(divide="ignore", invalid="ignore"):
        s = 2 * np.sqrt(np.maximum(1 + np.column_stack([tr, 2 * d[:, 0] - tr, 2 * d[:, 1] - tr, 2 * d[:, 2] - tr]),
                                   0.0))
        rows = [np.column_stack([s[:, 0] / 4, a[0] / s[:, 0], a[1] / s[:, 0], a[2] / s[:, 0]]),
                np.column_stack([a[0] / s[:, 1], s[:, 1] / 4, b[0] / s[:, 1], b[1] / s[:, 1]]),
                np.column_stack([a[1] / s[:, 2], b[0] / s[:, 2], s[:, 2] / 4, b[2] / s[:, 2]]),
                np.column_stack([a[2] / s[:, 3], b[1] / s[:, 3], b[2] / s[:, 3], s[:, 3] / 4])]
    for k in range(4):
        q[case == k] = rows[k][case == k]
    return q * np.where(q[:, :1] < 0, -1.0, 1.0)


def write_hope_ck(path: str | Path, start: datetime, end: datetime, *, step_s: float = 600.0) -> Path:
    """Write a type 3 CK for frame -62000 relative to J2000: nadir pointing (+Z to Mars' centre,
    +Y along the orbit normal's opposite), one quaternion every ``step_s``; SCLK of :func:`write_sclk`."""
    p = _new_daf(path)
    et0, et1 = (float(x) for x in utc_to_et([start, end]))
    ets = _epochs(et0, et1, step_s)
    pos, vel = hope_state(ets)
    z = -pos / np.linalg.norm(pos, axis=1)[:, None]
    y = np.cross(z, vel)
    y /= np.linalg.norm(y, axis=1)[:, None]
    x = np.cross(y, z)
    cmat = np.stack([x, y, z], axis=1)  # rows: frame axes in J2000 (J2000 -> -62000)
    ticks = et_to_sclk_ticks(ets)
    handle = spiceypy.ckopn(str(p), "EMM SDC HOPE CK", 1024)
    try:
        _comments(handle, ["EMM SDC synthetic Hope attitude: nadir pointing, frame -62000 wrt J2000."])
        spiceypy.ckw03(handle, float(ticks[0]), float(ticks[-1]), HOPE_CK_FRAME, "J2000", False,
                       "EMM HOPE NADIR", len(ticks), ticks, quaternions(cmat), np.zeros((len(ticks), 3)),
                       1, np.array([ticks[0]]))
    finally:
        spiceypy.ckcls(handle)
    return p


# --------------------------------------------------------------------------- deliveries

GENERIC_NAMES: Final = {
    "lsk": "emm_lsk_naif0012_v01.tls",
    "pck": "emm_pck_mars_v01.tpc",
    "sclk": "emm_sclk_hope_v01.tsc",
    "pln": "emm_pln_kepler_v01.bsp",
}


def _covered_days(path: Path, kind: str) -> tuple[date, date]:
    """First and last UTC day of Hope's coverage in a written SPK/CK (read back with spkcov/ckcov)."""
    if kind == "spk":
        window = spiceypy.spkcov(str(path), HOPE_ID)
        first, last = spiceypy.wnfetd(window, 0)[0], spiceypy.wnfetd(window, spiceypy.wncard(window) - 1)[1]
    else:
        window = spiceypy.ckcov(str(path), HOPE_CK_FRAME, False, "INTERVAL", 0.0, "SCLK")
        ticks = spiceypy.wnfetd(window, 0)[0], spiceypy.wnfetd(window, spiceypy.wncard(window) - 1)[1]
        first, last = (float(sclk_ticks_to_et(t)) for t in ticks)
    return et_to_utc(first).date(), et_to_utc(last).date()


def _deliver(path: Path, kernel_type: str) -> Delivered:
    data = path.read_bytes()
    md5 = hashlib.md5(data).hexdigest()
    side = path.with_name(naming.sidecar_name(path.name))
    side.write_text(checksums.format_sidecar(md5, path.name))
    return Delivered(path.name, path, side, md5, len(data), "spice", kernel_type)


def kernel_delivery(out_dir: str | Path, *, start: datetime, end: datetime, spk_class: str = "r",
                    version: int = 1, generic: bool = True, spk: bool = True, ck: bool = False,
                    step_s: float = 600.0, shift_km: Sequence[float] = (0.0, 0.0, 0.0)) -> list[Delivered]:
    """Write a MOC-style kernel delivery flat into ``out_dir``, each file with an md5sum sidecar.

    Hope kernels (``spk``, and ``ck`` if asked) cover [start, end], are both class ``spk_class`` and
    version ``version``, sampled every ``step_s``; their names' dates are the first and last UTC
    day of the coverage read back from the written file. ``generic`` adds the LSK, PCK, SCLK and
    planetary SPK, always ``v01`` (their content does not depend on the arguments). Records are
    :class:`emm_dev.synthetic.Delivered` with ``instrument="spice"`` and ``level`` = kernel type.
    """
    if spk_class not in kernels.CLASS_ORDER:
        raise ValueError(f"spk_class must be one of {list(kernels.CLASS_ORDER)}, got {spk_class!r}")
    if start < PLANETS_START or end > PLANETS_END:
        raise ValueError(f"Hope coverage must lie within the planetary SPK's {PLANETS_START:%Y-%m-%d} to "
                         f"{PLANETS_END:%Y-%m-%d}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    delivered: list[Delivered] = []
    if generic:
        writers = {"lsk": write_lsk, "pck": write_pck, "sclk": write_sclk, "pln": write_planets_spk}
        for ktype, name in GENERIC_NAMES.items():
            delivered.append(_deliver(writers[ktype](out / name), ktype))
    for ktype, wanted in (("spk", spk), ("ck", ck)):
        if not wanted:
            continue
        tmp = out / f".{ktype}_{spk_class}_v{version:02d}.tmp"
        if ktype == "spk":
            write_hope_spk(tmp, start, end, step_s=step_s, shift_km=shift_km)
        else:
            write_hope_ck(tmp, start, end, step_s=step_s)
        first, last = _covered_days(tmp, ktype)
        name = kernels.KernelName(ktype, spk_class, version, kernels.TIME_BOUND[ktype], first, last).file_name
        delivered.append(_deliver(tmp.replace(out / name), ktype))
    return delivered


def install_kernels(delivered: Sequence[Delivered], kernel_dir: str | Path, *, version: int = 1) -> Path:
    """Copy delivered kernels into a kernel directory as the SDC keeps it (``<type>/<file>``) and write a
    meta-kernel for them with :func:`emm_sdc.core.kernels.meta_kernel_text` at ``mk/emm_meta_v<NNNN>.tm``;
    returns its path."""
    root = Path(kernel_dir)
    names = []
    for d in delivered:
        name = kernels.parse_kernel_name(d.file_name)
        dest = root / name.relative_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d.path, dest)
        names.append(name)
    mk = root / "mk" / kernels.meta_kernel_name(version)
    mk.parent.mkdir(parents=True, exist_ok=True)
    mk.write_text(kernels.meta_kernel_text(version, names, str(root)))
    return mk
