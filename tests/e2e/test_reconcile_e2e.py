"""emm_integrity_reconcile end to end: real Airflow runs (dag.test) on moto's S3 server and a real PostgreSQL.

A clean archive (made by the SDC's own ingest and indexing code) gives a green run with zero findings; after
an archived object is overwritten and another deleted behind the SDC's back, the run is red (the verdict
task), reports each once, writes its report, and returns the counts per kind; a repair run (dry run first)
then fixes the phantom from the bucket's versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from emm_sdc.core import reconcile as rc
from tests.helpers import keep_world_dirs, make_world, returned
from tests.integration.test_reconcile import build_world, row

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    tmp = tmp_path_factory.mktemp("reconcile")
    for w in make_world(tmp, pg_server, s3_server):
        site = Path(tmp) / "sdc.yaml"
        site.write_text(yaml.safe_dump({
            "operators": {"emails": ["ops@example.org"]},
            "reconciliation": {"settle_minutes": 0, "deep_verify_mb_per_s": 0, "stale_inbox_margin_minutes": 0}}))
        w["mp"].setenv("EMM_SITE_CONFIG", str(site))
        w["client"].put_bucket_versioning(Bucket=w["buckets"]["archive"],
                                          VersioningConfiguration={"Status": "Enabled"})
        w.update(build_world(w["client"], w["cat"], w["buckets"], Path(tmp)))
        yield w


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def run(conf: dict[str, Any] | None = None) -> Any:
    from emm_sdc.pipeline.reconcile import build_reconcile_dag

    return build_reconcile_dag().test(run_conf=conf)


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances() if ti.map_index < 1}


def latest_findings(world: dict[str, Any]) -> list[dict[str, Any]]:
    [last] = world["cat"].query("recon_last_run", {"dag_id": "emm_integrity_reconcile"})
    return world["cat"].query("recon_findings", {"run_id": last["id"]})


def test_clean_archive_is_a_green_run_with_zero_findings(world: dict[str, Any]) -> None:
    dr = run({"deep_fraction": 1.0})
    assert str(dr.state) == "success", states(dr)
    summary = returned(dr, "report")
    assert summary["total"] == 0 and summary["status"] == "clean"
    assert summary["counts"] == dict.fromkeys(rc.KINDS, 0)
    assert summary["stats"]["objects"] > 10 and summary["stats"]["verified_objects"] >= 7
    assert states(dr)["verdict"] == "success"
    # one mapped check per partition: the instrument folders of each split area, spice, the inboxes, the catalog
    checks = [ti for ti in dr.get_task_instances() if ti.task_id == "check"]
    names = {ti.rendered_map_index for ti in checks}
    assert {"archive:emm/data/exi/", "archive:emm/data/emr/", "archive:emm/spice/", "catalog",
            "inbox:inbox/exi/", "inbox:inbox/spice/"} <= names
    assert all(str(ti.state) == "success" for ti in checks)


def test_damage_turns_the_run_red_reports_once_and_repairs(world: dict[str, Any]) -> None:
    w = world
    archive = w["buckets"]["archive"]
    damaged = row(w, w["product_names"][0])
    w["client"].put_object(Bucket=archive, Key=damaged["s3_key"], Body=b"y" * damaged["file_size"])
    gone = row(w, w["product_names"][1])["s3_key"]
    w["client"].delete_object(Bucket=archive, Key=gone)

    dr = run({"deep_fraction": 1.0})
    assert str(dr.state) == "failed"
    st = states(dr)
    assert st["report"] == "success" and st["verdict"] == "failed" and st["repair"] == "success"
    summary = returned(dr, "report")
    assert {k: v for k, v in summary["counts"].items() if v} == {"checksum_mismatch": 1, "phantom": 1}
    assert summary["severities"] == {"error": 2} and summary["by_instrument"] == {
        "exi": {"checksum_mismatch": 1, "phantom": 1}}
    report_key = summary["report"].split(f"s3://{archive}/", 1)[1] + "report.json"
    report = json.loads(w["client"].get_object(Bucket=archive, Key=report_key)["Body"].read())
    assert sorted((f["kind"], f["s3_key"]) for f in report["findings"]) == [
        ("checksum_mismatch", damaged["s3_key"]), ("phantom", gone)]

    dry = run({"repair": True})  # dry run by default: planned, nothing changed
    assert str(dry.state) == "failed"
    planned = {f["kind"]: f for f in latest_findings(w)}
    assert planned["phantom"]["repair_status"] == "planned" and planned["checksum_mismatch"]["repair"] is None
    assert w["storage"].stat(archive, gone) is None

    applied = run({"repair": True, "dry_run": False})
    assert returned(applied, "repair") == {"applied": 1}
    assert w["storage"].stat(archive, gone) is not None  # restored from its earlier version
    after = run({"deep_fraction": 1.0})
    assert {k: v for k, v in returned(after, "report")["counts"].items() if v} == {"checksum_mismatch": 1}


def test_the_demo_step_runs_the_dag_and_prints_its_findings(world: dict[str, Any], tmp_path: Path,
                                                            capfd: pytest.CaptureFixture[str]) -> None:
    """What ./sdc demo runs last (python -m emm_dev.reconcile_demo <log dir>): the damaged product of the
    previous test is still there, so the run is red and prints exactly that finding with its action."""
    from emm_dev.reconcile_demo import demo

    assert demo(str(tmp_path)) == 0
    out = capfd.readouterr().out
    assert "emm_integrity_reconcile: run failed" in out and "1 finding(s)" in out
    assert "[error] checksum_mismatch: emm/data/exi/l1/" in out and "action   The archived bytes" in out
    assert (tmp_path / "emm_integrity_reconcile.log").exists()  # Airflow's output (under pytest: captured)
