"""Staging-check product comparison: FITS via FITSDiff, PNG pixels, tolerances, and real reference-processor output."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from emm_dev import synthetic
from emm_sdc.core import naming
from emm_sdc.core.compare import (
    DEFAULT_IGNORE_KEYWORDS,
    ComparisonReport,
    Status,
    Tolerances,
    compare_products,
)

REPO = Path(__file__).resolve().parents[2]
FITS_NAME = "emm_emr_l2_20210617T082144_0011_p_v02-00.fits"
GZ_NAME = "emm_exi_l2a_20210524T101500_0011_xos1_f437_p_v01-00.fits.gz"
PNG_NAME = "emm_emr_l2ql_20210617T082144_0011_p_v02-00.png"


def _image() -> np.ndarray:
    return np.linspace(1.0, 100.0, 12 * 16, dtype=np.float32).reshape(12, 16)


def _table(tsurf: np.ndarray | None = None) -> fits.BinTableHDU:
    n = 8
    return fits.BinTableHDU.from_columns([
        fits.Column(name="TIME", format="D", unit="s", array=np.arange(n, dtype=np.float64) * 2.0),
        fits.Column(name="DETECTOR", format="J", array=np.arange(n) % 3),
        fits.Column(name="TSURF", format="E", unit="K", array=np.linspace(210, 260, n) if tsurf is None else tsurf),
        fits.Column(name="FLAG", format="8A", array=np.array(["ok"] * n)),
    ], name="SPECTRA")


def write_fits(path: Path, data: np.ndarray | None = None, table: fits.BinTableHDU | None = None,
               **keywords: Any) -> Path:
    """A small product like the reference processors': run-identity cards, a calibration keyword, checksums."""
    header = fits.Header()
    header["DATE"] = ("2026-01-01T00:00:00", "file creation time (UTC)")
    header["INSTRUME"] = "EMIRS"
    header["PROCNAME"] = ("emm-emr-ref", "processor name")
    header["PROCVER"] = ("1.0.0", "processor version")
    header["RUNID"] = ("production/emr/l2/1", "SDC processing run id")
    header["ENVIRON"] = ("production", "SDC environment")
    header["CALFACT"] = (1.25, "calibration factor")
    for key, value in keywords.items():
        if value is None:
            del header[key]
        else:
            header[key] = value
    hdul = fits.HDUList([fits.PrimaryHDU(_image() if data is None else data, header), table or _table()])
    if path.name.endswith(".gz"):
        raw = path.with_suffix("")
        hdul.writeto(raw, checksum=True, overwrite=True)
        path.write_bytes(gzip.compress(raw.read_bytes(), mtime=0))
        raw.unlink()
    else:
        hdul.writeto(path, checksum=True, overwrite=True)
    return path


def write_png(path: Path, pixels: np.ndarray | None = None, text: str = "emm-emr-ref 1.0.0") -> Path:
    if pixels is None:
        pixels = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (40, 1, 3))
    info = PngInfo()
    info.add_text("Software", text)
    Image.fromarray(pixels).save(path, format="PNG", pnginfo=info)
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """Production and candidate directories holding the same FITS, FITS.gz and PNG products."""
    prod, cand = tmp_path / "production", tmp_path / "candidate"
    for d, env in ((prod, "production"), (cand, "staging")):
        d.mkdir()
        write_fits(d / FITS_NAME, ENVIRON=env)
        write_fits(d / GZ_NAME, ENVIRON=env)
        write_png(d / PNG_NAME)
        (d / "output_manifest.json").write_text(json.dumps({"environment": env}))
        (d / "job.log").write_text(f"running in {env}\n")
    return prod, cand


def only(report: ComparisonReport, name: str) -> Any:
    return next(f for f in report.files if f.file_name == name)


def text_of(report: ComparisonReport, name: str) -> str:
    return "\n".join(str(d) for d in only(report, name).differences)


