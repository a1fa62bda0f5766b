"""EMUS reference processor, run per the contract: l0 -> l1 -> l2a -> l2b, test hooks, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits

from emm_dev import synthetic
from emm_sdc.core import naming, packets

INST = "emu"


@pytest.fixture(scope="module")
def moc(tmp_path_factory: pytest.TempPathFactory) -> list[synthetic.Delivered]:
    return synthetic.generate(tmp_path_factory.mktemp("moc_emu"), orbits=(11, 12), instruments=(INST,))


@pytest.fixture(scope="module")
def chain(ref: Any, moc: list[synthetic.Delivered]) -> dict[str, Any]:
    """Two orbits' L0 and HK in one job -> l1 -> l2a -> l2b."""
    l1 = ref.run(INST, "l1", [d.path for d in moc], product_version=1, product_revision=2, kernel_class="n")
    assert l1.returncode == 0, l1.stderr
    l2a = ref.run(INST, "l2a", l1.products, product_version=1, product_revision=2, kernel_class="r",
                  spice_metakernel="/spice/mk/emm_rec_v010.tm")
    assert l2a.returncode == 0, l2a.stderr
    l2b = ref.run(INST, "l2b", l2a.products, product_version=4, product_revision=0, kernel_class="f")
    return {"l1": l1, "l2a": l2a, "l2b": l2b}


def test_l1_counts_cube_per_l0(ref: Any, chain: dict[str, Any], moc: list[synthetic.Delivered]) -> None:
    run = chain["l1"]
    names = ref.check_products(run, INST, "l1", version=1, revision=2, kernel="n", extension=".fits")
    l0 = [d for d in moc if d.level == "l0"]
    hk = {naming.parse(d.file_name).orbit: d.file_name for d in moc if d.level == "hk"}
    assert len(names) == len(l0) == 2
    for name, path, src in zip(names, run.products, l0, strict=True):
        src_name = naming.parse(src.file_name)
        # same observation: start, orbit and mode of the L0; lower-case 't' as on real EMUS products
        assert (name.start, name.orbit) == (src_name.start, src_name.orbit)
        assert (name.mode, name.descriptor) == ("os2", None)
        assert name.time_separator == "t"
        assert run.lineage[name.file_name] == [src.file_name, hk[name.orbit]]
        with fits.open(path) as hdul:
            h = hdul[0].header
            assert (h["INSTRUME"], h["LEVEL"], h["OBS_MODE"], h["ORBIT"], h["BUNIT"]) == \
                ("EMUS", "l1", "os2", name.orbit, "count")
            assert (h["PARENT01"], h["PARENT02"], h["NINTEG"], h["EXPTIME"]) == \
                (src.file_name, hk[name.orbit], synthetic.EMU_INTEGRATIONS, synthetic.EMU_INTEGRATION_S)
            cube = hdul[0].data
            assert cube.shape == (synthetic.EMU_INTEGRATIONS, packets.EMU_SPATIAL_ROWS,
                                  packets.EMU_SPECTRAL_BINS)
            np.testing.assert_allclose(hdul["WAVELENGTH"].data["WAVELENGTH"], synthetic.emu_wavelengths())
            times = hdul["INTEGRATIONS"].data["TIME"]
            assert np.all(np.diff(times) == synthetic.EMU_CADENCE_S)
            # the cube holds exactly the packets' counts, in order
            plen = packets.PACKET_TYPES[0x120].packet_len
            raw = np.frombuffer(src.path.read_bytes(), dtype=np.uint8).reshape(-1, plen)[:, 18:]
            expected = raw.copy().view(">u2").reshape(cube.shape)
            np.testing.assert_array_equal(cube, expected)


def test_l2a_radiance(ref: Any, chain: dict[str, Any]) -> None:
    run = chain["l2a"]
    names = ref.check_products(run, INST, "l2a", version=1, revision=2, kernel="r", extension=".fits")
    for name, path, parent in zip(names, run.products, chain["l1"].products, strict=True):
        assert run.lineage[name.file_name] == [parent.name]
        assert name.file_root == naming.parse(parent.name).file_root.replace("_l1_", "_l2a_")
        with fits.open(path) as hdul:
            h = hdul[0].header
            assert (h["BUNIT"], h["METAKERN"], h["KERNCLAS"], h["PARENT01"]) == \
                ("R/nm", "emm_rec_v010.tm", "r", parent.name)
            radiance, unc = hdul[0].data, hdul["UNCERTAINTY"].data
            assert radiance.shape == unc.shape == (20, 32, 512) and radiance.dtype.kind == "f"
            assert np.all(unc > 0)
            wl = hdul["WAVELENGTH"].data["WAVELENGTH"]
            mean = radiance.mean(axis=(0, 1))
            assert wl[np.argmax(mean)] == pytest.approx(121.6, abs=0.3)
            assert 5 < float(np.median(mean)) < 40  # continuum, R/nm


