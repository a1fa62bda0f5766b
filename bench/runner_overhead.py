"""Per-job cost of the docker runner vs the local runner, on the same small EMIRS l1 job.

Both go through the SDC's own runner code: ``run_local`` (subprocess) and
``SdcDockerOperator.execute`` (create, start, stream logs, wait, keep logs,
remove). The local run is the baseline; the ratio and the absolute overhead
per job are what containerisation costs. Needs a Docker-API engine
(``DOCKER_HOST``; else ``scripts/container-engine`` starts podman) and the
reference images (``./sdc build-images``); without them it prints one line
saying what it skipped and why, and exits 0.

Usage: ``./sdc bench`` or ``PYTHONPATH=plugins:devtools .venv/bin/python bench/runner_overhead.py [--repeat 5]``
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import structlog

from emm_dev import synthetic
from emm_sdc.core.jobs import JobInput, JobSpec
from emm_sdc.core.settings import project_root

IMAGE = "localhost/emm-emr-ref:1.0.0"


def job(base: Path, l0: synthetic.Delivered, n: int) -> JobSpec:
    spec = JobSpec(job_id=f"bench-{n}", instrument="emr", level="l1", work_unit="orbit-0011",
                   workdir=str(base / f"job{n}"), version=1, revision=0, kernel_class="n",
                   inputs=[JobInput(l0.file_name, "", l0.md5, "l0")], image=IMAGE, runner="docker")
    spec.input_dir.mkdir(parents=True)
    shutil.copy(l0.path, spec.input_dir / l0.file_name)
    spec.output_dir.mkdir(parents=True)
    spec.write_manifest()
    return spec


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def engine_problem() -> str | None:
    """Why the docker runner cannot be measured here (None when it can); sets DOCKER_HOST when podman starts."""
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        script = project_root() / "scripts/container-engine"
        try:
            proc = subprocess.run([str(script)], capture_output=True, text=True, check=False, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"DOCKER_HOST is not set and {script.name} could not run: {exc}"
        if proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
            return f"DOCKER_HOST is not set and {script.name} failed: {why[0]}"
        host = os.environ["DOCKER_HOST"] = proc.stdout.strip()
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        if not client.images.list(name=IMAGE):
            return f"image {IMAGE} is not on the engine at {host} (./sdc build-images)"
    except Exception as exc:
        return f"the container engine at {host} does not answer: {exc}"
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args, _ = ap.parse_known_args()
    problem = engine_problem()
    if problem:
        print(_one_line(f"runner overhead: SKIPPED (docker vs local runner not measured): {problem}"))
        return
    from emm_sdc.runners.docker import SdcDockerOperator
    from emm_sdc.runners.local import run_local

    # Airflow logs through structlog: keep the processors' lines out of the benchmark's output.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    logging.getLogger("emm_sdc").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        l0 = next(f for f in synthetic.generate(base / "moc", orbits=(11,), instruments=("emr",)) if f.level == "l0")
        local, docker = [], []
        for n in range(args.repeat):
            spec = job(base / "local", l0, n)
            t0 = time.perf_counter()
            run_local(spec, ["python", "processors/launch.py", "processors/emirs/processor.py"], cwd=project_root(),
                      memory_mb=2048, timeout_s=120)
            local.append(time.perf_counter() - t0)
            spec = job(base / "docker", l0, n)
            op = SdcDockerOperator(task_id=f"bench{n}", job=spec.to_dict(), memory_mb=2048, timeout_s=120)
            t0 = time.perf_counter()
            op.render_template_fields({})  # the job's image, environment and mounts, as a task run renders them
            op.execute({})
            docker.append(time.perf_counter() - t0)
            assert sorted(p.name for p in spec.output_dir.iterdir()) == sorted(
                p.name for p in (base / "local" / f"job{n}" / "out").iterdir())
    lm, dm = statistics.median(local), statistics.median(docker)
    print(f"EMIRS l1 job on one {l0.size // 1024} kB L0 file; median of {args.repeat}")
    print(f"  local runner (baseline)   {lm:6.2f} s  ratio 1.00")
    print(f"  docker runner ({os.environ['DOCKER_HOST'].split('/')[-1]})  {dm:6.2f} s  ratio {dm / lm:.2f}  "
          f"(+{dm - lm:.2f} s per job)")


if __name__ == "__main__":
    main()