def test_identical_directories_pass(dirs: tuple[Path, Path]) -> None:
    report = compare_products(*dirs, Tolerances())
    assert report.passed
    assert [(f.file_name, f.kind, f.status) for f in report.files] == [
        (FITS_NAME, "fits", Status.IDENTICAL), (PNG_NAME, "png", Status.IDENTICAL), (GZ_NAME, "fits", Status.IDENTICAL),
    ]
    assert report.counts == {"identical": 3, "within_tolerance": 0, "different": 0, "compared": 3,
                             "only_in_production": 0, "only_in_candidate": 0}
    doc = json.loads(json.dumps(report.to_dict()))  # manifest and log differ but are not compared
    assert doc["passed"] is True and doc["tolerances"]["ignore_keywords"] == list(DEFAULT_IGNORE_KEYWORDS)
    assert report.summary().startswith("staging check PASSED: 3 product(s) compared, 3 identical")


def test_data_change_beyond_tolerance_fails_and_says_where_and_how_much(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    data = _image()
    data[3, 5] += 0.5
    data[7, 1] -= 2.0
    write_fits(cand / FITS_NAME, data, ENVIRON="staging")
    report = compare_products(prod, cand, Tolerances(atol=0.1))
    assert not report.passed
    result = only(report, FITS_NAME)
    assert result.status is Status.DIFFERENT and len(result.differences) == 1
    diff = result.differences[0]
    assert diff.where == "HDU 0 PRIMARY data"
    assert diff.what.startswith("2 of 192 value(s) differ beyond tolerance")
    assert "max abs diff 2" in diff.what and "first at (3, 5)" in diff.what
    assert f"{FITS_NAME}: HDU 0 PRIMARY data: 2 of 192" in report.summary()
    assert report.counts["different"] == 1 and report.counts["identical"] == 2


def test_change_within_tolerance_passes_as_within_tolerance(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    data = _image() * np.float32(1 + 1e-5)
    write_fits(cand / FITS_NAME, data, ENVIRON="staging")
    report = compare_products(prod, cand, Tolerances(rtol=1e-4))
    assert report.passed and report.counts["within_tolerance"] == 1
    result = only(report, FITS_NAME)
    assert result.status is Status.WITHIN_TOLERANCE
    assert "HDU 0 PRIMARY data: 192 of 192 value(s) differ (100.00%), max abs diff" in text_of(report, FITS_NAME)
    assert "beyond" not in text_of(report, FITS_NAME)
    # the same change with an absolute tolerance, and beyond a tighter relative one
    assert compare_products(prod, cand, Tolerances(atol=0.01)).passed
    assert only(compare_products(prod, cand, Tolerances(rtol=1e-6)), FITS_NAME).status is Status.DIFFERENT
    assert only(compare_products(prod, cand, Tolerances()), FITS_NAME).status is Status.DIFFERENT


def test_integer_data_ignores_tolerances(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    dn = np.arange(192, dtype=np.int16).reshape(12, 16)
    write_fits(prod / FITS_NAME, dn)
    write_fits(cand / FITS_NAME, dn + 1)
    result = only(compare_products(prod, cand, Tolerances(atol=5)), FITS_NAME)
    assert result.status is Status.DIFFERENT
    assert "192 of 192 value(s) differ beyond tolerance (100.00%), max abs diff 1," in result.differences[0].what


@pytest.mark.parametrize("keyword", ["DATE", "RUNID", "ENVIRON", "PROCVER"])
def test_changed_run_identity_keyword_passes(dirs: tuple[Path, Path], keyword: str) -> None:
    prod, cand = dirs
    write_fits(cand / FITS_NAME, **{keyword: "2099-12-31T23:59:59"})  # CHECKSUM changes too
    report = compare_products(prod, cand, Tolerances())
    assert report.passed and only(report, FITS_NAME).status is Status.IDENTICAL


def test_changed_calibration_keyword_fails_and_is_named(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    write_fits(cand / FITS_NAME, ENVIRON="staging", CALFACT=(1.5, "calibration factor"), NEWKEY=3)
    report = compare_products(prod, cand, Tolerances())
    assert not report.passed
    assert text_of(report, FITS_NAME).splitlines() == [
        "HDU 0 PRIMARY keyword NEWKEY: only in candidate",
        "HDU 0 PRIMARY keyword CALFACT: value 1.25 in production, 1.5 in candidate",
    ]
    # header floats honour the tolerances too; a keyword the ITF ignores is not compared
    lenient = Tolerances(rtol=0.5, ignore_keywords=(*DEFAULT_IGNORE_KEYWORDS, "newkey"))
    assert only(compare_products(prod, cand, lenient), FITS_NAME).status is Status.WITHIN_TOLERANCE


def test_ignored_keyword_on_one_side_only_is_not_a_difference(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    write_fits(cand / FITS_NAME, ENVIRON=None)  # FITSDiff still counts the cards; we do not
    assert only(compare_products(prod, cand, Tolerances()), FITS_NAME).status is Status.IDENTICAL


def test_missing_and_extra_files_fail(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    (cand / PNG_NAME).unlink()
    write_fits(cand / FITS_NAME.replace("v02-00", "v02-01"))
    (cand / "other.log").write_text("ignored")
    report = compare_products(prod, cand, Tolerances())
    assert not report.passed
    assert report.only_in_production == (PNG_NAME,)
    assert report.only_in_candidate == (FITS_NAME.replace("v02-00", "v02-01"),)
    assert all(f.status is Status.IDENTICAL for f in report.files) and report.counts["compared"] == 2
    summary = report.summary()
    assert f"only in production: {PNG_NAME}" in summary and "1 only in candidate" in summary


def test_nothing_to_compare_does_not_pass(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    report = compare_products(tmp_path / "a", tmp_path / "b", Tolerances())
    assert not report.passed and "no products on either side" in report.summary()
    with pytest.raises(NotADirectoryError):
        compare_products(tmp_path / "a", tmp_path / "missing", Tolerances())


def test_table_column_value_change_is_caught(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    tsurf = np.linspace(210, 260, 8)
    tsurf[6] += 0.25
    table = _table(tsurf)
    table.data["DETECTOR"][2] = 7
    write_fits(cand / FITS_NAME, table=table, ENVIRON="staging")
    report = compare_products(prod, cand, Tolerances(atol=0.01))
    assert not report.passed
    lines = text_of(report, FITS_NAME).splitlines()
    assert lines[0] == "HDU 1 SPECTRA column DETECTOR: 1 of 8 row(s) differ beyond tolerance, max abs diff 5, " \
                       "max rel diff 2.5; first at row 2: production 2, candidate 7"
    assert lines[1].startswith("HDU 1 SPECTRA column TSURF: 1 of 8 row(s) differ beyond tolerance, max abs diff 0.25")
    assert len(lines) == 2
    # within tolerance for the float column, still different for the integer one
    lines = text_of(compare_products(prod, cand, Tolerances(atol=0.5)), FITS_NAME).splitlines()
    assert len(lines) == 1 and "column DETECTOR" in lines[0]


def test_table_column_definition_changes_are_named(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    table = _table()
    table.columns.change_unit("TSURF", "Kelvin")
    extra = fits.BinTableHDU.from_columns([*table.columns, fits.Column(name="TCO2", format="E", array=np.ones(8))],
                                          name="SPECTRA")
    write_fits(cand / FITS_NAME, table=extra, ENVIRON="staging")
    text = text_of(compare_products(prod, cand, Tolerances()), FITS_NAME)
    assert "HDU 1 SPECTRA column TCO2: only in candidate (format E)" in text
    assert "HDU 1 SPECTRA column TSURF: unit 'K' in production, 'Kelvin' in candidate" in text


def test_renamed_extension_is_named(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    table = _table()
    table.name = "SPECTRUM"
    write_fits(cand / FITS_NAME, table=table, ENVIRON="staging")
    text = text_of(compare_products(prod, cand, Tolerances()), FITS_NAME)
    assert text == "HDU 1 SPECTRA EXTNAME: 'SPECTRA' in production, 'SPECTRUM' in candidate\n" \
                   "HDU 1 SPECTRA keyword EXTNAME: value 'SPECTRA' in production, 'SPECTRUM' in candidate"


def test_fits_gz_products(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    write_fits(cand / GZ_NAME, _image() + 1, ENVIRON="staging")
    report = compare_products(prod, cand, Tolerances())
    result = only(report, GZ_NAME)
    assert result.kind == "fits" and result.status is Status.DIFFERENT
    assert result.differences[0].what.startswith("192 of 192 value(s) differ (100.00%), max abs diff 1,")
    assert compare_products(prod, cand, Tolerances(atol=1.01)).passed


def test_png_within_and_beyond_tolerance(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    pixels = np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 3, (40, 1, 3))
    pixels[10, 20:23] += np.array([2, 0, 1], dtype=np.uint8)[:, None]
    write_png(cand / PNG_NAME, pixels, text="emm-emr-ref 2.0.0")  # text chunks are not compared
    within = compare_products(prod, cand, Tolerances(png_max_abs_diff=2))
    assert within.passed and only(within, PNG_NAME).status is Status.WITHIN_TOLERANCE
    assert text_of(within, PNG_NAME) == "pixels: 2 of 2560 pixel(s) differ, max abs diff 2 (tolerance 2)"
    beyond = compare_products(prod, cand, Tolerances(png_max_abs_diff=1))
    assert not beyond.passed
    assert text_of(beyond, PNG_NAME) == "pixels: 1 of 2560 pixel(s) differ by more than 1, max abs diff 2 (tolerance 1)"
    write_png(cand / PNG_NAME, pixels[:, :32])
    text = text_of(compare_products(prod, cand, Tolerances(png_max_abs_diff=255)), PNG_NAME)
    assert text == "image: mode RGB size 64x40 in production, mode RGB size 32x40 in candidate"


@pytest.mark.parametrize("name", [FITS_NAME, GZ_NAME, PNG_NAME])
@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_product_is_a_difference_not_a_crash(dirs: tuple[Path, Path], name: str, damage: str) -> None:
    prod, cand = dirs
    good = (prod / name).read_bytes()
    bad = {"truncated": good[: len(good) - 1000], "garbage": b"not a product " * 50, "empty": b""}[damage]
    (cand / name).write_bytes(bad)
    report = compare_products(prod, cand, Tolerances())
    result = only(report, name)
    assert not report.passed and result.status is Status.DIFFERENT
    assert result.differences[0].where == "file" and "candidate copy is not" in result.differences[0].what
    assert report.counts["identical"] == 2
    (prod / name).write_bytes(bad)  # unreadable on both sides still fails
    result = only(compare_products(prod, cand, Tolerances()), name)
    assert result.status is Status.DIFFERENT and len(result.differences) == 2


def test_other_files_compared_by_bytes(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    (prod / "notes.txt").write_text("a")
    (cand / "notes.txt").write_text("b")
    result = only(compare_products(prod, cand, Tolerances()), "notes.txt")
    assert (result.kind, result.status, str(result.differences[0])) == (
        "file", Status.DIFFERENT, "file: contents differ (byte comparison)")


def test_long_reports_are_capped(dirs: tuple[Path, Path]) -> None:
    prod, cand = dirs
    write_fits(cand / FITS_NAME, ENVIRON="staging", **{f"EXTRA{i:02d}": i for i in range(30)})
    result = only(compare_products(prod, cand, Tolerances()), FITS_NAME)
    assert len(result.differences) == 20 and result.omitted == 10
    assert result.to_dict()["omitted"] == 10


def test_tolerances_from_dict() -> None:
    assert Tolerances.from_dict(None) == Tolerances.from_dict({}) == Tolerances()
    tol = Tolerances.from_dict({"rtol": 1e-6, "atol": 0, "ignore_keywords": ["date", "RUNID", "HIST*"],
                                "png_max_abs_diff": 2})
    # YAML keywords add to the defaults (an ITF cannot drop the run-identity keywords by accident)
    defaults = Tolerances().ignore_keywords
    assert tol == Tolerances(rtol=1e-6, atol=0.0, ignore_keywords=(*defaults, "HIST*"), png_max_abs_diff=2)
    assert tol.to_dict() == {"rtol": 1e-6, "atol": 0.0, "ignore_keywords": [*defaults, "HIST*"],
                             "png_max_abs_diff": 2}
    with pytest.raises(ValueError, match=r"unknown tolerance key\(s\): ignore_keyword, rtoll; allowed: atol, "
                                         r"ignore_keywords, png_max_abs_diff, rtol"):
        Tolerances.from_dict({"rtol": 0.1, "rtoll": 0.1, "ignore_keyword": ["X"]})


@pytest.mark.parametrize(("data", "message"), [
    ({"rtol": -1}, "rtol must be a finite number >= 0"),
    ({"atol": "0.1"}, "atol must be a finite number >= 0"),
    ({"atol": float("nan")}, "atol must be a finite number >= 0"),
    ({"png_max_abs_diff": 1.5}, "png_max_abs_diff must be an integer >= 0"),
    ({"png_max_abs_diff": True}, "png_max_abs_diff must be an integer >= 0"),
    ({"ignore_keywords": "RUNID"}, "ignore_keywords must be a list"),
    ({"ignore_keywords": ["RUNID", ""]}, "ignore_keywords must hold non-empty strings"),
    (["rtol"], "tolerances must be a mapping"),
])
def test_tolerances_from_dict_rejects_bad_values(data: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Tolerances.from_dict(data)


# --------------------------------------------------------------------------- real reference-processor output


def _run_emirs(base: Path, environment: str, run_id: str, level: str, inputs: list[Path], kernel: str) -> Path:
    """Run the EMIRS reference processor per the contract (no SOURCE_DATE_EPOCH: DATE is the wall clock)."""
    out = base / environment / level
    out.mkdir(parents=True)
    manifest = base / f"{environment}_{level}.json"
    manifest.write_text(json.dumps({
        "contract_version": 1, "instrument": "emr", "target_level": level, "work_unit": "orbit-0011",
        "product_version": 2, "product_revision": 0, "kernel_class": kernel, "processing_run_id": run_id,
        "environment": environment, "spice_metakernel": None, "calibration_dir": None, "parameters": {},
        "inputs": [{"file_name": p.name, "path": str(p), "level": naming.parse(p.name).level, "md5": None}
                   for p in inputs],
    }))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EMM_") and k not in ("PYTHONPATH", "SOURCE_DATE_EPOCH")}
    env.update(EMM_INPUT_MANIFEST=str(manifest), EMM_OUTPUT_DIR=str(out), EMM_INSTRUMENT="emr",
               EMM_TARGET_LEVEL=level, EMM_PRODUCT_VERSION="2", EMM_PRODUCT_REVISION="0", EMM_KERNEL_CLASS=kernel,
               EMM_SPICE_METAKERNEL="", EMM_CALIBRATION_DIR="", EMM_ENVIRONMENT=environment,
               EMM_PROCESSING_RUN_ID=run_id)
    command = [sys.executable, str(REPO / "processors/launch.py"), str(REPO / "processors/emirs/processor.py")]
    proc = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out


def test_reference_processor_staging_and_production_runs_compare_equal(tmp_path: Path) -> None:
    moc = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("emr",))
    l0 = [d.path for d in moc if d.level == "l0"]
    outputs: dict[str, dict[str, Path]] = {}
    for environment, run_id in (("production", "production/emr/l1/17"), ("staging", "staging-check/emr/3")):
        l1 = _run_emirs(tmp_path, environment, run_id, "l1", l0, "n")
        l2 = _run_emirs(tmp_path, environment, run_id, "l2", sorted(l1.glob("*.fits")), "p")
        l2ql = _run_emirs(tmp_path, environment, run_id, "l2ql", sorted(l2.glob("*.fits")), "p")
        outputs[environment] = {"l1": l1, "l2": l2, "l2ql": l2ql}
    for level, kind in (("l1", "fits"), ("l2", "fits"), ("l2ql", "png")):
        report = compare_products(outputs["production"][level], outputs["staging"][level], Tolerances())
        assert report.passed, report.summary()
        assert report.counts["identical"] == 2 and {f.kind for f in report.files} == {kind}
    # the runs did differ, and only in the default ignored keywords
    raw = compare_products(outputs["production"]["l1"], outputs["staging"]["l1"], Tolerances(ignore_keywords=()))
    assert not raw.passed
    changed = {d.where.rsplit(" ", 1)[-1].split("[")[0] for f in raw.files for d in f.differences}
    assert {"RUNID", "ENVIRON", "CHECKSUM"} <= changed <= set(DEFAULT_IGNORE_KEYWORDS)
