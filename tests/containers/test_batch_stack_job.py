"""A job through the generated Batch stack: moto's CloudFormation deploys it, moto's Batch runs the ITF image.

The EMIRS YAML is switched to the batch runner (as in test_batch_runner.py), the stack is generated from it
and deployed into its own moto account (tests/integration/batch_stack_deploy.py says what moto's
CloudFormation leaves out and how the test fills it in), and the batch runner's operator renders one EMIRS l1
job against it -- the stack's job definition, the YAML's daily queue with its fair share -- which moto runs
on the container engine: the image stages in from S3, runs the processor and stages its outputs back.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from emm_dev import synthetic
from emm_sdc.core.config import config_dir, load_config
from emm_sdc.core.jobs import JobInput, JobSpec
from emm_sdc.core.storage import Storage
from emm_sdc.deploy import batch_stack
from emm_sdc.runners.batch import SdcBatchOperator, fetch_outputs, stage_inputs
from tests.integration.batch_stack_deploy import deploy

pytestmark = pytest.mark.containers
ACCOUNT = "222233334444"


def _emirs_on_batch(folder: Path) -> Path:
    shutil.copytree(config_dir(), folder)
    path = folder / "emirs.yaml"
    data = yaml.safe_load(path.read_text())
    runner = data["processing"]["runner"]
    runner.update(kind="batch", memory_mb=1024)
    # moto accepts any credentials; on AWS the job role provides them
    runner["batch"]["environment"] = {"AWS_ACCESS_KEY_ID": "embedded", "AWS_SECRET_ACCESS_KEY": "embedded",
                                      "AWS_DEFAULT_REGION": "us-east-1"}
    path.write_text(yaml.safe_dump(data))
    return folder


def test_a_job_runs_through_the_deployed_queue_and_definition(
        container_engine: str, s3_server: Any, buckets: dict[str, str], s3_client: Any, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOTO_DOCKER_NETWORK_MODE", "host")  # the container reaches moto's S3 on loopback
    folder = _emirs_on_batch(tmp_path / "itf")
    template = batch_stack.batch_template(batch_stack.load_itfs(["emr"], folder))
    stack = deploy(s3_server.endpoint, template, ACCOUNT, bucket=buckets["archive"])
    assert stack.status == "CREATE_COMPLETE"
    runner = load_config(folder / "emirs.yaml").processing.runner
    assert runner.image and runner.batch

    [l0, *_] = [d for d in synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("emr",))
                if "_l0_" in d.file_name]
    spec = JobSpec(job_id="emm_emr_process__stack__orbit-0011__l1", instrument="emr", level="l1",
                   work_unit="orbit-0011", workdir=str(tmp_path / "job"), version=1, revision=0, kernel_class="n",
                   inputs=[JobInput(l0.file_name, "unused", l0.md5, "l0")], runner="batch", image=runner.image,
                   processing_run_id=1)
    spec.input_dir.mkdir(parents=True)
    shutil.copy(l0.path, spec.input_dir / l0.file_name)
    spec.s3_prefix = stage_inputs(Storage(s3_client), spec, buckets["archive"])

    op = SdcBatchOperator(task_id="run", job=spec.to_dict(), runner=runner, aws_conn_id="emm_s3")
    op.hook.conn.meta.events.register(  # the operator's own client, acting in the stack's account
        "before-sign", lambda request, **_: request.headers.__setitem__("x-moto-account-id", ACCOUNT))
    op.configure(spec)
    batch = stack.client("batch")
    found = batch.describe_job_definitions(jobDefinitionName="emm-emr-production", status="ACTIVE")["jobDefinitions"]
    deployed = max(found, key=lambda j: j["revision"])
    assert op.job_definition == deployed["jobDefinitionArn"]  # the stack's definition, not a new revision
    assert op.job_queue == "emm-daily" and op.share_identifier == "emr"
    job_id = op.hook.client.submit_job(
        jobName=op.job_name, jobQueue=op.job_queue, jobDefinition=op.job_definition,
        containerOverrides=op.container_overrides, shareIdentifier=op.share_identifier, tags=op.tags)["jobId"]
    op.hook.wait_for_job(job_id, delay=1)
    [job] = batch.describe_jobs(jobs=[job_id])["jobs"]
    assert job["status"] == "SUCCEEDED", job.get("statusReason")
    assert job["jobQueue"].endswith(":job-queue/emm-daily") and job["jobDefinition"] == deployed["jobDefinitionArn"]

    fetch_outputs(Storage(s3_client), spec)
    outputs = sorted(p.name for p in spec.output_dir.iterdir())
    assert any(n.startswith("emm_emr_l1_") and n.endswith(".fits") for n in outputs), outputs
    assert "emm-emr-ref 1.0.0: emr l1" in spec.log_path.read_text()
