"""The ``local`` runner: the ITF processor as a subprocess on the worker.

Honours the contract's environment, the YAML's memory limit (address-space
rlimit) and timeout (the whole process group is killed), streams the
processor's output into the task log and into ``job.log``.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from emm_sdc.core.jobs import JobSpec

log = logging.getLogger(__name__)


class JobFailed(RuntimeError):
    """The processor exited non-zero, timed out or was killed."""

    def __init__(self, job_id: str, exit_status: int | None, why: str, log_tail: str):
        self.exit_status = exit_status
        self.log_tail = log_tail
        super().__init__(f"job {job_id}: {why}\n--- last lines of the processor log ---\n{log_tail}")


@dataclass(frozen=True)
class LocalResult:
    exit_status: int
    log_path: str


def run_local(
    spec: JobSpec, command: list[str], *, cwd: Path, memory_mb: int, timeout_s: float,
    extra_env: dict[str, str] | None = None,
) -> LocalResult:
    """Run ``command`` under the contract; raise :class:`JobFailed` unless it exits 0."""
    env = {**os.environ, **(extra_env or {}), **spec.env()}
    if command and command[0] in ("python", "python3"):  # the worker's own interpreter and packages
        command = [sys.executable, *command[1:]]
    limit = memory_mb * 1024 * 1024

    def limits() -> None:  # runs in the child before exec
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    tail: deque[str] = deque(maxlen=40)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_path.open("w") as logfile:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace", preexec_fn=limits, start_new_session=True,
        )

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                logfile.write(line)
                tail.append(line.rstrip("\n"))
                log.info("[processor] %s", line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            reader.join(5)
            raise JobFailed(spec.job_id, None, f"timed out after {timeout_s:.0f} s and was killed",
                            "\n".join(tail)) from None
        reader.join(5)
    if status != 0:
        why = f"processor exited with status {status}"
        if status < 0:
            why = f"processor was killed by signal {-status}"
        if any("MemoryError" in ln for ln in tail):
            why += f" (out of memory: limit {memory_mb} MB)"
        raise JobFailed(spec.job_id, status, why, "\n".join(tail))
    return LocalResult(status, str(spec.log_path))
