"""EMM API geometry fields of products, computed with SPICE from a meta-kernel (no Airflow).

Fields (``catalog.GEOMETRY_FIELDS``), all at the product's UTC time, each from a SPICE routine
run over all times at once by spiceypy's compiled ``cyice`` ``*_v`` loops:

==================  ========================================================================
``mars_ls``         solar longitude L_s of Mars, deg [0, 360): ``lspcn("MARS", et, "NONE")``
``spacecraft_lat``  planetocentric latitude of Hope in IAU_MARS, deg: ``reclat`` of
                    ``spkezp(-62, et, "IAU_MARS", "NONE", 499)``
``spacecraft_lon``  planetocentric east longitude of Hope in IAU_MARS, deg [0, 360): the same
``spacecraft_alt``  Hope's geodetic altitude above the Mars spheroid (``BODY499_RADII``), km:
                    ``recgeo`` of the same position
``subsolar_lat``    planetocentric latitude of the sub-solar point, deg: ``reclat`` of
                    ``subslr("INTERCEPT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE", "MARS")``
``subsolar_lon``    planetocentric east longitude of the sub-solar point, deg [0, 360): the same
``spacecraft_lst``  local true solar time at Hope's longitude, hours [0, 24): ``et2lst``'s
                    definition (the Sun's apparent, ``LT+S``, longitude from ``spkezp``) without
                    ``et2lst``'s truncation to whole seconds
==================  ========================================================================

Times: UTC -> TDB is ``UTC + deltet(UTC)`` (``deltet_v``) with the LSK the meta-kernel loads, as
``str2et``; radii come from its PCK. ``tests/unit/test_geometry.py`` checks every field against the
scalar routines (``str2et``, ``subpnt``, ``subslr``, ``et2lst``, ``lspcn``, ``reclat``, ``recgeo``);
``bench/geometry_vs_loop.py`` times both.

Conventions: Hope's position, L_s and the sub-solar point are geometric (aberration correction
``NONE``): the light time from Hope to Mars is <= 0.16 s (< 0.001 deg), and the Sun's stellar
aberration (<= 0.006 deg) is below the API's resolution, so L_s and the sub-solar point compare
directly with the Mars24 algorithm (Allison & McEwen 2000). Local solar time is SPICE's ``et2lst``
(apparent Sun), which can differ from the hour angle of the geometric sub-solar point by <= 1.5 s.
Times outside Hope's SPK coverage (or where SPICE lacks data) get ``None`` in every field.
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
from emm_sdc.core.spice import KernelLoadError, has_lsk, kernel_pool, spk_coverage_et, utc_to_et

FIELDS = GEOMETRY_FIELDS
SUN_ID = 10


def _evaluate(et: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The seven fields (columns in :data:`FIELDS` order) at TDB epochs; raises SpiceyError."""
    mars, hope = kernels.MARS_ID, kernels.HOPE_ID
    sc = cyice.spkezp_v(hope, et, "IAU_MARS", "NONE", mars)[0]
    _, sc_lon, sc_lat = cyice.reclat_v(sc).T
    equatorial, polar = float(radii[0]), float(radii[2])
    alt = cyice.recgeo_v(sc, equatorial, (equatorial - polar) / equatorial)[:, 2]
    subsolar = cyice.subslr_v("INTERCEPT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE", "MARS")[0]
    _, ss_lon, ss_lat = cyice.reclat_v(subsolar).T
    # et2lst: the hour angle of the apparent Sun (LT+S, seen from Mars' centre) at the longitude, + 12 h
    sun = cyice.spkezp_v(SUN_ID, et, "IAU_MARS", "LT+S", mars)[0]
    sun_lon = cyice.reclat_v(sun)[:, 1]
    lst = (12.0 + _degrees_360(sc_lon - sun_lon) / 15.0) % 24.0
    ls = cyice.lspcn_v("MARS", et, "NONE")
    return np.column_stack([_degrees_360(ls), lst, np.degrees(ss_lat), _degrees_360(ss_lon), np.degrees(sc_lat),
                            _degrees_360(sc_lon), alt])


def _degrees_360(rad: np.ndarray) -> np.ndarray:
    """Radians as degrees in [0, 360) (``% 360`` alone gives 360.0 for tiny negative angles)."""
    d = np.degrees(rad) % 360.0
    return np.where(d >= 360.0, 0.0, d)


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
    Raises :class:`~emm_sdc.core.spice.KernelLoadError` if the meta-kernel does not load, or loads no
    LSK or no Mars radii.
    """
    if not times:
        return []
    with kernel_pool([meta_kernel]):
        if not has_lsk():
            raise KernelLoadError(meta_kernel, "SDC(NOLSK)", "the meta-kernel loads no leap-second kernel (LSK): "
                                                            "UTC cannot be converted to TDB")
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
