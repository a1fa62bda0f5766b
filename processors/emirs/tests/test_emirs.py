"""EMIRS reference processor, run per the contract: l0 -> l1 -> l2 -> l2ql, test hooks, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from emm_dev import synthetic
from emm_sdc.core import naming

INST = "emr"


@pytest.fixture(scope="module")
def moc(tmp_path_factory: pytest.TempPathFactory) -> list[synthetic.Delivered]:
    return synthetic.generate(tmp_path_factory.mktemp("moc_emr"), orbits=(11,), instruments=(INST,))


@pytest.fixture(scope="module")
def chain(ref: Any, moc: list[synthetic.Delivered]) -> dict[str, Any]:
    """Both L0 files of the orbit (no HK) -> l1 -> l2 -> l2ql."""
    l0 = [d.path for d in moc if d.level == "l0"]
    l1 = ref.run(INST, "l1", l0, product_version=2, product_revision=0, kernel_class="n")
    assert l1.returncode == 0, l1.stderr
    l2 = ref.run(INST, "l2", l1.products, product_version=2, product_revision=0, kernel_class="p")
    assert l2.returncode == 0, l2.stderr
    l2ql = ref.run(INST, "l2ql", l2.products, product_version=2, product_revision=0, kernel_class="p")
    return {"l1": l1, "l2": l2, "l2ql": l2ql}


def test_l1_dn_spectra(ref: Any, chain: dict[str, Any], moc: list[synthetic.Delivered]) -> None:
    run = chain["l1"]
    names = ref.check_products(run, INST, "l1", version=2, revision=0, kernel="n", extension=".fits")
    l0 = [d for d in moc if d.level == "l0"]
    assert len(names) == 2
    for name, path, src in zip(names, run.products, l0, strict=True):
        assert run.lineage[name.file_name] == [src.file_name]  # no HK given, none listed
        assert name.start == naming.parse(src.file_name).start and name.time_separator == "t"
        assert (name.mode, name.descriptor) == (None, None)
        with fits.open(path) as hdul:
            h = hdul[0].header
            assert (h["INSTRUME"], h["LEVEL"], h["ORBIT"], h["BUNIT"]) == ("EMIRS", "l1", 11, "DN")
            assert h["NSPECTRA"] == 60
            assert "OBS_MODE" not in h and "FILTER" not in h and "DETTEMP" not in h and "PARENT02" not in h
            assert hdul[0].data.shape == (60, 256) and hdul[0].data.dtype == np.uint16
            spectra = hdul["SPECTRA"].data
            assert np.all(np.diff(spectra["TIME"]) > 0)
            assert sorted(set(spectra["DETECTOR"])) == [0, 1, 2]
            np.testing.assert_allclose(hdul["WAVENUMBER"].data["WAVENUMBER"], synthetic.emr_wavenumbers())
            plen = 530
            raw = np.frombuffer(src.path.read_bytes(), dtype=np.uint8).reshape(-1, plen)[:, 18:]
            np.testing.assert_array_equal(hdul[0].data, raw.copy().view(">u2"))


def test_l2_radiance_and_brightness_temperature(ref: Any, chain: dict[str, Any]) -> None:
    run = chain["l2"]
    names = ref.check_products(run, INST, "l2", version=2, revision=0, kernel="p", extension=".fits")
    for name, path, parent in zip(names, run.products, chain["l1"].products, strict=True):
        assert run.lineage[name.file_name] == [parent.name]
        with fits.open(path) as hdul:
            assert hdul[0].header["BUNIT"] == "W m-2 sr-1 (cm-1)-1" and hdul[0].header["KERNCLAS"] == "p"
            radiance = hdul[0].data
            table = hdul["SPECTRA"].data
            assert radiance.shape == (60, 256) and table["BT"].shape == (60, 256)
            np.testing.assert_array_equal(table["RADIANCE"], radiance)
            nu = hdul["WAVENUMBER"].data["WAVENUMBER"]
            assert 0.01 < float(radiance[:, (nu > 400) & (nu < 600)].mean()) < 0.2
            assert np.all((table["TSURF"] > 200) & (table["TSURF"] < 290))
            assert np.all(table["TCO2"] < table["TSURF"] - 15)  # the cold 15 um band
            assert hdul["SPECTRA"].columns["BT"].unit == "K"


def test_l2ql_plots(ref: Any, chain: dict[str, Any]) -> None:
    run = chain["l2ql"]
    names = ref.check_products(run, INST, "l2ql", version=2, revision=0, kernel="p", extension=".png")
    for name, path, parent in zip(names, run.products, chain["l2"].products, strict=True):
        assert run.lineage[name.file_name] == [parent.name]
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (800, 560)
            assert img.text["Title"] == name.file_name
            pixels = np.asarray(img)
        red = (pixels[..., 0] > 180) & (pixels[..., 1] < 90)  # the brightness temperature curve
        blue = (pixels[..., 2] > 150) & (pixels[..., 0] < 80)  # the radiance curve
        assert red.sum() > 500 and blue.sum() > 500


def test_same_job_gives_identical_bytes(ref: Any, chain: dict[str, Any]) -> None:
    for level, parents in (("l2", chain["l1"].products), ("l2ql", chain["l2"].products)):
        again = ref.run(INST, level, parents, product_version=2, product_revision=0, kernel_class="p")
        first = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in chain[level].products}
        assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in again.products} == first


def test_staging_run_makes_the_same_data(ref: Any, chain: dict[str, Any], moc: list[synthetic.Delivered],
                                         headers_without_run_identity: Any) -> None:
    l0 = [d.path for d in moc if d.level == "l0"]
    staging = ref.run(INST, "l1", l0, product_version=2, product_revision=0, kernel_class="n",
                      environment="staging", processing_run_id="staging-check/emr/3",
                      env={"SOURCE_DATE_EPOCH": None})
    for prod, stage in zip(chain["l1"].products, staging.products, strict=True):
        for ext in (0, "SPECTRA", "WAVENUMBER"):
            np.testing.assert_array_equal(fits.getdata(prod, ext), fits.getdata(stage, ext))
        assert headers_without_run_identity(prod) == headers_without_run_identity(stage)


def test_hk_adds_detector_temperature(ref: Any, moc: list[synthetic.Delivered]) -> None:
    l0 = next(d for d in moc if d.level == "l0")
    hk = next(d for d in moc if d.level == "hk")
    run = ref.run(INST, "l1", [l0.path, hk.path])
    assert run.lineage == {run.products[0].name: [l0.file_name, hk.file_name]}
    assert 290 < fits.getheader(run.products[0])["DETTEMP"] < 305


# --------------------------------------------------------------------------- test hooks


@pytest.mark.parametrize("hook", ["crash", "extra-file", "bad-name", "hang"])
def test_hooks(ref: Any, chain: dict[str, Any], hook: str) -> None:
    ref.check_hook(INST, "l2", chain["l1"].products, hook)


# --------------------------------------------------------------------------- bad input


def test_zero_byte_l0(ref: Any, moc: list[synthetic.Delivered], tmp_path: Path) -> None:
    empty = synthetic.zero_byte(tmp_path, moc[0])
    run = ref.run(INST, "l1", [empty.path])
    assert run.returncode == 2 and empty.file_name in run.stderr and "empty" in run.stderr


def test_manifest_without_inputs(ref: Any, tmp_path: Path) -> None:
    run = ref.run(INST, "l1", [], inputs=[])
    assert run.returncode == 2 and "inputs" in run.stderr


def test_manifest_for_another_instrument(ref: Any, moc: list[synthetic.Delivered]) -> None:
    run = ref.run(INST, "l1", [moc[0].path], instrument="exi", env={"EMM_INSTRUMENT": "exi"})
    assert run.returncode == 2 and "emm-emr-ref processes instrument 'emr'" in run.stderr


def test_version_out_of_range(ref: Any, moc: list[synthetic.Delivered]) -> None:
    run = ref.run(INST, "l1", [moc[0].path], product_version=100)
    assert run.returncode == 2 and "product version" in run.stderr
