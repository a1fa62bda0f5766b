"""Kernel inspection, the kernel pool's lifecycle, and meta-kernel load order with real SPICE."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import spiceypy
from spiceypy.utils.exceptions import SpiceyError

from emm_dev import synthetic_spice as ss
from emm_sdc.core import kernels
from emm_sdc.core.spice import (
    Interval,
    KernelLoadError,
    et_to_datetime,
    inspect_kernel,
    kernel_pool,
    utc_to_et,
)

START = datetime(2021, 6, 1, 3, 4, 5, tzinfo=UTC)
END = datetime(2021, 6, 4, 6, 7, 8, tzinfo=UTC)


@pytest.fixture(scope="module")
def kdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("kernels")
    ss.write_lsk(d / "naif.tls")
    ss.write_pck(d / "mars.tpc")
    ss.write_sclk(d / "hope.tsc")
    ss.write_planets_spk(d / "planets.bsp")
    ss.write_hope_spk(d / "hope.bsp", START, END)
    ss.write_hope_ck(d / "hope.bc", START, END)
    return d


def close(a: datetime, b: datetime, seconds: float = 1e-3) -> bool:
    return abs((a - b).total_seconds()) < seconds


@pytest.mark.parametrize(("name", "arch", "kind"), [
    ("naif.tls", "KPL", "LSK"), ("mars.tpc", "KPL", "PCK"), ("hope.tsc", "KPL", "SCLK"),
    ("planets.bsp", "DAF", "SPK"), ("hope.bsp", "DAF", "SPK"), ("hope.bc", "DAF", "CK"),
])
def test_kernel_types(kdir: Path, name: str, arch: str, kind: str) -> None:
    info = inspect_kernel(kdir / name, support=[kdir / "naif.tls", kdir / "hope.tsc"])
    assert (info.arch, info.kind) == (arch, kind)
    if arch == "KPL":
        assert info.coverage == {}


def test_spk_coverage_to_the_second(kdir: Path) -> None:
    info = inspect_kernel(kdir / "hope.bsp", support=[kdir / "naif.tls"])
    assert list(info.coverage) == [kernels.HOPE_ID] and info.time_scale == "UTC"
    (span,) = info.coverage[kernels.HOPE_ID]
    assert close(span.start, START) and close(span.end, END)
    assert span.start.tzinfo is not None and START + timedelta(hours=1) in span


def test_spk_coverage_without_lsk_is_on_the_tdb_calendar(kdir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """No built-in leap seconds: without an LSK, coverage is TDB (69.184 s +- 2 ms after UTC in 2021), said so."""
    info = inspect_kernel(kdir / "hope.bsp")
    (span,) = info.coverage[kernels.HOPE_ID]
    assert info.time_scale == "TDB"
    assert abs((span.start - START).total_seconds() - 69.184) < 2e-3
    assert abs((span.end - END).total_seconds() - 69.184) < 2e-3
    assert "no LSK loaded" in caplog.text and "hope.bsp" in caplog.text
    assert inspect_kernel(kdir / "mars.tpc").time_scale == "TDB"  # nothing to convert: no warning
    assert caplog.text.count("no LSK loaded") == 1


def test_utc_to_et_is_str2et_with_the_pools_lsk(kdir: Path, tmp_path: Path) -> None:
    """deltet_v on UTC seconds gives str2et's TDB to 1 microsecond, 1972-2030 (across every leap second);
    et_to_datetime inverts it; another LSK in the pool (one more leap second) is followed, none is an error."""
    times = [datetime(1972, 1, 1, tzinfo=UTC) + timedelta(days=37.3 * i, microseconds=7 * i) for i in range(570)]
    times += [datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC), datetime(2017, 1, 1, tzinfo=UTC)]
    with kernel_pool([kdir / "naif.tls"]):
        ref = np.array([spiceypy.str2et(t.strftime("%Y-%m-%dT%H:%M:%S.%f")) for t in times])
        ours = utc_to_et(times)
        back = [et_to_datetime(e) for e in ours]
        leap = et_to_datetime(spiceypy.str2et("2016-12-31T23:59:60.5"))
        naive = utc_to_et([t.replace(tzinfo=None) for t in times[:5]])
    assert np.abs(ours - ref).max() < 1e-6
    assert ours[-1] - ours[-2] == pytest.approx(1.000001, abs=1e-6)  # the leap second of 2016-12-31
    assert max(abs((b - t).total_seconds()) for b, t in zip(back, times, strict=True)) < 2e-6
    assert leap == datetime(2016, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    assert np.array_equal(naive, ours[:5])
    extra = tmp_path / "extra.tls"
    text = (kdir / "naif.tls").read_text()
    extra.write_text(text.replace("37, @2017-JAN-1 )", "37, @2017-JAN-1\n 38, @2025-JUL-1 )"))
    t = [datetime(2025, 6, 30, tzinfo=UTC), datetime(2025, 7, 2, tzinfo=UTC)]
    with kernel_pool([kdir / "naif.tls"]):
        standard = utc_to_et(t)
    with kernel_pool([extra]):
        shifted = utc_to_et(t)
        ref = np.array([spiceypy.str2et(x.strftime("%Y-%m-%dT%H:%M:%S")) for x in t])
        after = et_to_datetime(float(shifted[1]))
    assert np.abs(shifted - ref).max() < 1e-6
    assert list(np.round(shifted - standard, 6)) == [0.0, 1.0]
    assert after == t[1]
    with kernel_pool([kdir / "mars.tpc"]), pytest.raises(SpiceyError, match="DELTET"):
        utc_to_et(t)


def test_planets_coverage(kdir: Path) -> None:
    info = inspect_kernel(kdir / "planets.bsp", support=[kdir / "naif.tls"])
    assert sorted(info.coverage) == [4, 10, 499]
    for spans in info.coverage.values():
        assert spans == [Interval(ss.PLANETS_START, ss.PLANETS_END)]


def test_ck_coverage_with_sclk_and_lsk(kdir: Path) -> None:
    info = inspect_kernel(kdir / "hope.bc", support=[kdir / "naif.tls", kdir / "hope.tsc"])
    (span,) = info.coverage[kernels.HOPE_CK_FRAME]
    assert close(span.start, START) and close(span.end, END)
    with pytest.raises(KernelLoadError, match="SCLK") as err:
        inspect_kernel(kdir / "hope.bc", support=[kdir / "naif.tls"])
    assert err.value.short == "SPICE(KERNELVARNOTFOUND)" and err.value.path.endswith("hope.bc")


@pytest.mark.parametrize("keep", [0, 100, 1024, 3000, 0.5, -1024])
def test_truncated_spk_is_rejected(kdir: Path, tmp_path: Path, keep: float) -> None:
    data = (kdir / "hope.bsp").read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep if keep >= 0 else len(data) + keep
    bad = tmp_path / "emm_spk_r_20210601_20210604_v01.bsp"
    bad.write_bytes(data[:n])
    with pytest.raises(KernelLoadError) as err:
        inspect_kernel(bad, support=[kdir / "naif.tls"])
    assert str(bad) in str(err.value)
    assert spiceypy.ktotal("ALL") == 0


@pytest.mark.parametrize("content", [os.urandom(4096), b"hello, I am not a kernel\n", b"DAF/SPK " + bytes(2000)])
def test_non_kernels_are_rejected(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "x.bsp"
    bad.write_bytes(content)
    with pytest.raises(KernelLoadError):
        inspect_kernel(bad)
    with pytest.raises(KernelLoadError, match="missing"):
        inspect_kernel(tmp_path / "nope.bsp")


def test_broken_text_kernel_is_rejected(kdir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.tls"
    bad.write_text((kdir / "naif.tls").read_text().replace("DELTET/K               =    1.657D-3", "DELTET/K = ( 1"))
    with pytest.raises(KernelLoadError) as err:
        inspect_kernel(bad)
    assert err.value.short.startswith("SPICE(") and err.value.long


def test_kernel_pool_always_clears(kdir: Path, tmp_path: Path) -> None:
    spiceypy.furnsh(str(kdir / "mars.tpc"))  # something left behind by someone else
    with kernel_pool([kdir / "naif.tls", kdir / "hope.bsp"]):
        assert spiceypy.ktotal("ALL") == 2
    assert spiceypy.ktotal("ALL") == 0
    with pytest.raises(RuntimeError), kernel_pool([kdir / "naif.tls"]):
        raise RuntimeError("task failed")
    assert spiceypy.ktotal("ALL") == 0
    bad = tmp_path / "bad.bsp"
    bad.write_bytes((kdir / "hope.bsp").read_bytes()[:100])  # furnsh cannot read its file record
    with pytest.raises(KernelLoadError, match=r"bad\.bsp"), kernel_pool([kdir / "naif.tls", bad]):
        pass
    assert spiceypy.ktotal("ALL") == 0
    with pytest.raises(KernelLoadError, match=r"NOSUCHFILE|FILE"), kernel_pool([tmp_path / "missing.tls"]):
        pass
    assert spiceypy.ktotal("ALL") == 0 and not spiceypy.failed()
    spiceypy.erract("SET", 16, "REPORT")
    with kernel_pool([kdir / "naif.tls"]):
        assert spiceypy.erract("GET", 16).strip() == "RETURN"


# --------------------------------------------------------------------------- meta-kernel load order

DAY = timedelta(days=1)
T0 = datetime(2021, 6, 1, tzinfo=UTC)


def hope_kernel(root: Path, cls: str, version: int, start: datetime, end: datetime,
                shift_x: float) -> kernels.KernelName:
    name = kernels.KernelName("spk", cls, version, ".bsp", start.date(), end.date())
    ss.write_hope_spk(root / name.relative_path, start, end, step_s=3600, shift_km=(shift_x, 0.0, 0.0))
    return name


def generic(root: Path) -> list[kernels.KernelName]:
    names = [kernels.parse_kernel_name(n) for n in ss.GENERIC_NAMES.values()]
    writers = {"lsk": ss.write_lsk, "pck": ss.write_pck, "sclk": ss.write_sclk, "pln": ss.write_planets_spk}
    for n in names:
        writers[n.kernel_type](root / n.relative_path)
    return names


@pytest.fixture(scope="module")
def layered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[kernels.KernelName]]:
    """p covers days 0-12 (+2 km), r v01 days 0-10 (+0.5 km, superseded), r v02 days 0-10 (exact),
    f days 4-6 (+1 km)."""
    root = tmp_path_factory.mktemp("layered")
    names = [
        hope_kernel(root, "f", 1, T0 + 4 * DAY, T0 + 6 * DAY, 1.0),
        hope_kernel(root, "r", 2, T0, T0 + 10 * DAY, 0.0),
        hope_kernel(root, "p", 1, T0, T0 + 12 * DAY, 2.0),
        hope_kernel(root, "r", 1, T0, T0 + 10 * DAY, 0.5),
        *generic(root),
    ]
    return root, names


def x_offset(meta_kernel: Path, times: list[datetime]) -> list[float]:
    with kernel_pool([meta_kernel]):
        ets = [spiceypy.str2et(t.strftime("%Y-%m-%dT%H:%M:%S")) for t in times]
        got = np.array([spiceypy.spkpos("-62", et, "J2000", "NONE", "MARS")[0] for et in ets])
    diff = got - ss.hope_state(np.array(ets))[0]
    assert np.abs(diff[:, 1:]).max() < 1e-6
    return [round(float(x), 6) for x in diff[:, 0]]


def test_meta_kernel_order_f_beats_r_beats_p(layered: tuple[Path, list[kernels.KernelName]]) -> None:
    root, names = layered
    mk = root / kernels.meta_kernel_name(1)
    mk.write_text(kernels.meta_kernel_text(1, names, str(root)))
    times = [T0 + 2 * DAY, T0 + 5 * DAY, T0 + 7 * DAY, T0 + 11 * DAY]
    #        r only (v02)    f                r               p only
    assert x_offset(mk, times) == [0.0, 1.0, 0.0, 2.0]
    assert "r_20210601_20210611_v01" not in mk.read_text()  # superseded by v02


def test_meta_kernel_p_vs_r(layered: tuple[Path, list[kernels.KernelName]]) -> None:
    root, names = layered
    only_p_r = [n for n in names if n.kernel_class != "f" and not (n.kernel_class == "r" and n.version == 2)]
    mk = root / "p_r.tm"
    mk.write_text(kernels.meta_kernel_text(2, reversed(only_p_r), str(root)))
    assert x_offset(mk, [T0 + 5 * DAY, T0 + 11 * DAY]) == [0.5, 2.0]


def test_meta_kernel_rebased(layered: tuple[Path, list[kernels.KernelName]], tmp_path: Path) -> None:
    root, names = layered
    text = kernels.rebase_meta_kernel(kernels.meta_kernel_text(1, names, "/nowhere"), str(root))
    (tmp_path / "mk.tm").write_text(text)
    assert x_offset(tmp_path / "mk.tm", [T0 + 5 * DAY]) == [1.0]


def long_root(tmp_path: Path, length: int) -> Path:
    root = tmp_path
    while len(str(root)) < length:
        root = root / ("d" * min(40, length - len(str(root)) - 1))
    assert len(str(root)) == length
    return root


def test_meta_kernel_root_of_80_characters_loads(tmp_path: Path) -> None:
    root = long_root(tmp_path, 80)
    names = generic(root)
    mk = tmp_path / "mk.tm"
    mk.write_text(kernels.meta_kernel_text(1, names, str(root)))
    with kernel_pool([mk]):
        assert spiceypy.ktotal("ALL") == 5


@pytest.mark.parametrize("length", [81, 150, 200])
def test_meta_kernel_long_root_loads(tmp_path: Path, length: int) -> None:
    root = long_root(tmp_path, length)
    names = generic(root)
    mk = tmp_path / "mk.tm"
    mk.write_text(kernels.meta_kernel_text(1, names, str(root)))
    with kernel_pool([mk]):
        assert spiceypy.ktotal("ALL") == 5
    mk.write_text(kernels.rebase_meta_kernel(kernels.meta_kernel_text(1, names, "/elsewhere"), str(root)))
    with kernel_pool([mk]):  # rebasing onto a long root keeps it loadable
        assert spiceypy.ktotal("ALL") == 5


