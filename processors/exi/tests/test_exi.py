"""EXI reference processor, run per the contract: l0 -> l1 -> l2a / l1ql, test hooks, bad input."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from emm_dev import synthetic
from emm_sdc.core import naming, packets

INST = "exi"


@pytest.fixture(scope="module")
def moc(tmp_path_factory: pytest.TempPathFactory) -> list[synthetic.Delivered]:
    return synthetic.generate(tmp_path_factory.mktemp("moc_exi"), orbits=(11,), instruments=(INST,))


@pytest.fixture(scope="module")
def metakernel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spice") / "emm_pred_v003.tm"
    path.write_text("KPL/MK\n")
    return path


@pytest.fixture(scope="module")
def chain(ref: Any, moc: list[synthetic.Delivered], metakernel: Path) -> dict[str, Any]:
    """l0 (+hk) -> l1 -> l2a and l1ql, each with its own version and kernel class."""
    l1 = ref.run(INST, "l1", [d.path for d in moc], product_version=2, product_revision=1, kernel_class="p")
    assert l1.returncode == 0, l1.stderr
    l2a = ref.run(INST, "l2a", l1.products, product_version=3, product_revision=0, kernel_class="r",
                  spice_metakernel=str(metakernel), parameters={"flat_field": "synthetic"})
    l1ql = ref.run(INST, "l1ql", l1.products, product_version=2, product_revision=1, kernel_class="p")
    return {"l1": l1, "l2a": l2a, "l1ql": l1ql}


def _l0_images(path: Path) -> list[tuple[int, float, np.ndarray]]:
    """(APID, first packet time, 256x256 image) straight from the L0 bytes."""
    plen = packets.PACKET_TYPES[0x110].packet_len
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8).reshape(-1, plen)
    images = []
    for k in range(0, len(raw), 256):
        block = raw[k : k + 256]
        apid = (int(block[0, 0]) << 8 | int(block[0, 1])) & 0x7FF
        coarse = int.from_bytes(bytes(block[0, 6:10]), "big")
        images.append((apid, coarse, block[:, 18:].copy().view(">u2").astype(np.uint16)))
    return images


def test_l1_one_image_per_filter_with_lineage(ref: Any, chain: dict[str, Any],
                                              moc: list[synthetic.Delivered]) -> None:
    run = chain["l1"]
    names = ref.check_products(run, INST, "l1", version=2, revision=1, kernel="p", extension=".fits")
    l0 = {naming.parse(d.file_name).mode: d for d in moc if d.level == "l0"}
    hk_file = next(d.file_name for d in moc if d.level == "hk")
    assert sorted((n.mode, n.descriptor) for n in names) == sorted(
        (mode, f) for mode, filters in synthetic.EXI_SEQUENCES.items() for f in filters)
    for name, path in zip(names, run.products, strict=True):
        assert run.lineage[name.file_name] == [l0[name.mode].file_name, hk_file]
        assert name.orbit == 11 and name.time_separator == "T"
        with fits.open(path) as hdul:
            h = hdul[0].header
            assert (h["MISSION"], h["TELESCOP"], h["INSTRUME"], h["LEVEL"]) == ("EMM", "HOPE", "EXI", "l1")
            assert (h["ORBIT"], h["OBS_MODE"], h["FILTER"]) == (11, name.mode, name.descriptor)
            assert h["KERNCLAS"] == "p"
            assert (h["PRODVER"], h["PRODREV"], h["PROCNAME"], h["PROCVER"]) == (2, 1, "emm-exi-ref", "1.0.0")
            assert (h["RUNID"], h["ENVIRON"], h["FILENAME"]) == ("test/exi/l1", "production", name.file_name)
            assert (h["PARENT01"], h["PARENT02"]) == (l0[name.mode].file_name, hk_file)
            assert "METAKERN" not in h and h["MISSROWS"] == 0
            assert 255 < h["DETTEMP"] < 270  # HK channel 0, in K
            assert h["DATE-OBS"].startswith(name.start.strftime("%Y-%m-%dT%H:%M:%S"))
            assert h["DATE-OBS"] < h["DATE-END"]
            assert hdul[0].data.dtype == np.uint16 and hdul[0].data.shape == (256, 256)
            rows = hdul["ROWTIME"].data
            assert len(rows) == 256 and np.all(np.diff(rows["TIME"]) > 0)
            assert hdul[0].verify_checksum() == 1


def test_l1_pixels_and_times_match_the_packets(chain: dict[str, Any], moc: list[synthetic.Delivered]) -> None:
    products = {naming.parse(p.name).descriptor: p for p in chain["l1"].products}
    epoch = datetime(2000, 1, 1, tzinfo=UTC)
    for d in (d for d in moc if d.level == "l0"):
        for apid, coarse, image in _l0_images(d.path):
            filt = {v: k for k, v in packets.EXI_FILTER_APIDS.items()}[apid]
            path = products[filt]
            assert naming.parse(path.name).start == epoch + timedelta(seconds=coarse)
            np.testing.assert_array_equal(fits.getdata(path), image)


def test_l2a_is_calibrated_reflectance(ref: Any, chain: dict[str, Any], metakernel: Path) -> None:
    run = chain["l2a"]
    names = ref.check_products(run, INST, "l2a", version=3, revision=0, kernel="r", extension=".fits")
    l1_by_root = {naming.parse(p.name).file_root.replace("_l1_", "_l2a_"): p.name
                  for p in chain["l1"].products}
    assert len(names) == 6
    for name, path in zip(names, run.products, strict=True):
        assert run.lineage[name.file_name] == [l1_by_root[name.file_root]]
        with fits.open(path) as hdul:
            h, data = hdul[0].header, hdul[0].data
            assert (h["LEVEL"], h["KERNCLAS"], h["PRODVER"]) == ("l2a", "r", 3)
            assert h["METAKERN"] == metakernel.name
            assert (h["BUNIT"], h["CALFLAT"]) == ("I/F", "synthetic")
            assert h["PARENT01"] == l1_by_root[name.file_root]
            assert data.dtype.kind == "f" and data.dtype.itemsize == 4 and data.shape == (256, 256)
            assert abs(float(np.median(data[:16, :16]))) < 0.005  # dark sky after dark subtraction
            assert 0.02 < float(np.percentile(data, 99)) < 1.0  # a sunlit disk in I/F
            assert float(data.max()) > 20 * float(np.std(data[:16, :16]))  # disk well above the noise


def test_l1ql_pngs(ref: Any, chain: dict[str, Any]) -> None:
    run = chain["l1ql"]
    names = ref.check_products(run, INST, "l1ql", version=2, revision=1, kernel="p", extension=".png")
    l1 = {naming.parse(p.name).file_root.replace("_l1_", "_l1ql_"): p.name for p in chain["l1"].products}
    for name, path in zip(names, run.products, strict=True):
        assert run.lineage[name.file_name] == [l1[name.file_root]]
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "L" and img.size == (256, 272)
            assert img.text["Title"] == name.file_name and img.text["Source"] == l1[name.file_root]
            pixels = np.asarray(img)[:256]
            assert pixels.max() == 255 and np.median(pixels[:16, :16]) < 40


def test_same_job_gives_identical_bytes(ref: Any, chain: dict[str, Any], metakernel: Path) -> None:
    again = ref.run(INST, "l2a", chain["l1"].products, product_version=3, product_revision=0,
                    kernel_class="r", spice_metakernel=str(metakernel),
                    parameters={"flat_field": "synthetic"})
    first = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in chain["l2a"].products}
    assert {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in again.products} == first


def test_staging_run_makes_the_same_data(ref: Any, chain: dict[str, Any], moc: list[synthetic.Delivered],
                                         headers_without_run_identity: Any) -> None:
    staging = ref.run(INST, "l1", [d.path for d in moc], product_version=2, product_revision=1,
                      kernel_class="p", environment="staging", processing_run_id="staging-check/exi/1",
                      env={"SOURCE_DATE_EPOCH": None})
    assert staging.manifest["products"] == chain["l1"].manifest["products"]
    for prod, stage in zip(chain["l1"].products, staging.products, strict=True):
        np.testing.assert_array_equal(fits.getdata(prod), fits.getdata(stage))
        np.testing.assert_array_equal(fits.getdata(prod, "ROWTIME"), fits.getdata(stage, "ROWTIME"))
        assert headers_without_run_identity(prod) == headers_without_run_identity(stage)
        assert fits.getheader(stage)["ENVIRON"] == "staging"


# --------------------------------------------------------------------------- test hooks


@pytest.mark.parametrize("hook", ["crash", "extra-file", "bad-name", "hang"])
def test_hooks(ref: Any, chain: dict[str, Any], hook: str) -> None:
    ref.check_hook(INST, "l1ql", chain["l1"].products, hook)


def test_hook_bad_name_via_step_parameter(ref: Any, chain: dict[str, Any]) -> None:
    ref.check_hook(INST, "l1ql", chain["l1"].products, "bad-name", via="parameter")


def test_unknown_hook_is_bad_input(ref: Any, chain: dict[str, Any]) -> None:
    run = ref.run(INST, "l1ql", chain["l1"].products, env={"EMM_REF_FAIL": "explode"})
    assert run.returncode == 2 and "unknown test hook" in run.stderr


# --------------------------------------------------------------------------- bad input, missing calibration


def test_unreadable_manifest(ref: Any, chain: dict[str, Any], tmp_path: Path) -> None:
    garbage = tmp_path / "manifest.json"
    garbage.write_text("{not json")
    run = ref.run(INST, "l1ql", chain["l1"].products, env={"EMM_INPUT_MANIFEST": str(garbage)})
    assert run.returncode == 2 and str(garbage) in run.stderr and run.files() == set()


def test_missing_input_file(ref: Any, moc: list[synthetic.Delivered], tmp_path: Path) -> None:
    ghost = tmp_path / "gone" / moc[0].file_name
    run = ref.run(INST, "l1", [ghost])
    assert run.returncode == 2 and moc[0].file_name in run.stderr and "missing" in run.stderr


def test_undecodable_packets(ref: Any, moc: list[synthetic.Delivered], tmp_path: Path) -> None:
    cut = synthetic.truncated(tmp_path, moc[0])
    run = ref.run(INST, "l1", [cut.path])
    assert run.returncode == 2 and cut.file_name in run.stderr and "truncated" in run.stderr
    assert run.manifest == {}


def test_checksum_mismatch(ref: Any, moc: list[synthetic.Delivered]) -> None:
    entry = {"file_name": moc[0].file_name, "path": str(moc[0].path), "level": "l0", "md5": "0" * 32}
    run = ref.run(INST, "l1", [moc[0].path], inputs=[entry])
    assert run.returncode == 2 and "MD5" in run.stderr and moc[0].file_name in run.stderr


@pytest.mark.parametrize(("level", "fragment"), [("l2a", "has level l0"), ("l2b", "not one of them")])
def test_wrong_level(ref: Any, moc: list[synthetic.Delivered], level: str, fragment: str) -> None:
    run = ref.run(INST, level, [moc[0].path])
    assert run.returncode == 2 and fragment in run.stderr


def test_missing_flat_field(ref: Any, chain: dict[str, Any], tmp_path: Path) -> None:
    run = ref.run(INST, "l2a", chain["l1"].products[:1], calibration_dir=str(tmp_path),
                  parameters={"flat_field": "exi_flat_{filter}.fits"})
    assert run.returncode == 3 and "exi_flat_f437.fits" in run.stderr


def test_flat_field_from_calibration_dir(ref: Any, chain: dict[str, Any], tmp_path: Path) -> None:
    fits.PrimaryHDU(np.full((256, 256), 0.5, dtype=np.float32)).writeto(tmp_path / "exi_flat_f437.fits")
    run = ref.run(INST, "l2a", chain["l1"].products[:1], calibration_dir=str(tmp_path),
                  parameters={"flat_field": "exi_flat_{filter}.fits"})
    ref.check_products(run, INST, "l2a", version=1, revision=0, kernel="n", extension=".fits")
    assert fits.getheader(run.products[0])["CALFLAT"] == "exi_flat_f437.fits"
    dn = fits.getdata(chain["l1"].products[0]).astype(np.float64)
    expected = ((dn - 100.0) / 0.5 / 15000.0).astype(np.float32)
    np.testing.assert_array_equal(fits.getdata(run.products[0]), expected)


def test_required_spice_missing(ref: Any, chain: dict[str, Any]) -> None:
    run = ref.run(INST, "l2a", chain["l1"].products[:1], parameters={"require_spice": True})
    assert run.returncode == 3 and "SPICE" in run.stderr


def test_manifest_and_environment_must_agree(ref: Any, chain: dict[str, Any]) -> None:
    run = ref.run(INST, "l1ql", chain["l1"].products, env={"EMM_TARGET_LEVEL": "l2a"})
    assert run.returncode == 2 and "disagrees" in run.stderr
    assert json.loads(Path(run.env["EMM_INPUT_MANIFEST"]).read_text())["target_level"] == "l1ql"