def test_l2b_line_brightness_table(ref: Any, chain: dict[str, Any]) -> None:
    run = chain["l2b"]
    names = ref.check_products(run, INST, "l2b", version=4, revision=0, kernel="f", extension=".fits")
    for name, path, parent in zip(names, run.products, chain["l2a"].products, strict=True):
        assert run.lineage[name.file_name] == [parent.name]
        with fits.open(path) as hdul:
            assert hdul[0].data is None and hdul[0].header["LEVEL"] == "l2b"
            table = hdul["LINES"].data
            assert len(table) == 20 * 32
            assert {"INTEGRATION", "SPATIAL_ROW", "TIME", "UTC", "HI_1216", "HI_1216_ERR", "OI_1304",
                    "OI_1304_ERR", "OI_1356", "OI_1356_ERR"} <= set(table.names)
            assert hdul["LINES"].columns["HI_1216"].unit == "R"
            lya, o1304, o1356 = (float(np.median(table[c])) for c in ("HI_1216", "OI_1304", "OI_1356"))
            # the fit recovers the synthetic brightnesses (5000, 800, 200 R scaled by the slit profile)
            assert 3000 < lya < 6000 and 300 < o1304 < 1000 and 60 < o1356 < 300
            assert float(np.median(table["OI_1356_ERR"])) < o1356 / 3


def test_same_job_gives_identical_bytes(ref: Any, chain: dict[str, Any]) -> None:
    again = ref.run(INST, "l2b", chain["l2a"].products, product_version=4, product_revision=0,
                    kernel_class="f")
    first = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in chain["l2b"].products}
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in again.products} == first


def test_staging_run_makes_the_same_data(ref: Any, chain: dict[str, Any],
                                         headers_without_run_identity: Any) -> None:
    staging = ref.run(INST, "l2a", chain["l1"].products, product_version=1, product_revision=2,
                      kernel_class="r", spice_metakernel="/spice/mk/emm_rec_v010.tm", environment="staging",
                      processing_run_id="staging-check/emu/7", env={"SOURCE_DATE_EPOCH": None})
    assert staging.manifest["products"] == chain["l2a"].manifest["products"]
    for prod, stage in zip(chain["l2a"].products, staging.products, strict=True):
        for ext in (0, "UNCERTAINTY", "INTEGRATIONS"):
            np.testing.assert_array_equal(fits.getdata(prod, ext), fits.getdata(stage, ext))
        assert headers_without_run_identity(prod) == headers_without_run_identity(stage)


def test_descriptor_is_kept(ref: Any, moc: list[synthetic.Delivered], tmp_path: Path) -> None:
    src = moc[0]
    renamed = tmp_path / src.file_name.replace("_os2_", "_os2_sw1of3_")
    renamed.write_bytes(src.path.read_bytes())
    run = ref.run(INST, "l1", [renamed])
    (name,) = ref.check_products(run, INST, "l1", version=1, revision=0, kernel="n", extension=".fits")
    assert (name.mode, name.descriptor) == ("os2", "sw1of3")
    assert fits.getheader(run.products[0])["DESCRIPT"] == "sw1of3"


# --------------------------------------------------------------------------- test hooks


@pytest.mark.parametrize("hook", ["crash", "extra-file", "bad-name", "hang"])
def test_hooks(ref: Any, chain: dict[str, Any], hook: str) -> None:
    ref.check_hook(INST, "l2b", chain["l2a"].products, hook)


def test_hook_crash_for_another_level_is_ignored(ref: Any, chain: dict[str, Any]) -> None:
    run = ref.run(INST, "l2b", chain["l2a"].products, env={"EMM_REF_FAIL": "crash@l1,l2a"})
    ref.check_products(run, INST, "l2b", version=1, revision=0, kernel="n", extension=".fits")


# --------------------------------------------------------------------------- bad input


def test_not_fits_input(ref: Any, chain: dict[str, Any], tmp_path: Path) -> None:
    fake = tmp_path / chain["l1"].products[0].name
    fake.write_bytes(b"this is not FITS")
    run = ref.run(INST, "l2a", [fake])
    assert run.returncode == 2 and fake.name in run.stderr and "FITS" in run.stderr


def test_foreign_packets(ref: Any, tmp_path: Path) -> None:
    exi = synthetic.generate(tmp_path / "exi", orbits=(11,), instruments=("exi",))[0]
    wrong = tmp_path / exi.file_name.replace("_exi_", "_emu_").replace("_xos1_", "_os2_")
    wrong.write_bytes(exi.path.read_bytes())
    run = ref.run(INST, "l1", [wrong])
    assert run.returncode == 2 and wrong.name in run.stderr and "APID" in run.stderr


def test_missing_input_file(ref: Any, moc: list[synthetic.Delivered], tmp_path: Path) -> None:
    run = ref.run(INST, "l1", [tmp_path / moc[0].file_name])
    assert run.returncode == 2 and moc[0].file_name in run.stderr


def test_other_instrument_input(ref: Any, tmp_path: Path) -> None:
    emr = synthetic.generate(tmp_path, orbits=(11,), instruments=("emr",))[0]
    run = ref.run(INST, "l1", [emr.path])
    assert run.returncode == 2 and "emr" in run.stderr


def test_unsupported_level(ref: Any, chain: dict[str, Any]) -> None:
    run = ref.run(INST, "l3", chain["l2a"].products)
    assert run.returncode == 2 and "l3" in run.stderr
