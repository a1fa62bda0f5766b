"""emmref (the ITF's shared library) agrees with the SDC's standards, and stays independent of it."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from emm_dev import synthetic
from emm_sdc.core import naming, packets

PROCESSORS = Path(__file__).resolve().parents[1]
if str(PROCESSORS) not in sys.path:
    sys.path.insert(0, str(PROCESSORS))

from emmref import ccsds, contract, names  # noqa: E402


def _load(folder: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"ref_{folder}", PROCESSORS / folder / "processor.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("file_name", [
    "emm_exi_l2a_20210224T095615_0011_xos1_f635_r_v03-01.fits",
    "emm_emu_l2b_20220331t212107_0191_os2_sw1of3_r_v01-04.fits.gz",
    "emm_emu_l2a_20221201t002750_0301_osr_38566_f_v04-00.fits.gz",
    "emm_emr_l2ql_20210617t082144_0011_p_v02-00.png",
    "emm_exi_hk_20210617T050017_0000_n_v00-00.bin",
    "emm_emu_l0_20210617T171042_0011_EMU035_n_v01-00.bin",
])
def test_names_round_trip_like_the_sdc(file_name: str) -> None:
    ours, sdc = names.parse(file_name), naming.parse(file_name)
    assert ours.format() == sdc.file_name == file_name
    assert (ours.instrument, ours.level, ours.start, ours.orbit, ours.mode, ours.descriptor, ours.kernel,
            ours.version, ours.revision, ours.extension) == \
        (sdc.instrument, sdc.level, sdc.start, sdc.orbit, sdc.mode, sdc.descriptor, sdc.kernel,
         sdc.version, sdc.revision, sdc.extension)


def test_name_formatting_limits() -> None:
    base = names.ProductName("emr", "l2", datetime(2021, 6, 17, 8, 21, 44, tzinfo=UTC), 11, None, None,
                             "p", 1, 0, ".fits", "t")
    assert naming.is_valid(base.format())
    for bad in ({"version": 100}, {"orbit": 10000}, {"kernel": "x"}):
        with pytest.raises(ValueError):
            base.derive(**bad).format()
    assert not naming.is_valid(names.broken(base.format()))
    with pytest.raises(ValueError, match="not an EMM file name"):
        names.parse("emm_emr_l2_2021_0011_p_v01-00.fits")


def test_packet_layout_matches_the_sdc() -> None:
    for apid, ptype in packets.PACKET_TYPES.items():
        assert ccsds.packet_length(apid) == ptype.packet_len
        fields_bits = sum(f._bit_length * int(np.prod(getattr(f, "_array_shape", None) or 1))
                          for f in ccsds.definition(apid)._fields)
        assert fields_bits // 8 == ptype.packet_len - packets.PRIMARY_HEADER_LEN
    for inst in naming.INSTRUMENTS:
        for level in ("l0", "hk"):
            assert set(ccsds.allowed_apids(inst, level)) == set(packets.allowed_apids(inst, level))
    assert ccsds.EPOCH.timestamp() == packets.EPOCH_UNIX


def test_calibration_matches_the_synthetic_instrument_model() -> None:
    exi, emus, emirs = _load("exi"), _load("emus"), _load("emirs")
    assert exi.SCALE_DN == synthetic.EXI_SCALE_DN and exi.DARK_DN == synthetic.EXI_DARK_DN
    assert exi.VIGNETTING == synthetic.EXI_VIGNETTING
    wl = emus.wavelengths()
    np.testing.assert_array_equal(wl, synthetic.emu_wavelengths())
    np.testing.assert_array_equal(emus.sensitivity(wl), synthetic.emu_sensitivity(wl))
    assert emus.DARK_COUNTS == synthetic.EMU_DARK_COUNTS
    assert emus.INTEGRATION_S[synthetic.EMU_MODE] == synthetic.EMU_INTEGRATION_S
    assert [c for _, c, _ in emus.LINES] == [c for c, _ in synthetic.EMU_LINES]
    nu = emirs.wavenumbers()
    np.testing.assert_array_equal(nu, synthetic.emr_wavenumbers())
    np.testing.assert_array_equal(emirs.gain(nu), synthetic.emr_gain(nu))
    assert emirs.DN_OFFSET == synthetic.EMR_DN_OFFSET
    # inverse Planck undoes Planck
    np.testing.assert_allclose(emirs.brightness_temperature(nu, synthetic.planck(nu, 250.0)), 250.0)


def test_processors_do_not_import_the_sdc() -> None:
    """Reference processors stand in for ITF code: only their tests may use emm_sdc."""
    for path in PROCESSORS.rglob("*.py"):
        if "tests" in path.parts or path.name == "conftest.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        nodes = list(ast.walk(tree))
        imported = {a.name.split(".")[0] for n in nodes if isinstance(n, ast.Import) for a in n.names}
        imported |= {(n.module or "").split(".")[0] for n in nodes if isinstance(n, ast.ImportFrom)}
        assert "emm_sdc" not in imported, path


def _job(**parameters: object) -> contract.Job:
    return contract.Job("emu", "l2a", "", 1, 0, "n", "run", "production", None, None, dict(parameters), (),
                        Path("/tmp"), Path("/tmp/m.json"))


@pytest.mark.parametrize(("spec", "expected"), [
    ("", None), ("crash", "crash"), ("crash@l2a", "crash"), ("hang@l1,l2a", "hang"), ("oom@l1", None),
])
def test_hook_selection(spec: str, expected: str | None) -> None:
    assert contract.active_hook({"EMM_REF_FAIL": spec}, _job()) == expected


def test_hook_from_step_parameter_and_unknown_hook() -> None:
    assert contract.active_hook({}, _job(ref_fail="extra-file@l2a")) == "extra-file"
    with pytest.raises(contract.BadInput, match="unknown test hook"):
        contract.active_hook({"EMM_REF_FAIL": "boom"}, _job())


def test_load_job_reports_the_manifest_problem(tmp_path: Path) -> None:
    proc = contract.Processor("emm-emu-ref", "1.0.0", "emu")
    manifest = tmp_path / "m.json"
    env = {"EMM_INPUT_MANIFEST": str(manifest), "EMM_OUTPUT_DIR": str(tmp_path / "out")}
    with pytest.raises(contract.BadInput, match="does not exist"):
        contract.load_job(env, proc)
    manifest.write_text('{"contract_version": 2}')
    with pytest.raises(contract.BadInput, match="contract_version 2 is not supported"):
        contract.load_job(env, proc)
    manifest.write_text(json.dumps({
        "instrument": "emu", "target_level": "l1", "product_version": 1, "product_revision": 0,
        "kernel_class": "z", "processing_run_id": "r", "environment": "production", "inputs": [],
    }))
    with pytest.raises(contract.BadInput, match="kernel class must be one of"):
        contract.load_job(env, proc)
    with pytest.raises(contract.BadInput, match=r"\$EMM_OUTPUT_DIR is not set"):
        contract.load_job({"EMM_INPUT_MANIFEST": str(manifest)}, proc)


def test_containerfile() -> None:
    """One image definition for all processors: a replaceable base, copies what exists, runs as non-root."""
    text = (PROCESSORS / "Containerfile").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert lines[:2] == ["ARG BASE_IMAGE=python:3.11-slim", "FROM ${BASE_IMAGE}"]
    assert {"ARG PROCESSOR", "ARG NAME", "ARG VERSION"} <= set(lines)
    assert 'name="${NAME}" \\' in lines and 'org.opencontainers.image.version="${VERSION}" \\' in lines
    assert lines[-2:] == ['ENTRYPOINT ["python3", "/opt/emm/emmref/stage.py"]',
                          'CMD ["python3", "/opt/emm/processor.py"]']
    assert "ENV PYTHONPATH=/opt/emm/vendor:/opt/emm \\" in lines  # emmref installed under /opt/emm
    user = next(ln.split()[1] for ln in lines if ln.startswith("USER "))
    assert user.split(":")[0] not in ("0", "root")
    repo = PROCESSORS.parent
    copies = [ln.split()[1:-1] for ln in lines if ln.startswith("COPY ")]
    assert ["processors/emmref/"] in copies and ["processors/${PROCESSOR}/processor.py"] in copies
    for folder in ("exi", "emus", "emirs"):
        for sources in copies:
            assert all((repo / s.replace("${PROCESSOR}", folder)).exists() for s in sources), sources
    assert (repo / "processors" / "wheels").is_dir()
    assert not list(PROCESSORS.glob("*/Containerfile")), "the per-instrument Containerfiles are gone"


def test_build_images_plan_labels_each_image_from_its_processor() -> None:
    """scripts/build-images builds every processor from the one Containerfile, named as the processor says."""
    repo = PROCESSORS.parent
    proc = subprocess.run([str(repo / "scripts" / "build-images"), "--plan"], capture_output=True, text=True,
                          timeout=30, check=True)
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows] == ["exi", "emus", "emirs"]
    for folder, tag, name, version, description in rows:
        processor = _load(folder).PROCESSOR
        assert (tag, name, version) == (f"localhost/{processor.name}:{processor.version}", processor.name,
                                        processor.version)
        assert description.startswith("EMM ") and "reference processor: l0 -> l1" in description, description
        assert f'PROCESSOR = Processor(name="{name}", version="{version}"' in \
            (PROCESSORS / folder / "processor.py").read_text()  # what the Containerfile's grep checks


def test_processors_find_emmref_without_editing_sys_path() -> None:
    """No processor edits sys.path: the launcher (repository) or PYTHONPATH (image) provides emmref."""
    for path in [*PROCESSORS.glob("*/processor.py"), PROCESSORS / "launch.py"]:
        tree = ast.parse(path.read_text(), filename=str(path))
        touched = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "path"
                   and isinstance(n.value, ast.Name) and n.value.id == "sys"]
        assert not touched, f"{path} uses sys.path"
