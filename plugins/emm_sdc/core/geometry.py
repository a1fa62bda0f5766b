"""EMM API geometry fields of products, computed with SPICE from a meta-kernel (no Airflow).

Fields (``catalog.GEOMETRY_FIELDS``), all at the product's UTC time:

==================  ========================================================================
``mars_ls``         solar longitude L_s of Mars, deg [0, 360) (SPICE ``lspcn`` definition)
``spacecraft_lat``  planetocentric latitude of Hope in IAU_MARS, deg
``spacecraft_lon``  planetocentric east longitude of Hope in IAU_MARS, deg [0, 360)
``spacecraft_alt``  Hope's geodetic altitude above the Mars ellipsoid (``BODY499_RADII``), km
``subsolar_lat``    planetocentric latitude of the sub-solar point (ellipsoid intercept), deg
``subsolar_lon``    planetocentric east longitude of the sub-solar point, deg [0, 360)
``spacecraft_lst``  local true solar time at the sub-spacecraft longitude, hours [0, 24)
==================  ========================================================================

Conventions: every vector is geometric (aberration correction ``NONE``). Hope's position is
where the spacecraft is, not where Mars sees it (light time <= 0.16 s: < 0.001 deg); the Sun's
apparent direction from Mars differs from the geometric one by stellar aberration, <= 0.006 deg
(<= 1.5 s of local time), below the API's resolution, and geometric is what the Mars24 algorithm
(Allison & McEwen 2000) computes, so L_s and local time stay comparable with it. SPICE's
``et2lst`` uses the apparent Sun and truncates to whole seconds, so it may differ by ~2 s.

Speed: SPICE is called three times per time, through spiceypy's vectorised ``cyice`` loops in C
(Hope's position, the Sun's state and the J2000 -> IAU_MARS rotation, all relative to Mars);
every conversion (UTC -> TDB from the LSK in the pool, rotation, latitude/longitude, geodetic
altitude, local time, L_s) is the same formula as SPICE's, done in numpy.
Times outside Hope's SPK coverage get ``None`` in every field.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
import spiceypy
from spiceypy import cyice
from spiceypy.utils.exceptions import SpiceyError

from emm_sdc.core import kernels
from emm_sdc.core.catalog import GEOMETRY_FIELDS
from emm_sdc.core.spice import KernelLoadError, kernel_pool, spk_coverage_et, utc_to_et

FIELDS = GEOMETRY_FIELDS


def _geodetic_altitude(pos: np.ndarray, a: float, c: float) -> np.ndarray:
    """Height above the spheroid (equatorial radius a, polar c) along its normal, as ``recgeo``."""
    rho, z = np.hypot(pos[:, 0], pos[:, 1]), pos[:, 2]
    e2, ep2 = 1 - (c / a) ** 2, (a / c) ** 2 - 1
    beta = np.arctan2(a * z, c * rho)
    lat = beta
    for _ in range(10):  # Bowring's iteration: converges to 1e-15 rad in 2-4 steps at orbital altitudes
        lat_new = np.arctan2(z + ep2 * c * np.sin(beta) ** 3, rho - e2 * a * np.cos(beta) ** 3)
        beta = np.arctan2(c * np.sin(lat_new), a * np.cos(lat_new))
        done = np.all(np.abs(lat_new - lat) < 1e-15)
        lat = lat_new
        if done:
            break
    sin_lat = np.sin(lat)
    return rho * np.cos(lat) + z * sin_lat - a * np.sqrt(1 - e2 * sin_lat**2)


def _lat_lon(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planetocentric latitude and east longitude [0, 360) in degrees (``reclat``)."""
    lat = np.degrees(np.arctan2(v[:, 2], np.hypot(v[:, 0], v[:, 1])))
    return lat, np.degrees(np.arctan2(v[:, 1], v[:, 0])) % 360.0


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1)[:, None]


