"""The batch runner against moto's AWS Batch, which runs each job's container on the local engine.

moto's server plays AWS: Batch (job definitions, queues, jobs, states) and S3.
Its Batch backend starts the job's image with the Docker SDK (podman here), on
the host network so the container's stage entrypoint reaches moto's S3. So a
job really stages in from S3, runs the ITF processor and stages out, and the
SDC indexes what came back; a failing job fails cleanly with its log.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core import images
from tests.helpers import edit_configs, keep_world_dirs, make_world, rendered_fields, restore_config, run_dag

pytestmark = pytest.mark.containers
IMAGE = "localhost/emm-emr-ref:1.0.0"
QUEUES = {"daily": "emm-test-daily", "reprocessing": "emm-test-reprocessing"}


def to_batch(inst: str, data: dict[str, Any]) -> None:
    if inst == "emr":
        runner = data["processing"]["runner"]
        runner["kind"] = "batch"
        runner["memory_mb"] = 1024
        runner["batch"] = {
            "job_queues": QUEUES, "poll_seconds": 1,
            # moto accepts any credentials; on AWS the job role provides them
            "environment": {"AWS_ACCESS_KEY_ID": "embedded", "AWS_SECRET_ACCESS_KEY": "embedded",
                            "AWS_DEFAULT_REGION": "us-east-1"},
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None,
          container_engine: str) -> Any:
    yield from make_world(tmp_path_factory.mktemp("batch"), pg_server, s3_server, edit=to_batch)


@pytest.fixture(scope="module")
def batch(world: Any, s3_server: Any) -> Any:
    """Batch infrastructure as an operator's IaC would create it: a compute environment and two queues."""
    import boto3

    mp = pytest.MonkeyPatch()
    mp.setenv("MOTO_DOCKER_NETWORK_MODE", "host")
    kw = {"endpoint_url": s3_server.endpoint, "region_name": "us-east-1",
          "aws_access_key_id": "embedded", "aws_secret_access_key": "embedded"}
    iam = boto3.client("iam", **kw)
    role = iam.create_role(RoleName="emm-batch-service", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                "Principal": {"Service": "batch.amazonaws.com"}}]}))["Role"]["Arn"]
    client = boto3.client("batch", **kw)
    env = client.create_compute_environment(computeEnvironmentName="emm-test", type="UNMANAGED", state="ENABLED",
                                            serviceRole=role)["computeEnvironmentArn"]
    for name in QUEUES.values():
        client.create_job_queue(jobQueueName=name, state="ENABLED", priority=10 if "daily" in name else 1,
                                computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env}])
    yield client
    mp.undo()


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


@pytest.fixture(scope="module")
def processed(world: Any, batch: Any) -> dict[str, Any]:
    files = synthetic.generate(world["tmp"] / "moc", orbits=(11,), instruments=("emr",))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/emr/", files)
    assert run_dag("emm_emr_ingest") == "success"
    cat = world["cat"]
    # The image's staging check is covered by the docker tests; here it is recorded directly.
    check = cat.query("start_staging_check", {"instrument_id": "emr", "candidate_image": IMAGE,
                                              "production_image": None, "dag_id": "setup", "dag_run_id": "batch",
                                              "reference_inputs": "[]"})[0]["id"]
    cat.query("finish_staging_check", {"check_id": check, "status": "passed", "summary": "setup",
                                       "report_uri": None})
    images.promote(cat, "emr", IMAGE, promoted_by="test", reason="batch test")
    return {"state": run_dag("emm_emr_process")}


def _jobs(batch: Any, queue: str) -> list[dict[str, Any]]:
    ids = [j["jobId"] for status in ("SUCCEEDED", "FAILED")
           for j in batch.list_jobs(jobQueue=queue, jobStatus=status)["jobSummaryList"]]
    return batch.describe_jobs(jobs=ids)["jobs"] if ids else []


