"""Runner operators are configured through their template fields: a real ``dag.test()`` run of the docker
runner records the job's image, environment, mounts and container name as the task's rendered fields (the
UI's Rendered Templates tab), and the site's ``EMM_DOCKER_CONN_ID`` / ``EMM_DOCKER_URL`` reach the operator.

No container engine is needed: ``EMM_DOCKER_URL`` points at a socket nobody listens on, so the container never
starts and the job fails cleanly -- after its fields were rendered (tests/containers run them for real).
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core import images
from emm_sdc.runners.local import JobFailed
from tests.helpers import keep_world_dirs, make_world, rendered_fields, run_dag

IMAGE = "registry.example.org/emm/emm-emr-ref:2.0.0"


def to_docker(inst: str, data: dict[str, Any]) -> None:
    if inst == "emr":
        data["processing"]["runner"].update(kind="docker", image=IMAGE)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    yield from make_world(tmp_path_factory.mktemp("templates"), pg_server, s3_server, edit=to_docker)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


@pytest.fixture(scope="module")
def run(world: Any) -> dict[str, Any]:
    """EMIRS orbit 11 ingested, the image promoted (its check recorded directly), one processing run."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EMM_DOCKER_URL", f"unix://{world['tmp']}/no-engine.sock")
    mp.setenv("EMM_DOCKER_CONN_ID", "emm_test_registry")
    files = synthetic.generate(world["tmp"] / "moc", orbits=(11,), instruments=("emr",))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/emr/", files)
    assert run_dag("emm_emr_ingest") == "success"
    cat = world["cat"]
    check = cat.start_staging_check(instrument="emr", candidate_image=IMAGE, production_image=None, dag_id="setup",
                                    dag_run_id="templates", reference_inputs=[])
    cat.finish_staging_check(check, status="passed", summary="setup", report_uri=None)
    images.promote(cat, "emr", IMAGE, promoted_by="test", reason="template test")
    try:
        state = run_dag("emm_emr_process")
    finally:
        mp.undo()
    fields, try_number = rendered_fields("emm_emr_process", "unit.l1.run")
    return {"state": state, "fields": fields, "try_number": try_number}


def test_rendered_fields_show_the_jobs_container(world: Any, run: dict[str, Any]) -> None:
    assert run["state"] == "failed"  # no engine behind EMM_DOCKER_URL
    f = run["fields"]
    assert f["image"] == IMAGE
    env = f["environment"]
    assert env["EMM_INSTRUMENT"] == "emr" and env["EMM_TARGET_LEVEL"] == "l1"
    assert env["EMM_INPUT_MANIFEST"] == "/emm/work/input_manifest.container.json"
    assert env["EMM_OUTPUT_DIR"] == "/emm/work/out" and env["EMM_ENVIRONMENT"] == "production"
    [work] = [m for m in f["mounts"] if m["Target"] == "/emm/work"]
    assert work["Source"].startswith(str(world["tmp"] / "work")) and work["Source"].endswith("/l1")
    assert f["container_name"].startswith("emm-emm_emr_process") and f["container_name"].endswith("l1")
    assert f["labels"] == {"emm.job": f["job"]["job_id"], "emm.instrument": "emr"}
    assert f["job"]["image"] == IMAGE and f["docker_conn_id"] == "emm_test_registry"


def test_the_failed_run_names_the_engine_and_its_real_try(world: Any, run: dict[str, Any]) -> None:
    [job] = world["cat"].runs_of_level("emr", "l1")
    assert (job["runner"], job["image"], job["status"]) == ("docker", IMAGE, "failed")
    assert "container could not start" in job["message"]
    # The run record was opened by unit.l1.prepare; its try number is that task instance's own.
    _, prepare_try = rendered_fields("emm_emr_process", "unit.l1.prepare")
    assert (job["task_id"], job["try_number"], prepare_try) == ("unit.l1.prepare", 1, 1)


def test_a_cleared_job_records_its_second_try(world: Any, run: dict[str, Any]) -> None:
    """Clearing the level runs prepare again as try 2 (as the scheduler would): the new run record says 2, and
    the runner task's second try renders that new job."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    from emm_sdc.factory import instrument_dags

    dag = instrument_dags("emr")["emm_emr_process"]
    mp = pytest.MonkeyPatch()
    mp.setenv("EMM_DOCKER_URL", f"unix://{world['tmp']}/no-engine.sock")
    try:
        for task_id in ("unit.l1.prepare", "unit.l1.run"):
            session = settings.Session()
            dr = session.scalars(select(DagRun).where(DagRun.dag_id == dag.dag_id).order_by(DagRun.id.desc())).first()
            ti = session.scalar(select(TaskInstance).where(
                TaskInstance.dag_id == dag.dag_id, TaskInstance.run_id == dr.run_id, TaskInstance.task_id == task_id,
                TaskInstance.map_index == 0))
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            with contextlib.suppress(JobFailed):  # the runner fails again (no engine): its failure is its state
                _run_task(ti=ti, task=dag.task_dict[task_id], run_triggerer=True)
    finally:
        mp.undo()
    first, second = world["cat"].runs_of_level("emr", "l1")
    _, prepare_try = rendered_fields("emm_emr_process", "unit.l1.prepare")
    assert (first["try_number"], second["try_number"], prepare_try) == (1, 2, 2)
    fields, run_try = rendered_fields("emm_emr_process", "unit.l1.run")
    assert run_try == 2 and fields["job"]["processing_run_id"] == second["id"] and fields["image"] == IMAGE
    assert second["status"] == "failed" and "container could not start" in second["message"]
