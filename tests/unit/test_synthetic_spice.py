"""Synthetic kernel deliveries: EMM names that match coverage, sidecars, determinism, the orbit model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import spiceypy

from emm_dev import synthetic
from emm_dev import synthetic_spice as ss
from emm_sdc.core import checksums, kernels
from emm_sdc.core.spice import inspect_kernel, kernel_pool
from emm_sdc.core.spice import utc_to_et as spice_utc_to_et

START = datetime(2021, 6, 1, 3, 4, 5, tzinfo=UTC)
END = datetime(2021, 6, 9, 22, 7, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def delivery(tmp_path_factory: pytest.TempPathFactory) -> list[synthetic.Delivered]:
    return ss.kernel_delivery(tmp_path_factory.mktemp("delivery"), start=START, end=END, ck=True)


def by_type(delivered: list[synthetic.Delivered]) -> dict[str, synthetic.Delivered]:
    return {d.level: d for d in delivered}


def test_names_parse_and_dates_match_coverage(delivery: list[synthetic.Delivered]) -> None:
    kinds = by_type(delivery)
    assert sorted(kinds) == ["ck", "lsk", "pck", "pln", "sclk", "spk"]
    assert kinds["spk"].file_name == "emm_spk_r_20210601_20210609_v01.bsp"
    assert kinds["ck"].file_name == "emm_ck_r_20210601_20210609_v01.bc"
    support = [kinds["lsk"].path, kinds["sclk"].path]
    for ktype, body in (("spk", kernels.HOPE_ID), ("ck", kernels.HOPE_CK_FRAME)):
        name = kernels.parse_kernel_name(kinds[ktype].file_name)
        (span,) = inspect_kernel(kinds[ktype].path, support=support).coverage[body]
        assert (name.start, name.end) == (span.start.date(), span.end.date())
        assert abs((span.start - START).total_seconds()) < 1e-3 and abs((span.end - END).total_seconds()) < 1e-3
    for d in delivery:
        assert d.instrument == "spice"
        assert kernels.parse_kernel_name(d.file_name).kernel_type == d.level


def test_sidecars_match(delivery: list[synthetic.Delivered]) -> None:
    for d in delivery:
        assert d.sidecar_path is not None and d.sidecar_path.name == d.file_name + ".md5"
        assert d.declared_md5() == d.md5 == checksums.md5_file(d.path)
        assert d.size == d.path.stat().st_size


def test_deterministic(tmp_path: Path, delivery: list[synthetic.Delivered]) -> None:
    again = ss.kernel_delivery(tmp_path, start=START, end=END, ck=True)
    assert [(d.file_name, d.md5) for d in again] == [(d.file_name, d.md5) for d in delivery]


def test_end_on_midnight_and_options(tmp_path: Path) -> None:
    out = ss.kernel_delivery(tmp_path, start=datetime(2021, 6, 1, tzinfo=UTC), end=datetime(2021, 6, 3, tzinfo=UTC),
                             spk_class="f", version=3, generic=False, ck=True)
    assert [d.file_name for d in out] == ["emm_spk_f_20210601_20210603_v03.bsp", "emm_ck_f_20210601_20210603_v03.bc"]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
    with pytest.raises(ValueError, match="spk_class"):
        ss.kernel_delivery(tmp_path, start=START, end=END, spk_class="x")
    with pytest.raises(ValueError, match="planetary"):
        ss.kernel_delivery(tmp_path, start=datetime(2040, 1, 1, tzinfo=UTC), end=datetime(2040, 2, 1, tzinfo=UTC))


def test_time_conversions_match_spice(delivery: list[synthetic.Delivered]) -> None:
    kinds = by_type(delivery)
    times = [datetime(1990, 1, 1, tzinfo=UTC) + timedelta(days=61.37 * i) for i in range(250)]
    with kernel_pool([kinds["lsk"].path, kinds["sclk"].path]):
        ref = np.array([spiceypy.str2et(t.strftime("%Y-%m-%dT%H:%M:%S.%f")) for t in times])
        sclk = [spiceypy.sct2e(kernels.HOPE_ID, float(x)) for x in ss.et_to_sclk_ticks(ref[-5:])]
        text = spiceypy.scdecd(kernels.HOPE_ID, float(ss.et_to_sclk_ticks(ref[-1])))
    assert np.abs(ss.utc_to_et(times) - ref).max() < 1e-6
    assert max(abs((ss.et_to_utc(e) - t).total_seconds()) for e, t in zip(ref, times, strict=True)) < 2e-6
    assert np.abs(np.array(sclk) - ref[-5:]).max() < 1e-6
    assert text.startswith("1/")
    with pytest.raises(ValueError, match="timezone"):
        ss.utc_to_et([datetime(2021, 1, 1)])


def test_time_conversions_leave_the_pool_as_found(delivery: list[synthetic.Delivered], tmp_path: Path) -> None:
    """SPICE converts the writers' times with this module's LSK; the pool's own DELTET values (another LSK's,
    or none) are back afterwards, the rest of the pool untouched."""
    t = [datetime(2025, 7, 2, tzinfo=UTC)]
    expected = ss.utc_to_et(t)
    assert spiceypy.ktotal("ALL") == 0 and not spiceypy.expool("DELTET/DELTA_AT")
    lsk = by_type(delivery)["lsk"].path
    other = tmp_path / "other.tls"
    other.write_text(lsk.read_text().replace("37, @2017-JAN-1 )", "37, @2017-JAN-1\n 38, @2025-JUL-1 )"))
    with kernel_pool([other, by_type(delivery)["pck"].path]):
        before = {n: list(spiceypy.gdpool(n, 0, 100)) for n in ("DELTET/DELTA_AT", "DELTET/M", "BODY499_RADII")}
        assert ss.utc_to_et(t) == pytest.approx(expected, abs=1e-9)
        assert ss.et_to_utc(float(expected[0])) == t[0]
        assert {n: list(spiceypy.gdpool(n, 0, 100)) for n in before} == before
        assert len(before["DELTET/DELTA_AT"]) == 2 * 29 and spiceypy.ktotal("ALL") == 2
        assert spice_utc_to_et(t)[0] == pytest.approx(expected[0] + 1.0, abs=1e-6)  # the pool's LSK again
    with kernel_pool([by_type(delivery)["pck"].path]):
        ss.utc_to_et(t)
        assert not spiceypy.expool("DELTET/DELTA_AT") and not spiceypy.expool("DELTET/K")
        assert spiceypy.expool("BODY499_RADII")
    assert not spiceypy.expool("DELTET/DELTA_AT")


def test_hope_orbit_model() -> None:
    """Period 55 h with periapsis (20,000 km altitude, over the equator) at every orbit start."""
    assert ss.HOPE_PERIOD_S == synthetic.ORBIT_PERIOD.total_seconds() == 55 * 3600
    assert 43000 < ss.HOPE_APOAPSIS_ALT_KM < 43050
    peri = ss.utc_to_et([synthetic.orbit_start(n) for n in range(0, 400, 37)])
    pos, vel = ss.hope_state(peri)
    r = np.linalg.norm(pos, axis=1)
    assert np.abs(r - ss.MARS_RADII_KM[0] - 20000.0).max() < 1e-3
    assert np.abs(np.einsum("ni,ni->n", pos, vel)).max() / r.max() < 1e-5  # radial velocity ~ 0
    apo, _ = ss.hope_state(peri + ss.HOPE_PERIOD_S / 2)
    assert np.allclose(np.linalg.norm(apo, axis=1) - ss.MARS_RADII_KM[0], ss.HOPE_APOAPSIS_ALT_KM, atol=1e-3)
    normal = np.cross(pos[0], vel[0])
    inc = np.degrees(np.arccos(normal @ ss.mars_pole(peri[0]) / np.linalg.norm(normal)))
    assert inc == pytest.approx(25.0, abs=1e-9)
    assert abs(pos[0] @ ss.mars_pole(peri[0])) < 1e-6  # periapsis on Mars' equator
    t = np.array([peri[0] + 1234.5])
    numeric = (ss.hope_state(t + 0.5)[0] - ss.hope_state(t - 0.5)[0])
    assert np.allclose(numeric, ss.hope_state(t)[1], atol=1e-7)


def test_spk_and_ck_content(delivery: list[synthetic.Delivered]) -> None:
    kinds = by_type(delivery)
    ets = np.linspace(*ss.utc_to_et([START, END]), 400)
    with kernel_pool([kinds[k].path for k in ("lsk", "sclk", "pln", "spk", "ck")]):
        hope = np.array([spiceypy.spkpos("-62", et, "J2000", "NONE", "MARS")[0] for et in ets])
        mars = np.array([spiceypy.spkpos("MARS", et, "J2000", "NONE", "SUN")[0] for et in ets])
        ssb = np.array([spiceypy.spkpos("MARS", et, "J2000", "NONE", "SSB")[0] for et in ets])
        z_axes = np.array([spiceypy.ckgp(kernels.HOPE_CK_FRAME, float(ss.et_to_sclk_ticks(et)), 0.0, "J2000")[0][2]
                           for et in ets[1:-1]])
    assert np.abs(hope - ss.hope_state(ets)[0]).max() < 1e-6  # km: Hermite interpolation error
    assert np.abs(mars - ss.mars_heliocentric(ets)).max() < 1e-3
    assert np.allclose(ssb, mars)  # the Sun sits at the barycentre
    assert 1.38 < np.linalg.norm(mars, axis=1).min() / ss.AU_KM < np.linalg.norm(mars, axis=1).max() / ss.AU_KM < 1.67
    nadir = -hope[1:-1] / np.linalg.norm(hope[1:-1], axis=1)[:, None]
    assert np.einsum("ni,ni->n", z_axes, nadir).min() > 1 - 1e-6


def test_quaternions_match_spice() -> None:
    rng = np.random.default_rng(3)
    mats = [spiceypy.axisar(v / np.linalg.norm(v), a) for v, a in zip(rng.normal(size=(300, 3)),
                                                                       rng.uniform(0, 2 * np.pi, 300), strict=True)]
    mats += [np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1]), np.eye(3)]
    q = ss.quaternions(np.array(mats))
    assert max(np.abs(spiceypy.q2m(x) - m).max() for x, m in zip(q, mats, strict=True)) < 1e-14


def test_install_kernels_writes_loadable_meta_kernel(tmp_path: Path, delivery: list[synthetic.Delivered]) -> None:
    mk = ss.install_kernels(delivery, tmp_path / "k", version=7)
    assert mk.name == "emm_meta_v0007.tm"
    assert kernels.meta_kernel_entries(mk.read_text())[0] == "lsk/emm_lsk_naif0012_v01.tls"
    with kernel_pool([mk]):
        assert spiceypy.ktotal("ALL") == len(delivery) + 1
