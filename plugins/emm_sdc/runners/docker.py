"""The ``docker`` runner: the ITF image through the docker provider's DockerOperator.

The job directory the ``prepare`` task staged is bind-mounted at ``/emm/work``
(inputs in ``in/``, outputs to ``out/``, the manifest rewritten with container
paths); SPICE and calibration directories, when a job has them, are mounted
read-only. Memory limit and timeout come from the ITF's YAML; the container
runs as the worker's user so its outputs belong to the worker. Container logs
go to the task log (DockerOperator streams them) and to ``job.log``, which the
SDC archives next to the products. A non-zero exit, a kill at the memory limit
or a timeout fails the task with the exit code and the log tail and records
the failure on the processing run; nothing is indexed.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import Mount

from emm_sdc.core.jobs import JobSpec, safe_id
from emm_sdc.core.kernels import rebase_meta_kernel
from emm_sdc.lanes import REPROCESSING_CPU_WEIGHT
from emm_sdc.lifecycle import fail_job
from emm_sdc.runners.local import JobFailed

CONTAINER_WORK = "/emm/work"
CONTAINER_SPICE = "/emm/spice"
CONTAINER_CALIBRATION = "/emm/calibration"
CONTAINER_MANIFEST = f"{CONTAINER_WORK}/input_manifest.container.json"


def container_view(spec: JobSpec) -> tuple[dict[str, str], list[Mount]]:
    """Environment and mounts that present a staged job to a container under the contract."""
    mounts = [Mount(CONTAINER_WORK, spec.workdir, type="bind")]
    manifest = spec.manifest(input_root=Path(CONTAINER_WORK) / "in")
    if spec.meta_kernel:
        # The kernel directory read-only at /emm/spice, and a copy of the meta-kernel pointing there.
        kernel_dir = Path(spec.meta_kernel).parents[1]
        mounts.append(Mount(CONTAINER_SPICE, str(kernel_dir), type="bind", read_only=True))
        rebased = rebase_meta_kernel(Path(spec.meta_kernel).read_text(), CONTAINER_SPICE)
        (Path(spec.workdir) / "spice.tm").write_text(rebased)
        manifest["spice_metakernel"] = f"{CONTAINER_WORK}/spice.tm"
    if spec.calibration_dir:
        mounts.append(Mount(CONTAINER_CALIBRATION, spec.calibration_dir, type="bind", read_only=True))
        manifest["calibration_dir"] = CONTAINER_CALIBRATION
        for entry in manifest["calibration"]:
            entry["path"] = f"{CONTAINER_CALIBRATION}/{entry['file_name']}"
    (Path(spec.workdir) / Path(CONTAINER_MANIFEST).name).write_text(json.dumps(manifest, indent=2))
    env = spec.env(manifest=CONTAINER_MANIFEST, output_dir=f"{CONTAINER_WORK}/out")
    env["EMM_SPICE_METAKERNEL"] = manifest["spice_metakernel"] or ""
    env["EMM_CALIBRATION_DIR"] = manifest["calibration_dir"] or ""
    return env, mounts


class SdcDockerOperator(DockerOperator):
    """DockerOperator that runs one staged SDC job (``job`` = the ``prepare`` task's output)."""

    template_fields = (*DockerOperator.template_fields, "job")

    def __init__(self, *, job: Any, memory_mb: int, timeout_s: float, **kwargs: Any):
        super().__init__(
            image="resolved-from-the-job",
            auto_remove="never",  # removed here, after its logs are kept
            mount_tmp_dir=False,
            mem_limit=f"{memory_mb}m",
            **kwargs,
        )
        self.job = job
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._timed_out = False

    def _stop_for_timeout(self) -> None:
        self._timed_out = True
        if self.container is not None:
            self.cli.kill(self.container["Id"])

    def execute(self, context: Any) -> dict[str, Any]:
        spec = JobSpec.from_dict(self.job)
        if spec.output_dir.exists():
            shutil.rmtree(spec.output_dir)
        spec.output_dir.mkdir(parents=True)
        self.image = spec.image or ""
        if spec.lane == "reprocessing":  # CPU weight (cpu_shares) below daily containers': daily gets cores first
            self.cpus = self.cpus * REPROCESSING_CPU_WEIGHT
        self.environment, self.mounts = container_view(spec)
        self.user = f"{os.getuid()}:{os.getgid()}"
        self.container_name = safe_id(f"emm-{spec.job_id}")[-120:].lstrip("._-")
        self.labels = {"emm.job": spec.job_id[:250], "emm.instrument": spec.instrument}
        timer = threading.Timer(self.timeout_s, self._stop_for_timeout)
        timer.start()
        try:
            super().execute(context)
        except Exception as exc:
            status, why = self._diagnose(exc)
            tail = self._keep_logs(spec)
            fail_job(spec, status, f"{why}\n{tail}")
            raise JobFailed(spec.job_id, status, why, tail) from exc
        finally:
            timer.cancel()
        self._keep_logs(spec)
        return {"exit_status": 0}

    def _diagnose(self, exc: Exception) -> tuple[int | None, str]:
        if self.container is None:
            return None, f"container could not start: {exc}"
        state = self.cli.inspect_container(self.container["Id"])["State"]
        code = state.get("ExitCode")
        if self._timed_out:
            return code, f"timed out after {self.timeout_s:.0f} s and was killed"
        if state.get("OOMKilled") or code == 137:
            return code, (f"killed (exit 137, SIGKILL): the container exceeded its memory limit of "
                          f"{self.memory_mb} MB")
        return code, f"processor exited with status {code}"

    def _keep_logs(self, spec: JobSpec) -> str:
        """Write the container's output to job.log, remove the container; return the log tail."""
        if self.container is None:
            return ""
        raw = self.cli.logs(self.container["Id"], stdout=True, stderr=True)
        text = raw.decode(errors="replace")
        with spec.log_path.open("a") as fh:
            fh.write(text)
        self.cli.remove_container(self.container["Id"], force=True)
        return "\n".join(text.splitlines()[-40:])
