"""Geometry fields against independent computations: SPICE's scalar per-time routines (the check the
vectorised path must pass: 1e-6 deg, 1e-3 km, 1 s), the orbit model with our own IAU rotation, and the
Mars24 algorithm (Allison & McEwen 2000) for L_s, the Sun's declination and local true solar time."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import spiceypy

from emm_dev import synthetic
from emm_dev import synthetic_spice as ss
from emm_sdc.core import kernels
from emm_sdc.core.catalog import GEOMETRY_FIELDS
from emm_sdc.core.geometry import FIELDS, compute_geometry, geometry_at
from emm_sdc.core.spice import KernelLoadError, kernel_pool

START = datetime(2021, 5, 23, tzinfo=UTC)  # orbit 0000's periapsis
END = START + timedelta(days=687)  # one Mars year
A, C = ss.MARS_RADII_KM[0], ss.MARS_RADII_KM[2]


@pytest.fixture(scope="module")
def mk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("geometry")
    delivered = ss.kernel_delivery(tmp / "inbox", start=START, end=END, step_s=3600)
    return ss.install_kernels(delivered, tmp / "kernels")


def spread(n: int, start: datetime = START, end: datetime = END) -> list[datetime]:
    step = (end - start) / (n + 1)
    return [start + step * (i + 1) + timedelta(microseconds=137 * i) for i in range(n)]


def wrap(d: np.ndarray, period: float = 360.0) -> np.ndarray:
    return (np.asarray(d) + period / 2) % period - period / 2


def column(rows: list[dict[str, float | None]], key: str) -> np.ndarray:
    return np.array([r[key] for r in rows], dtype=float)


# --------------------------------------------------------------------------- independent models


def iau_mars_matrix(et: float) -> np.ndarray:
    """J2000 -> IAU_MARS from the IAU rotation formula and the PCK's constants: [W]3 [90-dec]1 [90+ra]3."""
    t, d = et / (36525 * 86400.0), et / 86400.0
    ra = math.radians(ss.MARS_POLE_RA[0] + ss.MARS_POLE_RA[1] * t)
    dec = math.radians(ss.MARS_POLE_DEC[0] + ss.MARS_POLE_DEC[1] * t)
    w = math.radians(ss.MARS_PM[0] + ss.MARS_PM[1] * d)

    def r1(a: float) -> np.ndarray:
        return np.array([[1, 0, 0], [0, math.cos(a), math.sin(a)], [0, -math.sin(a), math.cos(a)]])

    def r3(a: float) -> np.ndarray:
        return np.array([[math.cos(a), math.sin(a), 0], [-math.sin(a), math.cos(a), 0], [0, 0, 1]])

    return r3(w) @ r1(math.pi / 2 - dec) @ r3(math.pi / 2 + ra)


def altitude(p: np.ndarray) -> float:
    """Distance to the nearest point of the spheroid: Newton on the meridian ellipse's parametric angle."""
    rho, z = math.hypot(p[0], p[1]), p[2]
    t = math.atan2(A * z, C * rho)
    for _ in range(50):
        f = (A * A - C * C) * math.sin(t) * math.cos(t) - rho * A * math.sin(t) + z * C * math.cos(t)
        df = (A * A - C * C) * math.cos(2 * t) - rho * A * math.cos(t) - z * C * math.sin(t)
        t -= f / df
    return math.hypot(rho - A * math.cos(t), z - C * math.sin(t))


def mars24(t: datetime) -> tuple[float, float, float, float]:
    """Mars24 (Allison & McEwen 2000; NASA GISS "Mars24 algorithm"): L_s, equation of time (deg),
    Mars mean solar time at the prime meridian (h), planetographic declination of the Sun (deg)."""
    jd_tt = 2440587.5 + (t.timestamp() + 37 + 32.184) / 86400.0
    dt = jd_tt - 2451545.0
    m = math.radians(19.3871 + 0.52402073 * dt)
    alpha_fms = 270.3871 + 0.524038496 * dt
    pbs = sum(a * math.cos(math.radians(0.985626 * dt / tau + phi)) for a, tau, phi in (
        (0.0071, 2.2353, 49.409), (0.0057, 2.7543, 168.173), (0.0039, 1.1177, 191.837), (0.0037, 15.7866, 21.736),
        (0.0021, 2.1354, 15.704), (0.0020, 2.4694, 95.528), (0.0018, 32.8493, 49.095)))
    nu_m = ((10.691 + 3.0e-7 * dt) * math.sin(m) + 0.623 * math.sin(2 * m) + 0.050 * math.sin(3 * m)
            + 0.005 * math.sin(4 * m) + 0.0005 * math.sin(5 * m) + pbs)
    ls = (alpha_fms + nu_m) % 360.0
    lr = math.radians(ls)
    eot = 2.861 * math.sin(2 * lr) - 0.071 * math.sin(4 * lr) + 0.002 * math.sin(6 * lr) - nu_m
    mst = (24 * ((jd_tt - 2451549.5) / 1.0274912517 + 44796.0 - 0.0009626)) % 24
    dec_graphic = math.degrees(math.asin(0.42565 * math.sin(lr))) + 0.25 * math.sin(lr)
    return ls, eot, mst, dec_graphic