def _evaluate(et: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The seven fields (columns in :data:`FIELDS` order) at TDB epochs; raises SpiceyError."""
    mars, hope, sun = kernels.MARS_ID, kernels.HOPE_ID, 10
    sc_j2000, _ = cyice.spkezp(hope, et, "J2000", "NONE", mars)
    sun_state = cyice.spkgeo(sun, et, "J2000", mars)[0]
    rot = cyice.pxform("J2000", "IAU_MARS", et)  # (n, 3, 3)
    sc = np.einsum("nij,nj->ni", rot, sc_j2000)
    sun_pos, sun_vel = sun_state[:, :3], sun_state[:, 3:]
    sun_bf = np.einsum("nij,nj->ni", rot, sun_pos)
    sc_lat, sc_lon = _lat_lon(sc)
    ss_lat, ss_lon = _lat_lon(sun_bf)
    # local true solar time: 12 h when the Sun is on the meridian (et2lst's formula, Mars is prograde)
    lst = (12.0 + ((sc_lon - ss_lon + 180.0) % 360.0 - 180.0) / 15.0) % 24.0
    # L_s (lspcn): longitude of the Sun in the frame Z = orbit normal, X = spin axis x Z
    z_axis = _unit(np.cross(sun_pos, sun_vel))
    x_axis = _unit(np.cross(rot[:, 2, :], z_axis))
    y_axis = np.cross(z_axis, x_axis)
    ls = np.degrees(np.arctan2(np.einsum("ni,ni->n", sun_pos, y_axis),
                               np.einsum("ni,ni->n", sun_pos, x_axis))) % 360.0
    alt = _geodetic_altitude(sc, float(radii[0]), float(radii[2]))
    return np.column_stack([ls, lst, ss_lat, ss_lon, sc_lat, sc_lon, alt])


def _evaluate_tolerant(et: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """:func:`_evaluate` on a batch; where SPICE fails (e.g. a gap in planetary data) the batch is halved
    until the failing times are isolated, and those get NaN."""
    try:
        return _evaluate(et, radii)
    except SpiceyError:
        spiceypy.reset()
        if len(et) == 1:
            return np.full((1, len(FIELDS)), np.nan)
    half = len(et) // 2
    return np.vstack([_evaluate_tolerant(et[:half], radii), _evaluate_tolerant(et[half:], radii)])


def compute_geometry(meta_kernel: str | Path, times: Sequence[datetime]) -> list[dict[str, float | None]]:
    """The seven EMM API geometry fields at each UTC time, from the kernels a meta-kernel loads.

    Times outside Hope's SPK coverage (or where SPICE lacks data) get ``None`` in every field.
    Raises :class:`~emm_sdc.core.spice.KernelLoadError` if the meta-kernel does not load.
    """
    if not times:
        return []
    with kernel_pool([meta_kernel]):
        et = utc_to_et(times)
        try:
            radii = spiceypy.bodvrd("MARS", "RADII", 3)[1]
        except SpiceyError as exc:
            raise KernelLoadError(meta_kernel, exc.short, f"the meta-kernel loads no PCK with Mars' radii: "
                                                          f"{exc.long}") from exc
        covered = np.zeros(len(et), dtype=bool)
        for start, end in spk_coverage_et(kernels.HOPE_ID):
            covered |= (et >= start) & (et <= end)
        values = np.full((len(et), len(FIELDS)), np.nan)
        if covered.any():
            unique, inverse = np.unique(et[covered], return_inverse=True)
            values[covered] = _evaluate_tolerant(unique, radii)[inverse]
    rows = values.tolist()
    return [dict(zip(FIELDS, row, strict=True)) if row[0] == row[0] else dict.fromkeys(FIELDS)
            for row in rows]


def geometry_at(meta_kernel: str | Path, time: datetime) -> dict[str, float | None]:
    """:func:`compute_geometry` for one time."""
    return compute_geometry(meta_kernel, [time])[0]