def test_jobs_follow_the_yaml_and_products_are_indexed(world: Any, batch: Any, processed: dict[str, Any]) -> None:
    assert processed["state"] == "success"
    counts = {r["data_level"]: r["files"] for r in world["cat"].query("counts_by_level")}
    assert counts["l1"] == counts["l2"] == counts["l2ql"] == 2
    [definition] = batch.describe_job_definitions(jobDefinitionName="emm-emr-production",
                                                  status="ACTIVE")["jobDefinitions"]
    props = definition["containerProperties"]
    assert props["image"] == IMAGE and props["command"] == ["python3", "/opt/emm/processor.py"]
    assert {r["type"]: r["value"] for r in props["resourceRequirements"]} == {"VCPU": "1", "MEMORY": "1024"}
    assert definition["timeout"] == {"attemptDurationSeconds": 30 * 60}
    jobs = _jobs(batch, QUEUES["daily"])
    assert len(jobs) == 3 and {j["status"] for j in jobs} == {"SUCCEEDED"}
    env = {e["name"]: e["value"] for e in jobs[0]["container"]["environment"]}
    assert env["EMM_INPUT_MANIFEST"].startswith(f"s3://{world['buckets']['archive']}/emm/work/")
    assert env["EMM_OUTPUT_DIR"].endswith("/out/") and env["EMM_ENVIRONMENT"] == "production"
    assert env["EMM_INSTRUMENT"] == "emr" and env["EMM_TARGET_LEVEL"] in ("l1", "l2", "l2ql")
    runs = world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": "l2"})
    assert [(r["runner"], r["image"], r["status"]) for r in runs] == [("batch", IMAGE, "success")]
    log = world["client"].get_object(Bucket=world["buckets"]["archive"],
                                     Key=runs[0]["log_uri"].split("/", 3)[3])["Body"].read().decode()
    assert "emm-emr-ref 1.0.0: emr l2" in log


def test_run_tasks_render_what_they_submitted(world: Any, batch: Any, processed: dict[str, Any]) -> None:
    """The UI's Rendered Templates of a run task: the lane's queue, the job definition and the overrides."""
    fields, _ = rendered_fields("emm_emr_process", "unit.l1.run")
    assert fields["job_queue"] == QUEUES["daily"]
    [definition] = batch.describe_job_definitions(jobDefinitionName="emm-emr-production",
                                                  status="ACTIVE")["jobDefinitions"]
    assert fields["job_definition"] == definition["jobDefinitionArn"]
    overrides = fields["container_overrides"]
    assert overrides["command"] == ["python3", "/opt/emm/processor.py"]
    env = {e["name"]: e["value"] for e in overrides["environment"]}
    assert env["EMM_TARGET_LEVEL"] == "l1" and env["EMM_INPUT_MANIFEST"].startswith("s3://")
    assert fields["job_name"].startswith("emm-emr-l1-orbit-0011-") and fields["tags"]["emm:lane"] == "daily"


def test_reprocessing_goes_to_its_own_queue_and_a_failed_job_indexes_nothing(
        world: Any, batch: Any, processed: dict[str, Any]) -> None:
    before = {r["file_name"] for r in world["cat"].query("all_files_brief")}
    old = edit_configs(world["configs"], "emr",
                       lambda d: d["processing"]["chain"][1].update(parameters={"ref_fail": "crash"}))
    try:
        state = run_dag("emm_emr_reprocess", {"files": orbit_l0(world, 11), "force": True, "reason": "batch crash"})
    finally:
        restore_config(world["configs"], old)
    assert state == "failed"
    jobs = _jobs(batch, QUEUES["reprocessing"])
    assert sorted(j["status"] for j in jobs) == ["FAILED", "SUCCEEDED"]  # l1 ran, l2 crashed
    new = {r["file_name"] for r in world["cat"].query("all_files_brief")} - before
    assert new and all("_l1_" in n for n in new)
    [failed] = [r for r in world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": "l2"})
                if (r["reason"] or "").startswith("batch crash")]
    assert failed["status"] == "failed" and "EMM_REF_FAIL=crash" in failed["message"]


def orbit_l0(world: Any, orbit: int) -> list[str]:
    """The EMIRS L0 of an orbit (what a reprocessing run is given)."""
    return [r["file_name"] for r in world["cat"].query("science_l0_by_orbit", {"instrument_id": "emr",
                                                                                  "orbits": [orbit]})]
