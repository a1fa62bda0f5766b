"""The ``local`` runner: the ITF processor as a subprocess on the worker.

Honours the contract's environment, streams the processor's output into the
task log and into ``job.log``, and applies the YAML's limits to the *job*, that
is to every process it starts, as a container would:

* **memory** — a cgroup v2 group per job (``memory.max``, no swap, the whole
  group killed on OOM) where the worker may create one: under
  ``$EMM_LOCAL_CGROUP_PARENT``, else under the worker's own cgroup. Otherwise
  a supervisor thread sums the resident memory of the job's session every
  100 ms and kills all of it when the sum passes the limit. Either way the job
  fails as "killed by signal 9 (out of memory: limit N MB)" and the logs name
  the mechanism.
* **CPU** — ``cpu.max`` in the job's cgroup; not enforced without one.
* **timeout** — every process of the job (cgroup or session) is killed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from emm_sdc.core.jobs import JobSpec

log = logging.getLogger(__name__)

#: A cgroup v2 directory the worker may create job groups in (e.g. delegated by systemd).
CGROUP_PARENT_ENV = "EMM_LOCAL_CGROUP_PARENT"
#: How often the supervisor samples a job's memory when no cgroup is available.
MEMORY_SAMPLE_S = 0.1
_CPU_PERIOD_US = 100_000
_job_numbers = itertools.count()


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
    #: What enforced the job's memory limit (``cgroup v2 ...`` or ``RSS supervisor``).
    memory_enforced_by: str = ""


class _JobLimits(Protocol):
    """Job-wide limits: set up before the spawn, joined by the child, torn down after the job."""

    mechanism: str

    def preexec(self) -> None: ...  # in the child, before exec

    def started(self, pid: int) -> None: ...

    def kill_all(self) -> None: ...

    def finish(self) -> str | None:
        """Kill what is left of the job, release the limits; describe the memory overrun, if any."""
        ...


# --------------------------------------------------------------------------- cgroup v2


def _cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or ``.../unified`` in hybrid mode)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split(" ")[4])
    return None


def _cgroup_parent() -> tuple[Path | None, str]:
    """The cgroup v2 directory to create job groups in, or None and why there is none."""
    configured = os.environ.get(CGROUP_PARENT_ENV)
    if configured:
        return Path(configured), ""
    mount = _cgroup2_mount()
    if mount is None:
        return None, "no cgroup2 file system is mounted"
    try:
        own = next(ln[3:] for ln in Path("/proc/self/cgroup").read_text().splitlines() if ln.startswith("0::"))
    except (OSError, StopIteration):
        return None, "this process has no cgroup v2 membership"
    return mount / own.lstrip("/"), ""


def _write(path: Path, value: str) -> None:
    with path.open("w") as fh:
        fh.write(value)


class _CgroupJob:
    """A cgroup v2 child group holding every process of one job."""

    def __init__(self, path: Path):
        self.path = path
        self.mechanism = f"cgroup v2 at {path}"
        self._procs = str(path / "cgroup.procs")

    @classmethod
    def create(cls, memory_mb: int, cpus: float | None) -> tuple[_CgroupJob | None, str]:
        """A new job group with the limits set, or None and why the machine does not allow one."""
        parent, why = _cgroup_parent()
        if parent is None:
            return None, why
        try:
            controllers = (parent / "cgroup.controllers").read_text().split()
            enabled = (parent / "cgroup.subtree_control").read_text().split()
        except OSError as exc:
            return None, f"cannot read the cgroup v2 controllers of {parent}: {exc.strerror or exc}"
        if "memory" not in controllers:
            return None, (f"the memory controller is not available in the cgroup v2 group {parent} "
                          f"(available: {' '.join(controllers) or 'none'}; a cgroup v1 hierarchy may hold it)")
        for name in ("memory", "cpu"):
            if name in controllers and name not in enabled and (name == "memory" or cpus):
                try:
                    _write(parent / "cgroup.subtree_control", f"+{name}")
                    enabled.append(name)
                except OSError as exc:
                    if name == "memory":
                        return None, (f"cannot enable the memory controller for the children of {parent}: "
                                      f"{exc.strerror or exc} (a group holding processes cannot; set "
                                      f"{CGROUP_PARENT_ENV} to a delegated cgroup)")
        path = parent / f"emm-job-{os.getpid()}-{next(_job_numbers)}"
        try:
            path.mkdir()
        except OSError as exc:
            return None, f"cannot create a cgroup under {parent}: {exc.strerror or exc}"
        job = cls(path)
        try:
            _write(path / "memory.max", str(memory_mb * 1024 * 1024))
        except OSError as exc:
            job.finish()
            return None, f"cannot set memory.max in {path}: {exc.strerror or exc}"
        set_ = ["memory.max"]
        for name, value in (("memory.swap.max", "0"), ("memory.oom.group", "1")):
            try:  # absent without swap accounting / before Linux 4.19
                _write(path / name, value)
                set_.append(name)
            except OSError:
                log.info("cgroup %s: %s not set (not supported here)", path, name)
        if cpus and "cpu" in enabled:
            try:
                _write(path / "cpu.max", f"{max(1000, round(cpus * _CPU_PERIOD_US))} {_CPU_PERIOD_US}")
                set_.append("cpu.max")
            except OSError:
                log.info("cgroup %s: cpu.max not set", path)
        job.mechanism = f"cgroup v2 ({', '.join(set_)}) at {path}"
        return job, ""

    def preexec(self) -> None:
        # Joined before exec, so the job and everything it forks start inside the group: no race.
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
        finally:
            os.close(fd)

    def started(self, pid: int) -> None:
        pass

    def _pids(self) -> list[int]:
        try:
            return [int(p) for p in Path(self._procs).read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        try:
            _write(self.path / "cgroup.kill", "1")  # Linux 5.14+
            return
        except OSError:
            pass
        for pid in self._pids():
            _sigkill(pid)

    def oom_kills(self) -> int:
        """Processes the kernel killed in this group for passing ``memory.max``."""
        try:
            events = dict(ln.split() for ln in (self.path / "memory.events").read_text().splitlines() if ln.strip())
        except (OSError, ValueError):
            return 0
        return int(events.get("oom_kill", 0))

    def finish(self) -> str | None:
        kills = self.oom_kills()
        deadline = time.monotonic() + 5
        while self._pids() and time.monotonic() < deadline:
            self.kill_all()
            time.sleep(0.01)
        try:
            peak = int((self.path / "memory.peak").read_text()) >> 20
        except (OSError, ValueError):
            peak = None
        try:
            self.path.rmdir()
        except OSError as exc:
            log.warning("could not remove the job's cgroup %s: %s", self.path, exc)
        if not kills:
            return None
        return f"the kernel killed {kills} process(es) of the job" + (f" (peak {peak} MB)" if peak else "")


# --------------------------------------------------------------------------- supervisor


def _session_usage(sid: int) -> tuple[list[int], int]:
    """Live (non-zombie) processes of session ``sid`` and their resident anonymous + shared memory in bytes.

    File-backed pages (code, mapped inputs) are left out: the kernel can reclaim them,
    and counting shared libraries once per process would overstate the job.
    """
    pids: list[int] = []
    used = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            if os.getsid(pid) != sid:
                continue
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        fields = dict(ln.split(":", 1) for ln in status.splitlines() if ":" in ln)
        if fields.get("State", "").strip().startswith(("Z", "X")):
            continue
        pids.append(pid)
        for key in ("RssAnon", "RssShmem"):
            if key in fields:
                used += int(fields[key].split()[0]) * 1024
    return pids, used


class _SessionSupervisor:
    """Samples the job's session (``start_new_session``) and SIGKILLs all of it past the limit."""

    def __init__(self, memory_mb: int, why_no_cgroup: str, interval: float = MEMORY_SAMPLE_S):
        self.limit = memory_mb * 1024 * 1024
        self.interval = interval
        self.mechanism = f"RSS supervisor (job session sampled every {interval:g} s; cgroup v2: {why_no_cgroup})"
        self.exceeded: str | None = None
        self.sid = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def preexec(self) -> None:
        pass

    def started(self, pid: int) -> None:
        self.sid = pid  # the child leads its own session
        self._thread = threading.Thread(target=self._watch, name=f"emm-memory-{pid}", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            pids, used = _session_usage(self.sid)
            if used > self.limit:
                self.exceeded = f"{len(pids)} process(es) of the job held {used >> 20} MB"
                self.kill_all()
                return

    def kill_all(self) -> None:
        for _ in range(20):  # again, for whatever forked meanwhile
            pids, _used = _session_usage(self.sid)
            if not pids:
                return
            for pid in pids:
                _sigkill(pid)
            time.sleep(0.005)

    def finish(self) -> str | None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.sid:
            self.kill_all()
        return self.exceeded


def job_limits(memory_mb: int, cpus: float | None = None) -> _JobLimits:
    """The job-wide limits this machine allows: a cgroup v2 group, else the RSS supervisor."""
    group, why = _CgroupJob.create(memory_mb, cpus)
    if group is not None:
        return group
    return _SessionSupervisor(memory_mb, why)


# --------------------------------------------------------------------------- the runner


def run_local(
    spec: JobSpec, command: list[str], *, cwd: Path, memory_mb: int, timeout_s: float,
    extra_env: dict[str, str] | None = None, cpus: float | None = None,
) -> LocalResult:
    """Run ``command`` under the contract; raise :class:`JobFailed` unless it exits 0.

    ``memory_mb`` (and ``cpus``, where a cgroup allows) bound the job's processes together.
    """
    env = {**os.environ, **(extra_env or {}), **spec.env()}
    if command and command[0] in ("python", "python3"):  # the worker's own interpreter and packages
        command = [sys.executable, *command[1:]]

    tail: deque[str] = deque(maxlen=40)
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_path.open("w") as logfile:
        limits = job_limits(memory_mb, cpus)
        try:
            proc = _spawn(command, cwd, env, limits)
        except subprocess.SubprocessError as exc:  # the child could not join the job's cgroup
            limits.finish()
            if not isinstance(limits, _CgroupJob):
                raise
            log.warning("job %s could not join %s (%s); using the RSS supervisor", spec.job_id,
                        limits.mechanism, exc)
            limits = _SessionSupervisor(memory_mb, f"joining the job's group failed: {exc}")
            proc = _spawn(command, cwd, env, limits)
        except BaseException:
            limits.finish()  # e.g. the command does not exist: remove the job's cgroup
            raise
        limits.started(proc.pid)
        log.info("job %s: memory limit %d MB for the whole job, enforced by %s; timeout %.0f s",
                 spec.job_id, memory_mb, limits.mechanism, timeout_s)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                logfile.write(line)
                tail.append(line.rstrip("\n"))
                log.info("[processor] %s", line.rstrip("\n"))

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            status = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            limits.kill_all()
            _sigkill(proc.pid, group=True)
            status = proc.wait()
        finally:
            overrun = limits.finish()  # also ends leftovers, which would hold the log pipe open
        reader.join(5)
        if overrun and (status != 0 or timed_out):
            note = (f"[sdc] the job passed its memory limit of {memory_mb} MB ({overrun}) and was killed; "
                    f"enforced by {limits.mechanism}")
            logfile.write(note + "\n")
            tail.append(note)
            log.error("job %s: %s", spec.job_id, note)
        elif overrun:
            log.warning("job %s exited 0 although %s (limit %d MB, %s)", spec.job_id, overrun, memory_mb,
                        limits.mechanism)
    if timed_out and not overrun:
        raise JobFailed(spec.job_id, None, f"timed out after {timeout_s:.0f} s and was killed", "\n".join(tail))
    if status != 0:
        why = f"processor exited with status {status}"
        if status < 0:
            why = f"processor was killed by signal {-status}"
        if overrun:
            why += f" (out of memory: limit {memory_mb} MB)"
        raise JobFailed(spec.job_id, status, why, "\n".join(tail))
    return LocalResult(status, str(spec.log_path), limits.mechanism)


def _spawn(command: list[str], cwd: Path, env: dict[str, str], limits: _JobLimits) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace", start_new_session=True,
        preexec_fn=limits.preexec if isinstance(limits, _CgroupJob) else None,
    )


def _sigkill(pid: int, *, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
