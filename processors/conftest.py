"""Shared fixtures for the reference processors' tests: run a processor exactly per the contract.

The processor runs as a subprocess through ``processors/launch.py`` (as the local
runner does) with only the contract's environment (no PYTHONPATH), on data made
by ``emm_dev.synthetic``; products are checked with the SDC's own
``emm_sdc.core.naming``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "plugins") not in sys.path:  # the repository conftest normally does this
    sys.path.insert(0, str(REPO / "plugins"))

from emm_sdc.core import naming  # noqa: E402

LAUNCHER = REPO / "processors" / "launch.py"
SCRIPTS = {
    "exi": REPO / "processors" / "exi" / "processor.py",
    "emu": REPO / "processors" / "emus" / "processor.py",
    "emr": REPO / "processors" / "emirs" / "processor.py",
}
PROCESSOR_NAMES = {"exi": "emm-exi-ref", "emu": "emm-emu-ref", "emr": "emm-emr-ref"}
SOURCE_DATE_EPOCH = "1700000000"


@dataclass
class Run:
    """One finished processor run."""

    returncode: int
    stdout: str
    stderr: str
    out_dir: Path
    env: dict[str, str]
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def products(self) -> list[Path]:
        return [self.out_dir / p["file_name"] for p in self.manifest.get("products", [])]

    @property
    def lineage(self) -> dict[str, list[str]]:
        return {p["file_name"]: p["inputs"] for p in self.manifest.get("products", [])}

    def files(self) -> set[str]:
        return {p.name for p in self.out_dir.iterdir()} if self.out_dir.exists() else set()


class Runner:
    """Writes input manifests and runs a reference processor as the SDC would."""

    def __init__(self, base: Path):
        self.base = base
        self.count = 0

    def manifest(self, inst: str, level: str, files: Iterable[Path], **fields: Any) -> Path:
        """An input manifest (contract version 1) for these input files."""
        entries = []
        for path in files:
            entries.append({"file_name": path.name, "path": str(path),
                            "level": naming.parse(path.name).level, "md5": None})
        doc = {
            "contract_version": 1, "instrument": inst, "target_level": level, "work_unit": "orbit-0011",
            "product_version": 1, "product_revision": 0, "kernel_class": "n",
            "processing_run_id": f"test/{inst}/{level}", "environment": "production",
            "spice_metakernel": None, "calibration_dir": None, "parameters": {}, "inputs": entries,
        }
        doc.update(fields)
        self.count += 1
        path = self.base / f"manifest_{self.count:03d}_{inst}_{level}.json"
        path.write_text(json.dumps(doc, indent=1))
        return path

    def env(self, manifest: Path, out_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The contract environment, mirroring the manifest (``extra`` overrides; None values unset)."""
        doc = json.loads(manifest.read_text())
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("EMM_") and k not in ("PYTHONPATH", "SOURCE_DATE_EPOCH")}
        env.update({
            "EMM_INPUT_MANIFEST": str(manifest),
            "EMM_OUTPUT_DIR": str(out_dir),
            "EMM_INSTRUMENT": doc["instrument"],
            "EMM_TARGET_LEVEL": doc["target_level"],
            "EMM_PRODUCT_VERSION": str(doc["product_version"]),
            "EMM_PRODUCT_REVISION": str(doc["product_revision"]),
            "EMM_KERNEL_CLASS": doc["kernel_class"],
            "EMM_SPICE_METAKERNEL": doc["spice_metakernel"] or "",
            "EMM_CALIBRATION_DIR": doc["calibration_dir"] or "",
            "EMM_ENVIRONMENT": doc["environment"],
            "EMM_PROCESSING_RUN_ID": doc["processing_run_id"],
            "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        })
        for key, value in (extra or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(self, inst: str, level: str, files: Sequence[Path], out_dir: Path | None = None, *,
            env: dict[str, str] | None = None, timeout: float = 120, script: Path | None = None, **fields: Any) -> Run:
        """Run the instrument's processor (or ``script``) on ``files`` (``inputs=[...]`` overrides the manifest
        entries)."""
        manifest = self.manifest(inst, level, files, **fields)
        out_dir = out_dir or self.base / f"out_{self.count:03d}_{inst}_{level}"
        out_dir.mkdir(parents=True, exist_ok=True)
        full_env = self.env(manifest, out_dir, env)
        proc = subprocess.run([sys.executable, str(LAUNCHER), str(script or SCRIPTS[inst])], env=full_env, cwd=REPO,
                              capture_output=True, text=True, timeout=timeout)
        result = Run(proc.returncode, proc.stdout, proc.stderr, out_dir, full_env)
        manifest_path = out_dir / "output_manifest.json"
        if manifest_path.exists():
            result.manifest = json.loads(manifest_path.read_text())
        return result

    def check_hook(self, inst: str, level: str, files: Sequence[Path], hook: str, *, via: str = "env") -> Run | None:
        """Run with test hook ``hook`` (``EMM_REF_FAIL``, or step parameter ``ref_fail`` when ``via`` says
        ``parameter``) and check its documented behaviour (processors/README.md, "Test hooks")."""
        spec = f"{hook}@{level}" if via == "parameter" else hook
        kwargs: dict[str, Any] = {"parameters": {"ref_fail": spec}} if via == "parameter" else \
            {"env": {"EMM_REF_FAIL": spec}}
        if hook == "hang":  # only up to a 2 s timeout
            with pytest.raises(subprocess.TimeoutExpired) as caught:
                self.run(inst, level, files, timeout=2.0, **kwargs)
            assert b"EMM_REF_FAIL=hang" in (caught.value.stderr or b"")
            return None
        run = self.run(inst, level, files, **kwargs)
        if hook == "crash":
            assert run.returncode == 1 and "crash" in run.stderr and run.files() == set(), run.stderr
            return run
        assert run.returncode == 0, run.stderr
        listed = [p["file_name"] for p in run.manifest["products"]]
        if hook == "extra-file":
            assert run.files() - set(listed) - {"output_manifest.json"} == {"unlisted_scratch.dat"}
        elif hook == "bad-name":
            bad = [n for n in listed if not naming.is_valid(n)]
            assert len(bad) == 1 and {p.rule for p in naming.problems_in(bad[0])[1]} == {"orbit"}
            assert run.files() == set(listed) | {"output_manifest.json"}
        else:
            raise ValueError(f"no check for hook {hook!r}")
        return run

    @staticmethod
    def check_products(run: Run, inst: str, level: str, *, version: int, revision: int, kernel: str,
                       extension: str) -> list[naming.EmmName]:
        """The run succeeded and its manifest lists exactly the well-named files it wrote."""
        assert run.returncode == 0, run.stderr
        assert run.manifest["contract_version"] == 1
        assert run.manifest["processor"] == {"name": PROCESSOR_NAMES[inst], "version": "1.0.0"}
        listed = [p["file_name"] for p in run.manifest["products"]]
        assert listed and len(set(listed)) == len(listed)
        assert run.files() == set(listed) | {"output_manifest.json"}
        parsed = []
        for file_name in listed:
            name = naming.parse(file_name)
            fields = (name.instrument, name.level, name.version, name.revision, name.kernel, name.extension)
            assert fields == (inst, level, version, revision, kernel, extension), file_name
            parsed.append(name)
        return parsed


@pytest.fixture(scope="session")
def ref(tmp_path_factory: pytest.TempPathFactory) -> Runner:
    """Runs reference processors per the contract."""
    return Runner(tmp_path_factory.mktemp("ref"))


def fits_headers_without_run_identity(path: Path) -> list[list[tuple[str, Any]]]:
    """All header cards of a FITS file except those that name the run (for staging comparisons)."""
    from astropy.io import fits

    skip = {"DATE", "CHECKSUM", "DATASUM", "RUNID", "ENVIRON"}
    with fits.open(path) as hdul:
        return [[(k, v) for k, v in h.header.items() if k not in skip] for h in hdul]


@pytest.fixture(scope="session")
def headers_without_run_identity() -> Any:
    return fits_headers_without_run_identity
