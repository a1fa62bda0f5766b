"""Smoke test of the real-Airflow harness (emm_dev.airflow_local).

Starts ``airflow api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``
on the embedded S3 and PostgreSQL, triggers ``emm_catalog_migrate`` through the REST API, waits
for the scheduler to run it to success, checks that the lane pools exist, that a reprocessing run
writes its note through the REST API, that a conf key the DAG has no param for fails the run, that
the UI's asset dependency graph answers (it failed with a 500 on the psycopg 3 metadata-DB driver),
and that stopping leaves no process of the harness behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from emm_dev.airflow_local import NEVER, AirflowLocal, group_members
from emm_sdc.core.config import load_instrument
from emm_sdc.lanes import pool_name

pytestmark = pytest.mark.e2e


def test_real_airflow_runs_a_triggered_dag(tmp_path: Path) -> None:
    af = AirflowLocal(tmp_path / "af", dags=("emm_catalog_migrate", "emm_exi_reprocess", "emm_exi_process"),
                      ingest_schedule=NEVER)
    with af:
        health = af.health()
        assert health is not None and health["scheduler"]["status"] == "healthy"
        assert af.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")

        # The asset page's lineage graph: the UI asks for the scheduling dependencies around the asset node.
        [(l0_id,)] = af.meta_sql("SELECT id FROM asset WHERE name = %s", ("emm_exi_l0",))
        graph = af.ui("/dependencies", params={"node_id": f"asset:{l0_id}"})
        nodes = {n["id"]: n for n in graph["nodes"]}
        edges = {(e["source_id"], e["target_id"]) for e in graph["edges"]}
        assert nodes[f"asset:{l0_id}"]["label"] == "emm_exi_l0"
        assert nodes["dag:emm_exi_process"]["type"] == "dag"
        assert (f"asset:{l0_id}", "dag:emm_exi_process") in edges  # l0 schedules processing
        assert ("dag:emm_exi_ingest", f"asset:{l0_id}") in edges  # ingest produces l0
        data = af.ui("/dependencies", params={"node_id": f"asset:{l0_id}", "dependency_type": "data"})
        assert f"asset:{l0_id}" in {n["id"] for n in data["nodes"]} and data["edges"]

        run_id = af.trigger("emm_catalog_migrate", note="harness smoke test")
        assert af.wait_for_run("emm_catalog_migrate", run_id, timeout=120) == "success"
        assert {ti["task_id"]: ti["state"] for ti in af.task_instances("emm_catalog_migrate", run_id)} == {
            "migrate": "success"
        }
        [(executor,)] = af.meta_sql("SELECT DISTINCT executor FROM task_instance WHERE run_id = %s", (run_id,))
        assert executor in (None, "LocalExecutor")  # None: the default executor, which is LocalExecutor here

        pools = {p["name"]: p["slots"] for p in af.api("GET", "/pools", params={"limit": 100})["pools"]}
        exi = load_instrument("exi").airflow.pools
        assert pools[pool_name("exi", "daily")] == exi.daily
        assert pools[pool_name("exi", "reprocessing")] == exi.reprocessing

        # A reprocessing run writes its campaign summary into its DAG run note through the REST API.
        run_id = af.trigger("emm_exi_reprocess", {"reason": "note check", "dry_run": True, "campaign": "smoke"},
                            logical_date="2021-06-17T00:00:00Z")
        assert af.wait_for_run("emm_exi_reprocess", run_id, timeout=180) == "success"
        note = af.dag_run("emm_exi_reprocess", run_id)["note"]
        assert note.startswith("**emm_exi_reprocess:smoke**: note check") and "DRY RUN" in note

        # A conf key the DAG has no param for fails the run, naming the key (Airflow alone ignores it and
        # the run would process with its defaults): the retired {"reprocess": true} of emm_<inst>_process.
        run_id = af.trigger("emm_exi_process", {"reprocess": True, "orbits": ["11"]})
        assert af.wait_for_run("emm_exi_process", run_id, timeout=180) == "failed"
        states = {ti["task_id"]: ti["state"] for ti in af.task_instances("emm_exi_process", run_id)}
        assert states["plan_units"] == "failed"
        log = json.dumps(af.api("GET", f"/dags/emm_exi_process/dagRuns/{quote(run_id, safe='')}"
                                "/taskInstances/plan_units/logs/1"))
        assert "conf key(s) 'reprocess' are not params of this DAG" in log and "orbits" in log

        pgid = af._pgid
        assert pgid is not None and group_members(pgid)
    assert not group_members(pgid), "processes of the harness outlived stop()"
    assert af.health() is None
