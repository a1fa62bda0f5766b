"""Runners: the one task of a processing job that differs between ``local``, ``docker`` and ``batch``.

Staging (``prepare``) and validation/indexing (``collect``) are shared; every
runner honours the same contract (docs/itf_container_contract.md).
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from typing import Any

from airflow.sdk import task

from emm_sdc.core.config import RunnerConfig
from emm_sdc.core.jobs import JobSpec
from emm_sdc.core.settings import get_settings, project_root

RUN_DOC = """\
**What it does**: runs the ITF processor {where} on the job `prepare` staged, within the YAML's limits
({timeout} min, {memory} MB).

**If it fails**: the log ends with the exit status and the processor's last lines. A processor error is the
ITF's to fix (the run's failure mail reaches them); a timeout or out-of-memory kill: raise `timeout_minutes`
or `memory_mb` in the YAML.{outage} To run the job again, clear this level's `prepare` with *Downstream*.
"""
_WHERE = {"local": "as a subprocess on the worker", "docker": "in a container on the worker",
          "batch": "as an AWS Batch job (the task waits deferred)"}


def run_doc(runner: RunnerConfig) -> str:
    """The run task's doc_md for this runner."""
    outage = " AWS Batch or S3 unreachable: clear this task after the outage." if runner.kind == "batch" else ""
    return RUN_DOC.format(where=_WHERE[runner.kind], timeout=runner.timeout_minutes, memory=runner.memory_mb,
                          outage=outage)


def run_task(runner: RunnerConfig, job: Any, *, task_id: str = "run", **task_args: Any) -> Any:
    """Add the runner's task for ``job`` (the prepare task's output) and return its output.

    ``task_args`` (pool, priority weight: the job's lane) go to the operator as they are.
    """
    timeout = timedelta(minutes=runner.timeout_minutes + 5)  # backstop: runners enforce the YAML timeout
    task_args = {"doc_md": run_doc(runner), **task_args}
    if runner.kind == "docker":
        from emm_sdc.runners.docker import SdcDockerOperator

        return SdcDockerOperator(task_id=task_id, job=job, memory_mb=runner.memory_mb,
                                 timeout_s=runner.timeout_minutes * 60, cpus=runner.cpus,
                                 execution_timeout=timeout, **task_args).output
    if runner.kind == "batch":
        from emm_sdc.runners.batch import SdcBatchOperator

        return SdcBatchOperator(task_id=task_id, job=job, runner=runner, aws_conn_id=get_settings().aws_conn_id,
                                execution_timeout=timeout, **task_args).output

    @task(task_id=task_id, execution_timeout=timeout, **task_args)
    def run_local_job(job: dict[str, Any]) -> dict[str, Any]:
        """Run the processor as a subprocess under the contract."""
        from emm_sdc.lanes import yield_cpu
        from emm_sdc.lifecycle import fail_job
        from emm_sdc.runners.local import JobFailed, run_local

        spec = JobSpec.from_dict(job)
        yield_cpu(spec.lane)  # the processor inherits the lane's CPU priority
        if spec.output_dir.exists():  # a retry starts from an empty output directory
            shutil.rmtree(spec.output_dir)
        spec.output_dir.mkdir(parents=True)
        assert runner.command is not None
        try:
            result = run_local(spec, runner.command, cwd=project_root(), memory_mb=runner.memory_mb,
                               timeout_s=runner.timeout_minutes * 60, cpus=runner.cpus)
        except JobFailed as exc:
            fail_job(spec, exc.exit_status, str(exc))
            raise
        return {"exit_status": result.exit_status}

    return run_local_job(job)
