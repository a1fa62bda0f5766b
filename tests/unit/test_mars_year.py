"""The Martian-year delivery timeline: rates, names, determinism, and the real files of a window."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

import pytest

from emm_dev import mars_year
from emm_dev.synthetic import ORBIT_EPOCH, ORBIT_PERIOD, orbit_start
from emm_sdc.core import checksums, kernels, naming


@pytest.fixture(scope="module")
def year() -> list[mars_year.Delivery]:
    return list(mars_year.timeline(seed=0))


def test_a_martian_year_holds_about_300_orbits_with_every_observation(year: list[mars_year.Delivery]) -> None:
    orbits = {d.orbit for d in year if d.level == "l0"}
    assert orbits == set(range(300))  # 687 d * 24 / 55 h = 299.8: orbit starts 0..299
    end = mars_year.year_end()
    assert orbit_start(299) < end < orbit_start(300)
    per_orbit = Counter((d.area, d.orbit) for d in year if d.level == "l0")
    for (inst, orbit), n in per_orbit.items():
        if orbit_start(orbit) + ORBIT_PERIOD <= end:  # whole orbits: every planned observation
            assert n == mars_year.OBS_PER_ORBIT[inst], (inst, orbit)
        assert min(d.start for d in year if d.orbit == orbit and d.level == "l0") >= ORBIT_EPOCH
    assert {inst: mars_year.OBS_PER_ORBIT[inst] for inst in mars_year.INSTRUMENTS} == {"exi": 6, "emu": 4, "emr": 8}
    # each observation lies in its own orbit and arrives after it was made
    for d in year:
        if d.level == "l0":
            assert orbit_start(d.orbit) <= d.start < orbit_start(d.orbit + 1)
            assert timedelta(hours=4) <= d.time - d.start <= timedelta(hours=16)


def test_housekeeping_is_exactly_daily_per_instrument(year: list[mars_year.Delivery]) -> None:
    for inst in mars_year.INSTRUMENTS:
        days = [d.start.date() for d in year if d.area == inst and d.level == "hk"]
        assert len(days) == len(set(days)) == 687
        assert all((b - a).days == 1 for a, b in itertools.pairwise(days))


def test_kernels_are_weekly_after_the_generic_set(year: list[mars_year.Delivery]) -> None:
    spice = [d for d in year if d.area == "spice"]
    assert {d.level for d in spice[:4]} == {"lsk", "pck", "sclk", "pln"} and spice[0].time == ORBIT_EPOCH
    weekly = sorted({d.time for d in spice[4:]})
    assert len(weekly) == 687 // 7 - (687 % 7 == 0)  # a delivery every 7 days after the first, within the year
    assert all(b - a == timedelta(days=7) for a, b in itertools.pairwise(weekly))
    for t in weekly:
        batch = {(kernels.parse_kernel_name(d.file_name).kernel_type, kernels.parse_kernel_name(d.file_name)
                  .kernel_class) for d in spice if d.time == t}
        assert batch == {("spk", "r"), ("ck", "r"), ("spk", "p")}


def test_every_name_is_valid_and_unique_and_sizes_are_mission_like(year: list[mars_year.Delivery]) -> None:
    names = [d.file_name for d in year]
    assert len(names) == len(set(names))
    for d in year:
        if d.area == "spice":
            kernels.parse_kernel_name(d.file_name)
            continue
        parsed = naming.parse(d.file_name)
        assert (parsed.instrument, parsed.level, parsed.orbit, parsed.mode) == (d.area, d.level, d.orbit, d.mode)
        assert parsed.start == d.start.replace(microsecond=0)
        for level, product, size, _ in mars_year.products(d):
            p = naming.parse(product)
            assert p.level == level and level in naming.LEVELS[d.area] and size > 0
    assert [d.time for d in year] == sorted(d.time for d in year)
    s = mars_year.summary(year)
    # ~100 GB per quarter over a whole quarter (deliveries + the products every chain level makes)
    whole = [q for q in s.quarter_delivered if q not in (min(s.quarter_delivered), max(s.quarter_delivered))]
    for q in whole:
        assert 80e9 < s.quarter_delivered[q] + s.quarter_products[q] < 120e9, q
    assert s.orbits == 300 and s.files[("exi", "l1")] == s.files[("exi", "l0")]


def test_the_timeline_is_deterministic_and_seeded() -> None:
    a = list(mars_year.timeline(seed=3, days=30))
    assert a == list(mars_year.timeline(seed=3, days=30))
    assert a != list(mars_year.timeline(seed=4, days=30))


def test_write_window_writes_the_timelines_files(tmp_path) -> None:
    lo, hi = ORBIT_EPOCH, ORBIT_EPOCH + timedelta(days=1)
    kern, files = mars_year.write_window(tmp_path, lo, hi)
    want = {d.file_name for d in mars_year.timeline(spice=False) if lo <= d.start < hi}
    assert {f.file_name for f in files} == want and want
    for f in files:
        assert checksums.parse_sidecar(f.sidecar_path.read_text(), f.file_name) == f.md5
        assert f.path.stat().st_size == f.size > 0
    assert {f.level for f in kern} >= {"lsk", "spk"}
    again = mars_year.write_window(tmp_path / "again", lo, hi)[1]
    assert [f.md5 for f in again] == [f.md5 for f in files]
