"""The ``batch`` runner: the ITF image as an AWS Batch job, through the amazon provider's BatchOperator.

Inputs and outputs travel through S3: ``prepare`` uploads the job's inputs and
an input manifest whose paths are ``s3://`` URIs under the job's staging
prefix; the image's entrypoint (``emmref/stage.py``) stages them in, runs the
processor and uploads its outputs and ``job.log``; ``collect`` downloads the
outputs and validates and indexes them like any other runner's.

Each ITF gets one job definition per environment (``emm-<inst>-production``,
``emm-<inst>-staging``), registered here when its image or resources differ
from the latest active revision; a new revision keeps what the deployed stack
set and the YAML does not say (retry strategy, execution and job roles, log
configuration: docs/aws_batch.md). Jobs go to the YAML's queue for their lane:
``daily`` for routine processing, ``reprocessing`` for campaigns; on a
fair-share queue (one with a scheduling policy) a job's share is its
instrument. The operator is deferrable: while AWS runs the job the task holds
no worker slot.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from airflow.providers.amazon.aws.operators.batch import BatchOperator

from emm_sdc.core import naming
from emm_sdc.core.config import RunnerConfig
from emm_sdc.core.jobs import MAX_PRODUCT_BYTES, JobSpec, OutputError, safe_id
from emm_sdc.core.kernels import SPICE_ROOT
from emm_sdc.core.naming import WORK_ROOT
from emm_sdc.core.storage import Storage
from emm_sdc.lifecycle import fail_job
from emm_sdc.runners.local import JobFailed

PROCESSOR_COMMAND = ["python3", "/opt/emm/processor.py"]
#: Job definition settings the deployed stack owns (docs/aws_batch.md): a new revision made for the YAML keeps them.
DEPLOYED_SETTINGS = ("retryStrategy", "propagateTags", "platformCapabilities")
DEPLOYED_CONTAINER_SETTINGS = ("executionRoleArn", "jobRoleArn", "logConfiguration")


def job_definition_name(instrument: str, environment: str) -> str:
    return f"emm-{instrument}-{environment}"


def container_properties(runner: RunnerConfig, image: str, job_role_arn: str | None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "image": image,
        "command": PROCESSOR_COMMAND,
        "resourceRequirements": [
            {"type": "VCPU", "value": f"{runner.cpus:g}"},
            {"type": "MEMORY", "value": str(runner.memory_mb)},
        ],
    }
    if job_role_arn:
        props["jobRoleArn"] = job_role_arn
    if runner.batch and runner.batch.environment:
        props["environment"] = [{"name": k, "value": v} for k, v in sorted(runner.batch.environment.items())]
    return props


def ensure_job_definition(client: Any, instrument: str, environment: str, runner: RunnerConfig, image: str) -> str:
    """The ARN of an active job definition matching the YAML; registers a new revision if needed."""
    name = job_definition_name(instrument, environment)
    want = container_properties(runner, image, runner.batch.job_role_arn if runner.batch else None)
    timeout = {"attemptDurationSeconds": runner.timeout_minutes * 60}
    found = client.describe_job_definitions(jobDefinitionName=name, status="ACTIVE").get("jobDefinitions", [])
    kept: dict[str, Any] = {}
    if found:
        latest = max(found, key=lambda d: d["revision"])
        have = latest.get("containerProperties", {})
        same = all(have.get(k) == v for k, v in want.items()) and latest.get("timeout") == timeout
        if same:
            return latest["jobDefinitionArn"]
        kept = {k: latest[k] for k in DEPLOYED_SETTINGS if latest.get(k)}
        want = {**{k: have[k] for k in DEPLOYED_CONTAINER_SETTINGS if have.get(k)}, **want}
    resp = client.register_job_definition(
        jobDefinitionName=name, type="container", containerProperties=want, timeout=timeout,
        tags={"emm:instrument": instrument, "emm:environment": environment}, **kept,
    )
    return resp["jobDefinitionArn"]


def share_identifier(client: Any, queue: str, instrument: str) -> str | None:
    """The job's fair-share identifier: its instrument on a queue with a scheduling policy; None on a FIFO queue.

    AWS Batch refuses a job without one on a fair-share queue and a job with one on a FIFO queue.
    """
    queues = client.describe_job_queues(jobQueues=[queue]).get("jobQueues", [])
    return instrument if queues and queues[0].get("schedulingPolicyArn") else None


def batch_environment(spec: JobSpec, s3_endpoint: str | None) -> dict[str, str]:
    """The contract's environment with the job's ``s3://`` staging locations."""
    assert spec.s3_prefix, "a batch job is staged in S3 by prepare"
    env = spec.env(manifest=f"{spec.s3_prefix}input_manifest.json", output_dir=f"{spec.s3_prefix}out/")
    if spec.meta_kernel:
        bucket = spec.s3_prefix[5:].split("/", 1)[0]
        env["EMM_SPICE_METAKERNEL"] = f"s3://{bucket}/{SPICE_ROOT}/mk/{Path(spec.meta_kernel).name}"
    if s3_endpoint:
        env["EMM_S3_ENDPOINT_URL"] = s3_endpoint
    return env


