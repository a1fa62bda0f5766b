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
from typing import Any, ClassVar

from airflow.providers.docker.operators.docker import DockerOperator
from docker.types import Mount

from emm_sdc.core.jobs import JobSpec, safe_id
from emm_sdc.core.kernels import rebase_meta_kernel
from emm_sdc.core.settings import get_settings
from emm_sdc.lanes import REPROCESSING_CPU_WEIGHT
from emm_sdc.lifecycle import fail_job
from emm_sdc.runners.local import JobFailed

CONTAINER_WORK = "/emm/work"
CONTAINER_SPICE = "/emm/spice"
CONTAINER_CALIBRATION = "/emm/calibration"
CONTAINER_MANIFEST = f"{CONTAINER_WORK}/input_manifest.container.json"


def container_manifest(spec: JobSpec) -> dict[str, Any]:
    """The job's input manifest as the container sees it (paths under ``/emm/work``, ``/emm/spice``, ...)."""
    manifest = spec.manifest(input_root=Path(CONTAINER_WORK) / "in")
    if spec.meta_kernel:
        manifest["spice_metakernel"] = f"{CONTAINER_WORK}/spice.tm"  # a copy pointing at /emm/spice
    if spec.calibration_dir:
        manifest["calibration_dir"] = CONTAINER_CALIBRATION
        for entry in manifest["calibration"]:
            entry["path"] = f"{CONTAINER_CALIBRATION}/{entry['file_name']}"
    return manifest


def container_view(spec: JobSpec) -> tuple[dict[str, str], list[Mount]]:
    """Environment and mounts that present a staged job to a container under the contract (nothing written)."""
    mounts = [Mount(CONTAINER_WORK, spec.workdir, type="bind")]
    if spec.meta_kernel:  # the kernel directory read-only at /emm/spice
        mounts.append(Mount(CONTAINER_SPICE, str(Path(spec.meta_kernel).parents[1]), type="bind", read_only=True))
    if spec.calibration_dir:
        mounts.append(Mount(CONTAINER_CALIBRATION, spec.calibration_dir, type="bind", read_only=True))
    manifest = container_manifest(spec)
    env = spec.env(manifest=CONTAINER_MANIFEST, output_dir=f"{CONTAINER_WORK}/out")
    env["EMM_SPICE_METAKERNEL"] = manifest["spice_metakernel"] or ""
    env["EMM_CALIBRATION_DIR"] = manifest["calibration_dir"] or ""
    return env, mounts


def write_container_files(spec: JobSpec) -> None:
    """Write the container's manifest and, with SPICE, the meta-kernel rebased onto ``/emm/spice``."""
    if spec.meta_kernel:
        rebased = rebase_meta_kernel(Path(spec.meta_kernel).read_text(), CONTAINER_SPICE)
        (Path(spec.workdir) / "spice.tm").write_text(rebased)
    (Path(spec.workdir) / Path(CONTAINER_MANIFEST).name).write_text(json.dumps(container_manifest(spec), indent=2))


def docker_connection() -> dict[str, str]:
    """``docker_conn_id`` / ``docker_url`` from the site settings (``EMM_DOCKER_CONN_ID``, ``EMM_DOCKER_URL``).

    A Docker connection (host = the registry, login/password) makes the operator log in before it pulls, which
    a private registry needs; without ``EMM_DOCKER_URL`` the provider's default (``DOCKER_HOST``) is used.
    """
    settings = get_settings()
    found = {"docker_conn_id": settings.docker_conn_id, "docker_url": settings.docker_url}
    return {k: v for k, v in found.items() if v}


class SdcDockerOperator(DockerOperator):
    """DockerOperator that runs one staged SDC job (``job`` = the ``prepare`` task's output).

    ``job`` is rendered first (the prepare task's XCom); the render step then sets the provider's own template
    fields from it -- ``image``, ``environment``, ``mounts``, ``container_name`` (and the labels, user and CPU
    weight) -- so the task's Rendered Templates show what the container really ran with, and ``execute`` only
    runs it.
    """

    template_fields = ("job", *DockerOperator.template_fields, "labels")
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DockerOperator.template_fields_renderers, "job": "json", "environment": "json", "mounts": "json",
        "labels": "json"}

    def __init__(self, *, job: Any, memory_mb: int, timeout_s: float, cpus: float = 1.0, **kwargs: Any):
        super().__init__(
            image="",  # the job's image, set when the job is rendered
            auto_remove="never",  # removed here, after its logs are kept
            mount_tmp_dir=False,
            mem_limit=f"{memory_mb}m",
            cpus=cpus,
            **{**docker_connection(), **kwargs},
        )
        self.job = job
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self.daily_cpus = cpus
        self._timed_out = False

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        super().render_template_fields(context, jinja_env)
        self.configure(JobSpec.from_dict(self.job))

    def configure(self, spec: JobSpec) -> None:
        """The container's settings from the staged job (pure: nothing is written)."""
        self.image = spec.image or ""
        # Reprocessing gets a CPU weight (cpu_shares) below daily containers': daily work gets the cores first.
        self.cpus = self.daily_cpus * (REPROCESSING_CPU_WEIGHT if spec.lane == "reprocessing" else 1)
        self.environment, self.mounts = container_view(spec)
        self.user = f"{os.getuid()}:{os.getgid()}"
        self.container_name = safe_id(f"emm-{spec.job_id}")[-120:].lstrip("._-")
        self.labels = {"emm.job": spec.job_id[:250], "emm.instrument": spec.instrument}

    def execute(self, context: Any) -> dict[str, Any]:
        spec = JobSpec.from_dict(self.job)
        if spec.output_dir.exists():
            shutil.rmtree(spec.output_dir)
        spec.output_dir.mkdir(parents=True)
        write_container_files(spec)
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

    def _stop_for_timeout(self) -> None:
        self._timed_out = True
        if self.container is not None:
            self.cli.kill(self.container["Id"])

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
