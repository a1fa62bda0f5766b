"""Batch job definitions and staging against moto's Batch and S3 APIs (no container engine needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3

from emm_sdc.core.config import RunnerConfig
from emm_sdc.core.jobs import JobInput, JobSpec
from emm_sdc.core.storage import Storage
from emm_sdc.runners.batch import batch_environment, ensure_job_definition, fetch_outputs, stage_inputs


def runner(**kw: Any) -> RunnerConfig:
    return RunnerConfig(kind="batch", image=kw.pop("image", "reg/emm-exi:1.0.0"), cpus=2, memory_mb=4096,
                        timeout_minutes=20,
                        batch={"job_queues": {"daily": "d", "reprocessing": "r"}, "job_role_arn": kw.pop("role", None)},
                        **kw)


def test_job_definition_is_registered_once_per_image(s3_server: Any) -> None:
    client = boto3.client("batch", endpoint_url=s3_server.endpoint, region_name="us-east-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    first = ensure_job_definition(client, "exi", "staging", runner(), "reg/emm-exi:1.0.0")
    assert ensure_job_definition(client, "exi", "staging", runner(), "reg/emm-exi:1.0.0") == first
    second = ensure_job_definition(client, "exi", "staging", runner(), "reg/emm-exi:1.1.0")
    assert second != first
    defs = client.describe_job_definitions(jobDefinitionName="emm-exi-staging", status="ACTIVE")["jobDefinitions"]
    latest = max(defs, key=lambda d: d["revision"])
    assert latest["containerProperties"]["image"] == "reg/emm-exi:1.1.0"
    assert {r["type"]: r["value"] for r in latest["containerProperties"]["resourceRequirements"]} == {
        "VCPU": "2", "MEMORY": "4096"}
    assert latest["timeout"] == {"attemptDurationSeconds": 1200}


def test_inputs_staged_to_s3_and_outputs_fetched(buckets: dict[str, str], s3_client: Any, tmp_path: Path) -> None:
    storage = Storage(s3_client)
    spec = JobSpec(job_id="job-1", instrument="exi", level="l1", work_unit="orbit-0011",
                   workdir=str(tmp_path / "job"), version=1, revision=0, kernel_class="n",
                   inputs=[JobInput("a.bin", "k", "5d41402abc4b2a76b9719d911017c592", "l0")], runner="batch")
    spec.input_dir.mkdir(parents=True)
    (spec.input_dir / "a.bin").write_bytes(b"hello")
    prefix = stage_inputs(storage, spec, buckets["archive"])
    assert prefix == f"s3://{buckets['archive']}/emm/work/job-1/"
    spec.s3_prefix = prefix
    env = batch_environment(spec, "http://s3.local")
    assert env["EMM_INPUT_MANIFEST"] == prefix + "input_manifest.json" and env["EMM_OUTPUT_DIR"] == prefix + "out/"
    assert env["EMM_S3_ENDPOINT_URL"] == "http://s3.local"
    manifest = s3_client.get_object(Bucket=buckets["archive"], Key="emm/work/job-1/input_manifest.json")["Body"].read()
    assert f"{prefix}in/a.bin".encode() in manifest
    s3_client.put_object(Bucket=buckets["archive"], Key="emm/work/job-1/out/p.fits", Body=b"p")
    s3_client.put_object(Bucket=buckets["archive"], Key="emm/work/job-1/job.log", Body=b"log")
    fetch_outputs(storage, spec)
    assert (spec.output_dir / "p.fits").read_bytes() == b"p" and spec.log_path.read_text() == "log"