class SdcBatchOperator(BatchOperator):
    """BatchOperator that submits one staged SDC job (``job`` = the ``prepare`` task's output).

    ``job`` is rendered first (the prepare task's XCom); the render step then sets the provider's own template
    fields from it -- ``job_name``, ``job_definition`` (registered if the YAML changed), ``job_queue`` (the
    lane's), ``container_overrides`` (command and environment) and ``tags`` -- so the task's Rendered Templates
    show what was submitted, and ``execute`` only submits it.
    """

    template_fields = ("job", *BatchOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {**BatchOperator.template_fields_renderers,
                                                           "job": "json", "tags": "json"}

    def __init__(self, *, job: Any, runner: RunnerConfig, **kwargs: Any):
        super().__init__(
            job_name="", job_definition="", job_queue="",  # the job's, set when the job is rendered
            deferrable=True, poll_interval=runner.batch.poll_seconds if runner.batch else 30, **kwargs,
        )
        self.job = job
        self.runner = runner

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.configure(JobSpec.from_dict(self.job))

    def configure(self, spec: JobSpec) -> None:
        """The submission from the staged job; registers a job definition revision when the YAML changed it."""
        assert self.runner.batch is not None and spec.image
        self.job_name = safe_id(f"emm-{spec.instrument}-{spec.level}-{spec.work_unit}-{spec.processing_run_id}")[:128]
        self.job_definition = ensure_job_definition(self.hook.client, spec.instrument, spec.environment,
                                                    self.runner, spec.image)
        self.job_queue = self.runner.batch.job_queues[spec.lane]  # type: ignore[index]
        self.share_identifier = share_identifier(self.hook.client, self.job_queue, spec.instrument)
        env = batch_environment(spec, s3_endpoint_of(self.aws_conn_id))
        self.container_overrides = {"command": list(PROCESSOR_COMMAND),
                                    "environment": [{"name": k, "value": v} for k, v in sorted(env.items())]}
        self.tags = {"emm:job": spec.job_id[:256], "emm:instrument": spec.instrument, "emm:lane": spec.lane}

    def execute(self, context: Any) -> str | None:
        spec = JobSpec.from_dict(self.job)
        try:
            return super().execute(context)
        except Exception as exc:
            raise self._fail(spec, exc) from exc

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> str:
        spec = JobSpec.from_dict(self.job)
        try:
            return super().execute_complete(context, event)
        except Exception as exc:
            raise self._fail(spec, exc) from exc

    def _fail(self, spec: JobSpec, exc: Exception) -> JobFailed:
        """Record the failure with the job's log (if the container got to write one)."""
        from emm_sdc import connections

        fetch_outputs(connections.storage(), spec)
        tail = "\n".join(spec.log_path.read_text(errors="replace").splitlines()[-40:]) if spec.log_path.exists() else ""
        why = f"AWS Batch job {self.job_id or '(not submitted)'} failed: {exc}"
        fail_job(spec, None, f"{why}\n{tail}")
        return JobFailed(spec.job_id, None, why, tail or "(no job.log was written)")


def stage_inputs(storage: Storage, spec: JobSpec, bucket: str) -> str:
    """Upload a prepared job's inputs and its S3 manifest; return the job's ``s3://`` prefix."""
    prefix = f"{WORK_ROOT}/{spec.job_id}/"
    manifest = spec.manifest()
    if spec.meta_kernel:  # the container fetches the meta-kernel and its kernels from the archive
        manifest["spice_metakernel"] = f"s3://{bucket}/{SPICE_ROOT}/mk/{Path(spec.meta_kernel).name}"
    for entry in manifest["inputs"]:
        key = f"{prefix}in/{entry['file_name']}"
        storage.upload_verified(spec.input_dir / entry["file_name"], bucket, key, md5=entry["md5"])
        entry["path"] = f"s3://{bucket}/{key}"
    for entry in manifest["calibration"]:  # the calibration set, staged beside the inputs
        key = f"{prefix}calibration/{entry['file_name']}"
        storage.upload_verified(Path(spec.calibration_dir or "") / entry["file_name"], bucket, key, md5=entry["md5"])
        entry["path"] = f"s3://{bucket}/{key}"
    if manifest["calibration"]:
        manifest["calibration_dir"] = f"s3://{bucket}/{prefix}calibration/"
    storage.put_json(bucket, f"{prefix}input_manifest.json", manifest)
    return f"s3://{bucket}/{prefix}"


def fetch_outputs(storage: Storage, spec: JobSpec) -> None:
    """Download what a batch job left under its prefix (outputs and job.log) into the job directory.

    The same rules as a local output directory: only plain names directly under ``out/`` (nothing that
    could point outside the job's directory), bounded sizes; anything else rejects the job.
    """
    if not spec.s3_prefix:
        return
    bucket, _, prefix = spec.s3_prefix[5:].partition("/")
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    for obj in storage.list(bucket, prefix):
        rel = obj.key[len(prefix):]
        if rel == "job.log":
            storage.download(bucket, obj.key, spec.log_path)
        elif rel.startswith("out/"):
            name = rel[4:]
            if not naming.SAFE_NAME.match(name):
                problems.append(f"{rel}: outputs are plain file names directly in out/")
            elif obj.size > MAX_PRODUCT_BYTES:
                problems.append(f"{rel}: is {obj.size} bytes, more than {MAX_PRODUCT_BYTES}")
            else:
                storage.download(bucket, obj.key, spec.output_dir / name)
    if problems:
        raise OutputError(spec.job_id, problems)


def s3_endpoint_of(conn_id: str) -> str | None:
    """The ``endpoint_url`` of an AWS connection, if it points at a non-AWS S3 (e.g. moto, MinIO)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsGenericHook

    extra = AwsGenericHook(aws_conn_id=conn_id).conn_config.extra_config or {}
    return extra.get("endpoint_url") or os.environ.get("EMM_S3_ENDPOINT_URL")
