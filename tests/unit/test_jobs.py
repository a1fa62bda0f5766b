"""The contract's output check: every problem reported, any problem rejects the job."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from emm_sdc.core.jobs import JobInput, JobSpec, OutputError, collect_outputs, safe_id

L0 = "emm_emr_l0_20210617T082144_0011_n_v01-00.bin"
L1 = "emm_emr_l1_20210617t082144_0011_n_v01-00.fits"


def spec(tmp_path: Path) -> JobSpec:
    s = JobSpec(job_id="j", instrument="emr", level="l1", work_unit="orbit-0011", workdir=str(tmp_path),
                version=1, revision=0, kernel_class="n", inputs=[JobInput(L0, "k", "0" * 32, "l0")])
    s.output_dir.mkdir(parents=True)
    return s


def write(s: JobSpec, files: dict[str, bytes], products: list[dict]) -> None:
    for name, data in files.items():
        (s.output_dir / name).write_bytes(data)
    (s.output_dir / "output_manifest.json").write_text(json.dumps(
        {"contract_version": 1, "processor": {"name": "p", "version": "1"}, "products": products}))


def fits_bytes(*, checksum: bool = True) -> bytes:
    """A small valid FITS file (with CHECKSUM/DATASUM unless ``checksum`` is false)."""
    buf = io.BytesIO()
    fits.PrimaryHDU(np.arange(16, dtype=np.int16).reshape(4, 4)).writeto(buf, checksum=checksum)
    return buf.getvalue()


def test_valid_outputs(tmp_path: Path) -> None:
    s = spec(tmp_path)
    write(s, {L1: fits_bytes(), "job.log": b"log"}, [{"file_name": L1, "inputs": [L0]}])
    products, processor = collect_outputs(s)
    assert [p.name.file_name for p in products] == [L1]
    assert products[0].inputs == (L0,) and products[0].size == 5760
    assert processor == {"name": "p", "version": "1"}


def test_every_problem_is_listed(tmp_path: Path) -> None:
    s = spec(tmp_path)
    wrong_level = "emm_emr_l2_20210617t082144_0011_n_v01-00.fits"
    wrong_rev = "emm_emr_l1_20210617t082144_0011_n_v01-03.fits"
    write(s, {wrong_level: b"x", wrong_rev: b"x", "stray.txt": b"x", "bad_name.fits": b"x", "empty_" + L1: b""},
          [{"file_name": wrong_level, "inputs": [L0]}, {"file_name": wrong_rev, "inputs": ["other.bin"]},
           {"file_name": "bad_name.fits", "inputs": [L0]}, {"file_name": "missing.fits", "inputs": [L0]},
           {"file_name": L1}])
    with pytest.raises(OutputError) as err:
        collect_outputs(s)
    text = "\n".join(err.value.problems)
    for phrase in ("level is 'l2', the job asked for 'l1'", "revision is 3, the job asked for 0",
                   "lists inputs that were not given to the job: ['other.bin']",
                   "stray.txt: written to the output directory but not listed",
                   "bad_name.fits: file_name=", "missing.fits: listed in output_manifest.json but not written",
                   "'inputs' must list the input file names"):
        assert phrase in text, phrase


def test_content_problems_are_listed_with_the_other_problems(tmp_path: Path) -> None:
    """A product that is not FITS is reported (file and rule) together with a naming problem of another."""
    s = spec(tmp_path)
    wrong_rev = "emm_emr_l1_20210617t082144_0011_n_v01-03.fits"
    write(s, {L1: b"x" * 10, wrong_rev: fits_bytes(checksum=False)},
          [{"file_name": L1, "inputs": [L0]}, {"file_name": wrong_rev, "inputs": [L0]}])
    with pytest.raises(OutputError) as err:
        collect_outputs(s)
    text = "\n".join(err.value.problems)
    assert f"{L1}: fits-structure: astropy cannot read it as FITS" in text
    assert f"{wrong_rev}: revision is 3" in text and f"{wrong_rev}: fits-checksum: HDU 0 (PRIMARY) has no" in text


def test_missing_or_broken_manifest(tmp_path: Path) -> None:
    s = spec(tmp_path)
    with pytest.raises(OutputError, match=r"output_manifest\.json is missing"):
        collect_outputs(s)
    (s.output_dir / "output_manifest.json").write_text("{nope")
    with pytest.raises(OutputError, match="not valid JSON"):
        collect_outputs(s)


def test_manifest_and_env_follow_the_contract(tmp_path: Path) -> None:
    s = spec(tmp_path)
    s.write_manifest()
    m = json.loads(s.manifest_path.read_text())
    assert m["inputs"][0]["path"] == str(s.input_dir / L0) and m["contract_version"] == 1
    env = s.env()
    assert env["EMM_TARGET_LEVEL"] == "l1" and env["EMM_SPICE_METAKERNEL"] == ""
    assert JobSpec.from_dict(s.to_dict()) == s
    assert safe_id("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00_00_00_00_00"