# --------------------------------------------------------------------------- tests


def test_fields_are_the_catalogs() -> None:
    assert sorted(FIELDS) == sorted(GEOMETRY_FIELDS)


def test_spacecraft_position_matches_orbit_model(mk: Path) -> None:
    """Within 1e-6 deg and 1 m of hope_state + our own rotation and altitude (SPK interpolation < 1 cm)."""
    times = spread(300)
    rows = compute_geometry(mk, times)
    et = ss.utc_to_et(times)
    pos = ss.hope_state(et)[0]
    bf = np.array([iau_mars_matrix(e) @ p for e, p in zip(et, pos, strict=True)])
    lat = np.degrees(np.arcsin(bf[:, 2] / np.linalg.norm(bf, axis=1)))
    lon = np.degrees(np.arctan2(bf[:, 1], bf[:, 0])) % 360
    alt = np.array([altitude(p) for p in bf])
    assert np.abs(column(rows, "spacecraft_lat") - lat).max() < 1e-6
    assert np.abs(wrap(column(rows, "spacecraft_lon") - lon)).max() < 1e-6
    assert np.abs(column(rows, "spacecraft_alt") - alt).max() < 1e-3
    assert (column(rows, "spacecraft_lon") >= 0).all() and (column(rows, "spacecraft_lon") < 360).all()
    assert np.abs(column(rows, "spacecraft_lat")).max() < 25.0 + 1e-3  # 25 deg inclination
    assert column(rows, "spacecraft_alt").min() > 19999 and column(rows, "spacecraft_alt").max() < 43100


def test_periapsis_altitude_is_20000_km(mk: Path) -> None:
    orbits = range(0, 300, 23)
    rows = compute_geometry(mk, [synthetic.orbit_start(n) for n in orbits])
    assert np.abs(column(rows, "spacecraft_alt") - 20000.0).max() < 1e-3
    # over the equator of orbit 0000's epoch; Mars' pole moves ~0.07 deg per century (0.0012 deg in 300 orbits)
    assert np.abs(column(rows, "spacecraft_lat")).max() < 2e-3


def test_sun_fields_match_mars24(mk: Path) -> None:
    """Tolerances: L_s 0.1 deg, sub-solar point 0.1 deg, local true solar time 1 min. Measured over a Mars
    year: 0.015 deg, 0.025 deg (latitude), 0.018 deg (longitude), 3 s: our planetary ephemeris is
    Standish's approximate orbit and Mars24 a fit, both good to ~0.01 deg."""
    times = spread(700)
    rows = compute_geometry(mk, times)
    ref = np.array([mars24(t) for t in times])
    ls, eot, mst, dec_graphic = ref.T
    assert np.abs(wrap(column(rows, "mars_ls") - ls)).max() < 0.1
    assert column(rows, "mars_ls").min() < 5 and column(rows, "mars_ls").max() > 355  # a whole year
    # Mars24's declination is planetographic; ours is planetocentric: tan(pc) = (c/a)^2 tan(pg)
    dec_centric = np.degrees(np.arctan((C / A) ** 2 * np.tan(np.radians(dec_graphic))))
    sub_lat = column(rows, "subsolar_lat")
    assert np.abs(sub_lat - dec_centric).max() < 0.1
    assert np.abs(sub_lat - dec_graphic).max() > 0.2  # the two conventions really differ by ~0.25 deg
    sub_lon_east = (-(mst * 15 + eot + 180.0)) % 360  # Mars24 gives west longitude
    assert np.abs(wrap(column(rows, "subsolar_lon") - sub_lon_east)).max() < 0.1
    ltst = (mst + (column(rows, "spacecraft_lon") + eot) / 15.0) % 24  # local true solar time, east longitude
    assert np.abs(wrap(column(rows, "spacecraft_lst") - ltst, 24.0)).max() * 60 < 1.0


