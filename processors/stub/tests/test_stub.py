"""The constant-time stub processor honours the contract for every instrument and level, and holds when told."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_sdc.core.product_checks import verify_product

STUB = Path(__file__).resolve().parents[1] / "processor.py"
CHAINS = {"exi": [("l1", "l0"), ("l2a", "l1"), ("l1ql", "l1")],
          "emu": [("l1", "l0"), ("l2a", "l1"), ("l2b", "l2a")],
          "emr": [("l1", "l0"), ("l2", "l1"), ("l2ql", "l2")]}
FAST = {"EMM_STUB_SECONDS": "0"}


@pytest.mark.parametrize("inst", sorted(CHAINS))
def test_every_level_of_the_chain(ref: Any, tmp_path: Path, inst: str) -> None:
    delivered = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=(inst,))
    made: dict[str, list[Path]] = {"l0": [d.path for d in delivered if d.level == "l0"]}
    hk = [d.path for d in delivered if d.level == "hk"]
    for target, source in CHAINS[inst]:
        inputs = made[source] + (hk if source == "l0" else [])
        run = ref.run(inst, target, inputs, env=FAST, script=STUB, kernel_class="p")
        ext = ".png" if target.endswith("ql") else ".fits"
        names = ref.check_products(run, inst, target, version=1, revision=0, kernel="p", extension=ext)
        assert len(names) == len(made[source]), "one product per input of the source level (none for hk)"
        for product in run.products:
            assert verify_product(io.BytesIO(product.read_bytes()), product.name, ext) == []
        assert sorted(i for ins in run.lineage.values() for i in ins) == sorted(p.name for p in made[source])
        made[target] = run.products


def test_bad_instrument_is_bad_input(ref: Any, tmp_path: Path) -> None:
    delivered = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("exi",))
    run = ref.run("exi", "l1", [d.path for d in delivered], env={**FAST, "EMM_INSTRUMENT": "xyz"}, script=STUB)
    assert run.returncode == 2 and "unknown instrument 'xyz'" in run.stderr


def test_first_job_holds_until_released(ref: Any, tmp_path: Path) -> None:
    """The first job stops at the hold point (marker with its pid); a second job passes; release lets it finish."""
    delivered = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("exi",))
    l0 = [d.path for d in delivered if d.level == "l0"]
    hold = tmp_path / "hold"
    hold.mkdir()
    env = {**FAST, "EMM_STUB_HOLD_DIR": str(hold)}
    manifest = ref.manifest("exi", "l1", l0)
    out = tmp_path / "held-out"
    out.mkdir()
    first = subprocess.Popen([sys.executable, str(ref_launcher()), str(STUB)], env=ref.env(manifest, out, env),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        marker = wait_for_marker(hold, first)
        assert json.loads(marker.read_text())["pid"] == first.pid
        second = ref.run("exi", "l1", l0, env=env, script=STUB)  # not held: it finishes while the first waits
        assert second.returncode == 0, second.stderr
        assert first.poll() is None and not (out / "output_manifest.json").exists()
        (hold / "release").touch()
        assert first.wait(60) == 0, first.stderr.read() if first.stderr else ""
        assert (out / "output_manifest.json").exists()
    finally:
        first.kill()
        first.wait()


def ref_launcher() -> Path:
    return Path(__file__).resolve().parents[2] / "launch.py"


def wait_for_marker(hold: Path, proc: subprocess.Popen[str]) -> Path:
    """The held job's marker (the process writes it when it reaches the hold point)."""
    import select

    assert proc.stdout is not None
    while proc.poll() is None:  # the stub logs "held at ..." once its marker is written: wait for that line
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "the stub did not reach its hold point in 30 s"
        if "held at" in proc.stdout.readline():
            return next(hold.glob("held-*.json"))
    raise AssertionError(f"the stub exited {proc.returncode} before its hold point")
