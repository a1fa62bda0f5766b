"""Calibration end to end: an ITF delivers calibration, jobs get it, products record it, a new version remakes.

EMIRS's ``l2`` step is configured with ``calibration: latest``. A calibration
file arrives with the MOC's L0; processing stages it into the l2 job (all
runners read the manifest's ``calibration`` list) and the run records set 1.
A new version of the file makes set 2; the ingest report gives the backfill
command; a reprocessing run (no force) remakes l2 and its quicklook with set
2 and skips l1, whose inputs did not change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core.checksums import format_sidecar, md5_file
from tests.helpers import keep_world_dirs, make_world
from tests.helpers import run_dag as run

pytestmark = pytest.mark.e2e
CAL = "emm_emr_cal_gain.csv"


def _with_calibration(inst: str, data: dict[str, Any]) -> None:
    if inst == "emr":
        next(s for s in data["processing"]["chain"] if s["level"] == "l2")["calibration"] = "latest"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    yield from make_world(tmp_path_factory.mktemp("calib"), pg_server, s3_server, edit=_with_calibration)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def deliver_calibration(world: Any, folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CAL
    path.write_text(text)
    (folder / f"{CAL}.md5").write_text(format_sidecar(md5_file(path), CAL))
    client, bucket = world["client"], world["buckets"]["inbox"]
    client.put_object(Bucket=bucket, Key=f"inbox/emr/calibration/{CAL}", Body=path.read_bytes())
    client.put_object(Bucket=bucket, Key=f"inbox/emr/calibration/{CAL}.md5", Body=(folder / f"{CAL}.md5").read_bytes())


def runs_of(world: Any, level: str) -> list[dict[str, Any]]:
    return world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": level})


@pytest.fixture(scope="module")
def first(world: Any) -> dict[str, Any]:
    files = synthetic.generate(world["tmp"] / "moc", orbits=(11,), instruments=("emr",))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/emr/", files)
    deliver_calibration(world, world["tmp"] / "cal1", "channel,gain\n1,1.00\n")
    return {"states": [run("emm_emr_ingest"), run("emm_emr_process")]}


def test_jobs_get_the_calibration_set_and_products_record_it(world: Any, first: dict[str, Any]) -> None:
    assert first["states"] == ["success", "success"]
    [l2] = [r for r in runs_of(world, "l2") if r["status"] == "success"]
    assert l2["calibration_version"] == 1
    doc = l2["hash_inputs"] if isinstance(l2["hash_inputs"], dict) else json.loads(l2["hash_inputs"])
    assert doc["calibration"] == [[CAL, md5_file(world["tmp"] / "cal1" / CAL)]] and doc["calibration_version"] == 1
    assert all(r["calibration_version"] is None for r in runs_of(world, "l1"))  # l1 uses none
    # the product itself points at its run: the calibration version that made it
    products = world["cat"].query("latest_of_level", {"instrument_id": "emr", "data_level": "l2"})
    assert products and {p["processing_run_id"] for p in products} == {l2["id"]}


def test_new_calibration_version_is_announced_and_remakes_only_what_uses_it(world: Any,
                                                                           first: dict[str, Any]) -> None:
    cat = world["cat"]
    deliver_calibration(world, world["tmp"] / "cal2", "channel,gain\n1,1.02\n")
    assert run("emm_emr_ingest") == "success"
    [v2] = [r for r in cat.query("calibration_files_of", {"instrument_id": "emr"}) if r["version"] == 2]
    assert v2["set_version"] == 2
    from emm_sdc.campaigns import backfill_command
    from emm_sdc.core.config import load_instrument

    cmd = backfill_command(cat, load_instrument("emr"), "calibration set 2", from_level="l2")
    assert cmd is not None and "--dag-id emm_emr_reprocess" in cmd and '"from_level": "l2"' in cmd

    files = [r["file_name"] for r in cat.query("science_l0_by_orbit", {"instrument_id": "emr", "orbits": [11]})]
    assert run("emm_emr_reprocess", {"files": files, "reason": "gain table v2"}) == "success"
    l2 = [r for r in runs_of(world, "l2") if r["status"] == "success"]
    assert [r["calibration_version"] for r in l2] == [1, 2]
    assert [r["status"] for r in runs_of(world, "l1")][-1] == "skipped"  # nothing changed for l1
    latest = cat.query("latest_of_level", {"instrument_id": "emr", "data_level": "l2ql"})
    assert {p["revision"] for p in latest} == {1}  # the cascade: quicklooks made from the new l2
    assert cat.query("stale_latest_products", {"instrument_id": "emr"}) == []
