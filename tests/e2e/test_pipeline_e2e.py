"""End to end through real Airflow runs (dag.test), moto's S3 server and a real PostgreSQL.

A mixed MOC delivery for all three instruments goes through ingest and
processing; the catalog and the archive are checked; then the same delivery
arrives again and nothing changes. Further tests drive the reprocessing DAG
(a forced remake into a new revision, with its cascade) and failing processors.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core.catalog import Catalog
from tests.helpers import INSTRUMENTS, archive_state, keep_world_dirs, make_world
from tests.helpers import run_dag as run

pytestmark = pytest.mark.e2e
CHAINS = {"exi": ("l1", "l2a", "l1ql"), "emu": ("l1", "l2a", "l2b"), "emr": ("l1", "l2", "l2ql")}


def snapshot(cat: Catalog, client: Any, bucket: str) -> dict[str, Any]:
    files = cat.query("all_files_brief")
    return {
        "files": {r["file_name"]: (r["md5checksum"], r["s3_key"]) for r in files},
        "runs": cat.query("run_status_counts"),
        "lineage": cat.query("table_counts"),
        "data": {k: v for k, v in archive_state(client, bucket).items() if k.startswith("emm/data/")},
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    yield from make_world(tmp_path_factory.mktemp("e2e"), pg_server, s3_server)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def mixed_delivery(out: Path) -> dict[str, Any]:
    valid = synthetic.generate(out, orbits=(11,))
    first = {i: next(f for f in valid if f.instrument == i and f.level == "l0") for i in INSTRUMENTS}
    bad = {
        "checksum-mismatch": synthetic.corrupt(out, first["exi"]),
        "truncated": synthetic.truncated(out, first["emr"]),
        "invalid-name": synthetic.misnamed(out, first["emu"], rule="orbit"),
        "empty": synthetic.zero_byte(out, first["emu"]),
        "missing-checksum": synthetic.missing_sidecar(out, first["exi"]),
    }
    return {"valid": valid, "bad": bad}


def deliver_all(world: Any, files: list[synthetic.Delivered]) -> None:
    for inst in INSTRUMENTS:
        deliver(world["client"], world["buckets"]["inbox"], f"inbox/{inst}/",
                [f for f in files if f.instrument == inst])


@pytest.fixture(scope="module")
def first_pass(world: Any) -> dict[str, Any]:
    delivery = mixed_delivery(world["tmp"] / "moc")
    deliver_all(world, delivery["valid"] + list(delivery["bad"].values()))
    states = {d: run(d) for d in [f"emm_{i}_ingest" for i in INSTRUMENTS] + [f"emm_{i}_process" for i in INSTRUMENTS]}
    return {"delivery": delivery, "states": states,
            "snap": snapshot(world["cat"], world["client"], world["buckets"]["archive"])}


def test_every_dag_run_succeeded(first_pass: dict[str, Any]) -> None:
    assert set(first_pass["states"].values()) == {"success"}, first_pass["states"]


def test_inbox_is_empty_and_every_file_is_archived_or_quarantined(world: Any, first_pass: dict[str, Any]) -> None:
    assert archive_state(world["client"], world["buckets"]["inbox"]) == {}
    cat: Catalog = world["cat"]
    for f in first_pass["delivery"]["valid"]:
        row = cat.get_file(f.file_name)
        assert row is not None and row["md5checksum"] == f.md5, f.file_name
    reasons = {r["original_key"].rsplit("/", 1)[-1]: r["reason_code"] for r in cat.query("quarantine_list")}
    assert reasons == {f.file_name: code for code, f in first_pass["delivery"]["bad"].items()}
    delivered = len(first_pass["delivery"]["valid"]) + len(first_pass["delivery"]["bad"])
    assert sum(r["files"] for r in cat.query("delivery_outcomes")) == delivered


def test_products_exist_for_every_level_with_lineage_and_runs(world: Any, first_pass: dict[str, Any]) -> None:
    cat: Catalog = world["cat"]
    counts = {(r["instrument_id"], r["data_level"]): r["files"] for r in cat.query("counts_by_level")}
    for inst, levels in CHAINS.items():
        for level in levels:
            assert counts.get((inst, level), 0) > 0, (inst, level)
    assert counts[("exi", "l1")] == 6  # two EXI sequences x three filters
    data = first_pass["snap"]["data"]
    for name, (_md5, key) in first_pass["snap"]["files"].items():
        assert key in data, f"{name} indexed but not in the archive"
    orphans = [k for k in data if k.rsplit("/", 1)[-1] not in first_pass["snap"]["files"]]
    assert orphans == []
    problems = cat.query("products_without_lineage_or_run")
    assert problems == []
    runs = {r["status"]: r["runs"] for r in first_pass["snap"]["runs"]}
    assert runs == {"success": sum(len(v) for v in CHAINS.values())}
    logs = [k for k in archive_state(world["client"], world["buckets"]["archive"]) if k.startswith("emm/logs/")]
    assert len(logs) == runs["success"]


def test_second_run_of_the_same_delivery_changes_nothing(world: Any, first_pass: dict[str, Any]) -> None:
    deliver_all(world, first_pass["delivery"]["valid"])
    states = [run(f"emm_{i}_ingest") for i in INSTRUMENTS] + [run(f"emm_{i}_process") for i in INSTRUMENTS]
    assert set(states) == {"success"}
    after = snapshot(world["cat"], world["client"], world["buckets"]["archive"])
    assert after["files"] == first_pass["snap"]["files"]
    assert after["runs"] == first_pass["snap"]["runs"]
    assert after["data"] == first_pass["snap"]["data"]
    outcomes = {r["outcome"]: r["files"] for r in world["cat"].query("delivery_outcomes_total")}
    assert outcomes["duplicate"] == len(first_pass["delivery"]["valid"])
    assert archive_state(world["client"], world["buckets"]["inbox"]) == {}


def orbit_l0(cat: Catalog, inst: str, orbit: int) -> list[str]:
    return [r["file_name"] for r in cat.query("science_l0_by_orbit", {"instrument_id": inst, "orbits": [orbit]})]


def test_forced_reprocessing_makes_a_new_revision_with_its_cascade_and_keeps_the_old(
        world: Any, first_pass: dict[str, Any]) -> None:
    cat: Catalog = world["cat"]
    files = orbit_l0(cat, "emr", 11)
    before = cat.query("all_files_brief")
    # nothing changed since the daily run made them: every job is skipped
    assert run("emm_emr_reprocess", {"files": files, "reason": "nothing new"}) == "success"
    assert cat.query("all_files_brief") == before
    [campaign] = [c for c in cat.query("campaigns_summary", {"instrument_id": "emr", "limit": 10})
                  if c["reason"] == "nothing new"]
    assert (campaign["remade"], campaign["skipped"], campaign["failed"], campaign["status"]) == (0, 3, 0, "done")
    assert run("emm_emr_reprocess", {"files": files, "from_level": "l2", "force": True,
                                     "reason": "new calibration"}) == "success"
    revisions = {lvl: sorted(r["revision"] for r in cat.query("all_files_brief")
                             if r["file_name"].startswith(f"emm_emr_{lvl}_")) for lvl in ("l1", "l2", "l2ql")}
    assert revisions == {"l1": [0, 0], "l2": [0, 0, 1, 1], "l2ql": [0, 0, 1, 1]}  # l2 and what is made from it
    assert cat.query("stale_latest_products", {"instrument_id": "emr"}) == []
    reasons = {r["reason"] for r in cat.query("runs_of_level", {"instrument_id": "emr", "data_level": "l2"})
               if r["reason"]}
    assert any(r.startswith("new calibration [campaign emm_emr_reprocess:") for r in reasons)


@pytest.mark.parametrize(("hook", "failed_level"), [("crash@l2b", "l2b"), ("extra-file@l2a", "l2a")])
def test_failing_processor_indexes_nothing_of_its_job(world: Any, first_pass: dict[str, Any],
                                                      monkeypatch: pytest.MonkeyPatch, hook: str,
                                                      failed_level: str) -> None:
    cat: Catalog = world["cat"]
    monkeypatch.setenv("EMM_REF_FAIL", hook)
    before = {r["file_name"] for r in cat.query("all_files_brief")}
    state = run("emm_emu_reprocess", {"files": orbit_l0(cat, "emu", 11), "force": True, "reason": f"test {hook}"})
    assert state == "failed"
    new = {r["file_name"] for r in cat.query("all_files_brief")} - before
    assert new and all(f"_{failed_level}_" not in n for n in new)
    runs = cat.query("runs_of_level", {"instrument_id": "emu", "data_level": failed_level})
    failed = [r for r in runs if (r["reason"] or "").startswith(f"test {hook} ")]
    assert [r["status"] for r in failed] == ["failed"]
    assert failed[0]["log_uri"] and failed[0]["message"]
    data = archive_state(world["client"], world["buckets"]["archive"])
    indexed = {key for _md5, key in snapshot(cat, world["client"], world["buckets"]["archive"])["files"].values()}
    assert {k for k in data if k.startswith("emm/data/")} == indexed
    work = world["tmp"] / "work"
    shutil.rmtree(work, ignore_errors=True)