def scalar_spice_fields(times: list[datetime]) -> np.ndarray:
    """The seven fields (FIELDS order) from SPICE's scalar routines, one call per quantity per time, in the
    loaded pool: str2et, subpnt (intercept: latitude/longitude; near point: altitude), spkpos + reclat/recgeo,
    subslr, et2lst (whole seconds) and lspcn. Columns 7-9: recgeo's altitude, reclat's latitude and longitude
    of spkpos's vector (deg), as a second route to the spacecraft fields."""
    radii = spiceypy.bodvrd("MARS", "RADII", 3)[1]
    flat = (radii[0] - radii[2]) / radii[0]
    rows = []
    for t in times:
        et = spiceypy.str2et(t.strftime("%Y-%m-%dT%H:%M:%S.%f"))
        sub = spiceypy.subpnt("INTERCEPT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE", "-62")[0]
        _, lon, lat = spiceypy.reclat(sub)
        alt = np.linalg.norm(spiceypy.subpnt("NEAR POINT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE", "-62")[2])
        pos = spiceypy.spkpos("-62", et, "IAU_MARS", "NONE", "MARS")[0]
        _, plon, plat = spiceypy.reclat(pos)
        galt = spiceypy.recgeo(pos, radii[0], flat)[2]
        _, slon, slat = spiceypy.reclat(spiceypy.subslr("INTERCEPT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE",
                                                        "MARS")[0])
        hr, mn, sc = spiceypy.et2lst(et, 499, lon, "PLANETOCENTRIC")[:3]
        rows.append([math.degrees(spiceypy.lspcn("MARS", et, "NONE")), hr + mn / 60 + sc / 3600,
                     math.degrees(slat), math.degrees(slon), math.degrees(lat), math.degrees(lon), alt,
                     galt, math.degrees(plat), math.degrees(plon)])
    return np.array(rows)


def test_agrees_with_scalar_spice_routines(mk: Path) -> None:
    """The independent check: the vectorised path against SPICE's per-time routines to 1e-6 deg, 1e-3 km and
    1 s. et2lst truncates to whole seconds, so ours (the same apparent Sun, not truncated) is 0-1 s later;
    the geometric Sun would be up to 1.5 s off in either direction."""
    times = [*spread(120), START + timedelta(hours=27.5), synthetic.orbit_start(3), END - timedelta(seconds=1)]
    rows = compute_geometry(mk, times)
    with kernel_pool([mk]):
        ref = scalar_spice_fields(times)
    ours = np.array([[r[f] for f in FIELDS] for r in rows])
    col = {f: i for i, f in enumerate(FIELDS)}
    for f in ("mars_ls", "subsolar_lat", "subsolar_lon", "spacecraft_lat", "spacecraft_lon"):
        assert np.abs(wrap(ours[:, col[f]] - ref[:, col[f]])).max() < 1e-6, f
    assert np.abs(wrap(ours[:, col["spacecraft_lat"]] - ref[:, 8])).max() < 1e-6
    assert np.abs(wrap(ours[:, col["spacecraft_lon"]] - ref[:, 9])).max() < 1e-6
    assert np.abs(ours[:, col["spacecraft_alt"]] - ref[:, col["spacecraft_alt"]]).max() < 1e-3
    assert np.abs(ours[:, col["spacecraft_alt"]] - ref[:, 7]).max() < 1e-3
    lst_s = wrap(ours[:, col["spacecraft_lst"]] - ref[:, col["spacecraft_lst"]], 24.0) * 3600
    assert lst_s.min() > -1e-6 and lst_s.max() < 1.0
    assert np.ptp(lst_s) > 0.5  # the sub-second part is really there (et2lst's is not)
    for f in ("mars_ls", "subsolar_lon", "spacecraft_lon"):
        assert ((ours[:, col[f]] >= 0) & (ours[:, col[f]] < 360)).all(), f
    assert ((ours[:, col["spacecraft_lst"]] >= 0) & (ours[:, col["spacecraft_lst"]] < 24)).all()


def test_the_meta_kernels_lsk_sets_the_time(tmp_path: Path, mk: Path) -> None:
    """UTC -> TDB comes from the LSK in the pool: with one more leap second (2021-06-01) every field is
    that of a time 1 s later. A meta-kernel without an LSK is an error, not a silent default."""
    lsk = mk.parent.parent / "lsk" / ss.GENERIC_NAMES["lsk"]
    text = lsk.read_text()
    assert "37, @2017-JAN-1 )" in text
    extra = lsk.with_name("emm_lsk_extraleap_v01.tls")
    extra.write_text(text.replace("37, @2017-JAN-1 )", "37, @2017-JAN-1\n 38, @2021-JUN-1 )"))
    mk2 = tmp_path / "mk2.tm"
    mk2.write_text(mk.read_text().replace(lsk.name, extra.name))
    assert extra.name in mk2.read_text()
    t = START + timedelta(days=20, hours=5)
    with_extra = geometry_at(mk2, t)
    assert with_extra == pytest.approx(geometry_at(mk, t + timedelta(seconds=1)), abs=1e-6)
    assert abs(with_extra["spacecraft_lon"] - geometry_at(mk, t)["spacecraft_lon"]) > 1e-3
    no_lsk = tmp_path / "no_lsk.tm"
    no_lsk.write_text(mk.read_text().replace(f"'$KERNELS/lsk/{lsk.name}'", ""))
    with pytest.raises(KernelLoadError, match="leap-second") as err:
        compute_geometry(no_lsk, [t])
    assert err.value.short == "SDC(NOLSK)" and err.value.path == str(no_lsk)
    assert spiceypy.ktotal("ALL") == 0


