"""The local runner's limits hold for the job as a whole: all its processes together, as in a container.

The jobs run through the real ``run_local``: ``auto`` uses what this machine
allows (a cgroup v2 group where the worker may create one, else the RSS
supervisor); ``supervisor`` forces the fallback so it is tested everywhere.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from emm_sdc.core.jobs import JobSpec
from emm_sdc.runners import local
from emm_sdc.runners.local import CGROUP_PARENT_ENV, JobFailed, run_local

#: Three children hold ``argv[1]`` MB each (every page touched) at the same time, then exit together.
THREE_CHILDREN = r'''
import subprocess, sys, time
mb = int(sys.argv[1])
child = f"import sys\nblock = b'x' * ({mb} << 20)\nprint('holding', flush=True)\nsys.stdin.read()\n"
kids = [subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(3)]
for k in kids:
    if k.stdout.readline() != "holding\n":
        sys.exit("a child died before holding its memory")
print(f"three children hold {mb} MB each", flush=True)
time.sleep(0.5)  # several samples while all three hold their memory
for k in kids:
    k.stdin.close()
sys.exit(max(k.wait() for k in kids))
'''

#: A child in its own process group (``killpg`` of the job's group misses it) that would outlive the job.
ESCAPEE = r'''
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import os, time; os.setpgid(0, 0); print(os.getpid(), flush=True);"
                          " time.sleep(3600)"], stdout=subprocess.PIPE, text=True)
print("escapee", child.stdout.readline().strip(), flush=True)
if sys.argv[1] == "hang":
    time.sleep(120)
'''


@pytest.fixture(params=["auto", "supervisor"])
def mechanism(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "supervisor":
        monkeypatch.setattr(local, "_cgroup_parent", lambda: (None, "disabled by the test"))
    return request.param


def job(tmp_path: Path) -> JobSpec:
    return JobSpec(job_id="limits-test", instrument="emr", level="l1", work_unit="orbit-0011",
                   workdir=str(tmp_path / "job"), version=1, revision=0, kernel_class="n", inputs=[])


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped does not)."""
    try:
        state = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return state.split()[1] not in ("Z", "X")


def test_three_children_over_the_job_limit_are_killed_as_out_of_memory(
        tmp_path: Path, mechanism: str, caplog: pytest.LogCaptureFixture) -> None:
    spec = job(tmp_path)
    with caplog.at_level(logging.INFO, logger="emm_sdc.runners.local"), pytest.raises(JobFailed) as err:
        run_local(spec, ["python", "-c", THREE_CHILDREN, "250"], cwd=tmp_path, memory_mb=512, timeout_s=60)
    message = str(err.value)
    assert "(out of memory: limit 512 MB)" in message
    enforced = re.search(r"\[sdc\] .* enforced by (.+)", err.value.log_tail)
    assert enforced, err.value.log_tail  # the failure names the mechanism ...
    assert enforced[1] in spec.log_path.read_text() and enforced[1] in caplog.text  # ... in job.log and task log
    if mechanism == "supervisor" or enforced[1].startswith("RSS supervisor"):
        assert message.startswith("job limits-test: processor was killed by signal 9 (out of memory: limit 512 MB)")
        assert err.value.exit_status == -9
    else:
        assert enforced[1].startswith("cgroup v2")


def test_three_children_under_the_job_limit_succeed(tmp_path: Path, mechanism: str) -> None:
    spec = job(tmp_path)
    result = run_local(spec, ["python", "-c", THREE_CHILDREN, "100"], cwd=tmp_path, memory_mb=512, timeout_s=60)
    assert result.exit_status == 0
    assert "three children hold 100 MB each" in spec.log_path.read_text()
    want = "RSS supervisor" if mechanism == "supervisor" else ("RSS supervisor", "cgroup v2")
    assert result.memory_enforced_by.startswith(want)


def test_timeout_kills_every_process_of_the_job(tmp_path: Path, mechanism: str) -> None:
    spec = job(tmp_path)
    with pytest.raises(JobFailed, match=r"timed out after 2 s and was killed") as err:
        run_local(spec, ["python", "-c", ESCAPEE, "hang"], cwd=tmp_path, memory_mb=512, timeout_s=2)
    pid = int(re.search(r"escapee (\d+)", err.value.log_tail)[1])  # type: ignore[index]
    assert not alive(pid)


def test_processes_left_behind_by_a_finished_job_are_killed(tmp_path: Path, mechanism: str) -> None:
    spec = job(tmp_path)
    results: list[Any] = []
    # The leftover would live an hour and hold the log pipe open: if run_local waited for it, this thread
    # would still be running long after the bound below (a bound on a hang, not a speed measurement).
    runner = threading.Thread(target=lambda: results.append(run_local(
        spec, ["python", "-c", ESCAPEE, "exit"], cwd=tmp_path, memory_mb=512, timeout_s=600)), daemon=True)
    runner.start()
    runner.join(120)
    assert not runner.is_alive(), "run_local waited for a process the job left behind"
    assert results[0].exit_status == 0
    pid = int(re.search(r"escapee (\d+)", spec.log_path.read_text())[1])  # type: ignore[index]
    assert not alive(pid)


# --------------------------------------------------------------------------- cgroup v2 set-up, on a fake tree


@pytest.fixture
def fake_cgroup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    parent = tmp_path / "delegated"
    parent.mkdir()
    (parent / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (parent / "cgroup.subtree_control").write_text("\n")
    monkeypatch.setenv(CGROUP_PARENT_ENV, str(parent))
    return parent


def test_a_job_group_gets_the_memory_cpu_and_swap_limits(fake_cgroup: Path) -> None:
    group = local.job_limits(512, cpus=1.5)
    assert isinstance(group, local._CgroupJob) and group.path.parent == fake_cgroup
    assert (group.path / "memory.max").read_text() == str(512 << 20)
    assert (group.path / "memory.swap.max").read_text() == "0"
    assert (group.path / "memory.oom.group").read_text() == "1"
    assert (group.path / "cpu.max").read_text() == "150000 100000"
    assert group.mechanism.startswith("cgroup v2 (memory.max, memory.swap.max, memory.oom.group, cpu.max)")
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 2\n")
    assert group.finish() == "the kernel killed 2 process(es) of the job"


def test_without_a_usable_cgroup_the_supervisor_says_why(fake_cgroup: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (fake_cgroup / "cgroup.controllers").write_text("cpu pids\n")
    limits = local.job_limits(512)
    assert isinstance(limits, local._SessionSupervisor)
    assert "memory controller is not available" in limits.mechanism

    (fake_cgroup / "cgroup.controllers").write_text("cpu memory\n")

    def busy(path: Path, value: str) -> None:
        raise OSError(16, "Device or resource busy")

    monkeypatch.setattr(local, "_write", busy)
    limits = local.job_limits(512)
    assert isinstance(limits, local._SessionSupervisor)
    assert "cannot enable the memory controller" in limits.mechanism and CGROUP_PARENT_ENV in limits.mechanism
    assert not [p for p in fake_cgroup.iterdir() if p.is_dir()]  # no group left behind