def test_outside_coverage_is_none(mk: Path) -> None:
    inside = START + timedelta(days=3)
    rows = compute_geometry(mk, [START - timedelta(seconds=1), inside, END + timedelta(seconds=1), START, END])
    assert rows[0] == dict.fromkeys(FIELDS) == rows[2]
    assert all(v is not None for r in (rows[1], rows[3], rows[4]) for v in r.values())
    assert geometry_at(mk, inside) == rows[1]
    assert geometry_at(mk, inside.replace(tzinfo=None)) == rows[1]  # naive = UTC
    assert compute_geometry(mk, []) == []
    assert spiceypy.ktotal("ALL") == 0


def test_missing_planetary_data_gives_none_not_an_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gap in the planetary SPK gives None where SPICE lacks data: inside the gap, and for one light time
    from the Sun (the apparent Sun of local solar time) after it."""
    monkeypatch.chdir(tmp_path)  # short relative paths in the meta-kernel
    kdir = Path("k")
    gap_start, gap_end = START + timedelta(days=5), START + timedelta(days=6)
    ss.write_lsk(kdir / "lsk.tls")
    ss.write_pck(kdir / "pck.tpc")
    ss.write_planets_spk(kdir / "pln1.bsp", START - timedelta(days=1), gap_start)
    ss.write_planets_spk(kdir / "pln2.bsp", gap_end, END)
    ss.write_hope_spk(kdir / "hope.bsp", START, START + timedelta(days=10), step_s=3600)
    mk = tmp_path / "mk.tm"
    mk.write_text("KPL/MK\n\\begindata\n"
                  "KERNELS_TO_LOAD = ( 'k/lsk.tls' 'k/pck.tpc' 'k/pln1.bsp' 'k/pln2.bsp' 'k/hope.bsp' )\n"
                  "\\begintext\n")
    times = spread(1000, START, START + timedelta(days=10))
    rows = compute_geometry(mk, times)
    light_time = float(np.linalg.norm(ss.mars_heliocentric(ss.utc_to_et(gap_end)))) / spiceypy.clight()
    assert 11 * 60 < light_time < 14 * 60
    in_gap = [gap_start < t < gap_end + timedelta(seconds=light_time) for t in times]
    assert sum(in_gap) > 50
    for t, gap, row in zip(times, in_gap, rows, strict=True):
        assert (row == dict.fromkeys(FIELDS)) == gap, t


def test_bad_meta_kernel_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    mk = tmp_path / "mk.tm"
    mk.write_text("KPL/MK\n\\begindata\nKERNELS_TO_LOAD = ( 'missing.bsp' )\n\\begintext\n")
    with pytest.raises(KernelLoadError):
        compute_geometry(mk, [START])
    ss.write_lsk(tmp_path / "lsk.tls")
    mk.write_text("KPL/MK\n\\begindata\nKERNELS_TO_LOAD = ( 'lsk.tls' )\n\\begintext\n")
    with pytest.raises(KernelLoadError, match="BODY499_RADII"):  # no PCK
        compute_geometry(mk, [START])
    assert spiceypy.ktotal("ALL") == 0


def test_large_batch_equals_single_times(mk: Path) -> None:
    """The vectorised batch gives every time the same values it gets alone (speed: bench/geometry_vs_loop.py)."""
    times = spread(10_000)
    rows = compute_geometry(mk, times)
    assert len(rows) == 10_000 and all(r["spacecraft_alt"] is not None for r in rows)
    for i in (0, 1234, 5000, 9999):
        [alone] = compute_geometry(mk, [times[i]])
        assert alone == pytest.approx(rows[i], rel=1e-12, abs=1e-9)


def test_kernel_name_for_the_fixture(mk: Path) -> None:
    entries = kernels.meta_kernel_entries(mk.read_text())
    assert entries[-1] == "spk/emm_spk_r_20210523_20230410_v01.bsp"
