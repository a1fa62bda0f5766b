"""``./sdc standalone`` keeps its data, and ``./sdc airflow`` reaches the running instance.

* The services of a standalone (:class:`emm_dev.cli.Services` with ``persist``), each start in its own
  process as a restart is: a delivered file archived by the real ingest code (catalog row + archive
  object) and a versioned bucket's versions, metadata and delete marker survive a clean stop and start;
  a checkpoint survives a kill (reported as an unclean stop); ``fresh`` wipes everything.
* The real command: ``emm_dev.cli standalone`` prints "ready" only when the UI and API answer, listens
  on 127.0.0.1 only, writes an ``airflow.cfg`` that the plain ``airflow`` CLI uses, ``./sdc airflow``
  lists its DAGs; SIGTERM stops it cleanly; started again, it keeps the archive and the catalog and
  does not deliver the initial data again.
"""

from __future__ import annotations

import configparser
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from emm_dev.airflow_local import default_parallelism, free_ports
from emm_sdc.core.settings import project_root

pytestmark = pytest.mark.e2e
ROOT = project_root()
#: What ./sdc puts on the path: the package and the dev tooling (emm_dev).
SDC_PATH = [str(ROOT / "plugins"), str(ROOT / "devtools")]

#: One start of the standalone's services in a fresh interpreter (moto keeps S3 in process memory, so a restart
#: within one process would prove nothing): argv = state dir, step. Prints STATE=<what S3 and the catalog hold>.
STEP = r'''
import hashlib, json, os, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from emm_dev.cli import Services

state, step = Path(sys.argv[1]), sys.argv[2]
svc = Services(state, fresh=step == "fresh", persist=True)
c = svc.client
if step == "put":
    from emm_dev import synthetic
    from emm_sdc.core import delivery
    from emm_sdc.core.archiving import Archiver, RunContext
    from emm_sdc.core.catalog import Catalog
    from emm_sdc.core.config import load_instrument
    from emm_sdc.core.storage import Storage
    from emm_dev.moc import deliver

    cfg = load_instrument("exi")
    prefix = cfg.ingest.inbox_prefix
    l0 = next(f for f in synthetic.generate(state / "moc", orbits=(11,), instruments=("exi",)) if f.level == "l0")
    deliver(c, "emm-sdc-inbox", prefix, [l0])
    archiver = Archiver(Storage(c), Catalog(svc.catalog_conn), cfg, inbox_bucket="emm-sdc-inbox",
                        archive_bucket="emm-sdc-archive", ctx=RunContext("ingest", "restart-test"))
    plan = delivery.plan(archiver.storage.list("emm-sdc-inbox", prefix), prefix,
                         now=datetime.now(UTC) + timedelta(seconds=1), grace=timedelta(0))
    outcomes = [archiver.handle(item).outcome for item in plan.actionable]
    assert outcomes == ["archived"], outcomes
    c.create_bucket(Bucket="emm-sdc-versions")
    c.put_bucket_versioning(Bucket="emm-sdc-versions", VersioningConfiguration={"Status": "Enabled"})
    c.put_object(Bucket="emm-sdc-versions", Key="a.txt", Body=b"first", Metadata={"md5": "one"})
    c.put_object(Bucket="emm-sdc-versions", Key="a.txt", Body=b"second", Metadata={"md5": "two"})
    c.put_object(Bucket="emm-sdc-versions", Key="gone.txt", Body=b"deleted later")
    c.delete_object(Bucket="emm-sdc-versions", Key="gone.txt")
if step == "crash":  # a change saved by a checkpoint only, then the process dies without stopping anything
    c.put_object(Bucket="emm-sdc-versions", Key="a.txt", Body=b"third")
    svc.s3.checkpoint()

objects = {}
for b in c.list_buckets()["Buckets"]:
    versions = c.list_object_versions(Bucket=b["Name"])
    for v in versions.get("Versions", []):
        o = c.get_object(Bucket=b["Name"], Key=v["Key"], VersionId=v["VersionId"])
        objects[f"{b['Name']}/{v['Key']}@{v['VersionId']}"] = {
            "latest": v["IsLatest"], "etag": v["ETag"], "md5": hashlib.md5(o["Body"].read()).hexdigest(),
            "metadata": o["Metadata"], "size": v["Size"]}
    for m in versions.get("DeleteMarkers", []):
        objects[f"{b['Name']}/{m['Key']}@{m['VersionId']}"] = {"delete_marker": True, "latest": m["IsLatest"]}
with svc.catalog_conn.cursor() as cur:
    cur.execute("SELECT file_name, md5checksum, s3_key FROM science_files ORDER BY file_name")
    files = [list(r) for r in cur.fetchall()]
print("STATE=" + json.dumps({"objects": objects, "files": files, "unclean_stop": svc.unclean_stop,
                             "created": svc.created}), flush=True)
if step == "crash":
    os._exit(0)
svc.close()
'''


def services_step(state: Path, step: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*SDC_PATH, str(ROOT)])}
    proc = subprocess.run([sys.executable, "-c", STEP, str(state), step], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("STATE=")), None)
    assert proc.returncode == 0 and line, f"step {step} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return dict(json.loads(line.removeprefix("STATE=")))


def test_restart_keeps_catalog_and_archive_and_fresh_wipes(tmp_path: Path) -> None:
    state = tmp_path / "standalone"
    before = services_step(state, "put")
    assert before["created"] and not before["unclean_stop"]
    [(_name, md5, key)] = before["files"]
    archived = {k: v for k, v in before["objects"].items() if k.startswith(f"emm-sdc-archive/{key}@")}
    assert [v["md5"] for v in archived.values()] == [md5]  # the archived object is the catalog's file
    versions = {k: v for k, v in before["objects"].items() if k.startswith("emm-sdc-versions/")}
    assert sorted(v["metadata"].get("md5", "") if "metadata" in v else "marker" for v in versions.values()) == [
        "", "marker", "one", "two"]

    after = services_step(state, "check")  # a new process: everything comes from the state dir
    assert after["files"] == before["files"]
    assert after["objects"] == before["objects"]  # every version: id, bytes, metadata, ETag; the delete marker
    assert not after["created"] and not after["unclean_stop"]

    crashed = services_step(state, "crash")
    third = {k for k, v in crashed["objects"].items() if v.get("latest") and k.startswith("emm-sdc-versions/a.txt")}
    again = services_step(state, "check")
    assert again["unclean_stop"]  # the crash is noticed
    assert again["objects"] == crashed["objects"] and third <= set(again["objects"])  # the checkpoint kept it

    wiped = services_step(state, "fresh")
    assert wiped["created"] and wiped["files"] == [] and wiped["objects"] == {}


class Standalone:
    """``python -m emm_dev.cli standalone`` as a subprocess, its output read line by line."""

    def __init__(self, state: Path, port: int, *extra: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(SDC_PATH), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emm_dev.cli", "standalone", "--state-dir", str(state), "--port", str(port),
             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout:.0f} s:\n" + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"standalone exited ({self.proc.wait()}) before {text!r}:\n" +
                                     "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(180)
        while (line := self._q.get(timeout=10)) is not None:
            self.lines.append(line)
        return rc


def sdc_airflow(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(SDC_PATH)}
    return subprocess.run([sys.executable, "-m", "emm_dev.cli", "airflow", "--state-dir", str(state), *args],
                          env=env, capture_output=True, text=True, timeout=300, check=False)


def json_rows(stdout: str) -> list[dict[str, Any]]:
    """The JSON list an ``airflow ... -o json`` command printed (its warnings may share stdout)."""
    return list(json.loads(next(ln for ln in stdout.splitlines() if ln.startswith("[{"))))


def processes_in(state: Path) -> list[psutil.Process]:
    """Live processes working in the state dir (Airflow's components run there)."""
    found = []
    for p in psutil.process_iter():
        try:
            if Path(p.cwd()).is_relative_to(state) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def test_standalone_restart_and_airflow_cli(tmp_path: Path) -> None:
    state = tmp_path / "sa"
    [port] = free_ports(1)
    first = Standalone(state, port)
    try:
        first.wait_for("Airflow is ready", 600)
        out = "\n".join(first.lines)
        assert "(new)" in out and "Delivered SPICE kernels" in out
        listening = [c for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN and
                     c.laddr.port == port]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}

        cfg = configparser.RawConfigParser()
        cfg.read(state / "airflow" / "airflow.cfg")
        assert cfg.get("database", "sql_alchemy_conn").startswith("postgresql+psycopg2://")
        assert cfg.get("core", "load_examples") == "False" and cfg.get("core", "executor") == "LocalExecutor"
        assert cfg.getint("core", "parallelism") == default_parallelism()
        assert cfg.get("core", "dags_folder") == str(ROOT / "dags")
        assert (cfg.get("api", "host"), cfg.getint("api", "port")) == ("127.0.0.1", port)
        assert cfg.getint("core", "dagbag_import_timeout") >= 60

        listed = sdc_airflow(state, "dags", "list", "-o", "json")
        assert listed.returncode == 0, listed.stderr[-2000:]
        dags = {d["dag_id"]: d for d in json_rows(listed.stdout)}
        assert {"emm_exi_ingest", "emm_exi_process", "emm_spice_refresh"} <= set(dags)
        conn = sdc_airflow(state, "connections", "get", "emm_airflow_api", "-o", "json")
        assert conn.returncode == 0 and f'"http://127.0.0.1:{port}"' in conn.stdout, conn.stderr[-2000:]

        # The airflow.cfg alone (no AIRFLOW__* or connection in the environment) reaches the same instance.
        plain = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        plain["AIRFLOW_HOME"] = str(state / "airflow")
        bare = subprocess.run([sys.executable, "-m", "airflow", "dags", "list", "-o", "json"], env=plain,
                              capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
        assert bare.returncode == 0, bare.stderr[-2000:]
        assert set(dags) == {d["dag_id"] for d in json_rows(bare.stdout)}

        # The initial delivery gets ingested by the scheduler (then there is something to keep).
        deadline = time.monotonic() + 420
        while catalog_files(state) == 0:
            assert time.monotonic() < deadline, "nothing was ingested within 7 min:\n" + "\n".join(first.lines)
            assert first.proc.poll() is None, "\n".join(first.lines)
            time.sleep(2)
    finally:
        rc = first.stop()
    assert rc == 0 and "Stopped." in first.lines[-1], "\n".join(first.lines[-20:])
    assert not processes_in(state), "processes of the standalone outlived its stop"
    not_running = sdc_airflow(state, "dags", "list")
    assert not_running.returncode == 2 and "is not running" in not_running.stdout

    kept = services_dump(state)
    assert kept["files"] > 0 and kept["archive"] > 0
    second = Standalone(state, port)
    try:
        second.wait_for("Airflow is ready", 600)
        out = "\n".join(second.lines)
        assert "(kept from the last run)" in out and "not again" in out and "Delivered SPICE" not in out
        assert f"restored S3: 2 buckets, {kept['archive']} archived objects" in out
    finally:
        assert second.stop() == 0
    again = services_dump(state)
    assert again["files"] >= kept["files"] and again["archive"] >= kept["archive"]


def catalog_files(state: Path) -> int:
    """Rows of science_files in a running standalone's catalog."""
    import psycopg

    conn_info = json.loads(json.loads((state / "services.json").read_text())["catalog"])
    with psycopg.connect(host=conn_info["host"], port=conn_info["port"], user="postgres",
                         dbname=conn_info["schema"]) as conn:
        return int(conn.execute("SELECT count(*) FROM science_files").fetchone()[0])


def services_dump(state: Path) -> dict[str, int]:
    """Archived objects and catalog rows of a stopped standalone's state dir (read in a process of its own)."""
    code = r'''
import json, sys
from pathlib import Path
from emm_dev.cli import Services
svc = Services(Path(sys.argv[1]), fresh=False, persist=True)
n = sum(p.get("KeyCount", 0) for p in svc.client.get_paginator("list_objects_v2").paginate(Bucket="emm-sdc-archive"))
files = svc.catalog_conn.execute("SELECT count(*) FROM science_files").fetchone()[0]
print("DUMP=" + json.dumps({"archive": n, "files": files}))
svc.close()
'''
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(SDC_PATH)}
    proc = subprocess.run([sys.executable, "-c", code, str(state)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("DUMP=")), None)
    assert proc.returncode == 0 and line, proc.stderr[-2000:]
    return dict(json.loads(line.removeprefix("DUMP=")))


def test_standalone_with_celery_workers(tmp_path: Path) -> None:
    """``--executor celery``: a Redis broker and two Celery workers; the initial delivery is ingested by them; the
    stop leaves no process behind (broker included)."""
    state = tmp_path / "sa-celery"
    [port] = free_ports(1)
    sa = Standalone(state, port, "--executor", "celery", "--workers", "2", "--parallelism", "4")
    try:
        sa.wait_for("Airflow is ready", 600)
        out = "\n".join(sa.lines)
        assert "CeleryExecutor on Redis at redis://127.0.0.1:" in out and "2 Celery workers of 2 slots" in out
        assert "2 Celery workers ready" in out
        cfg = configparser.RawConfigParser()
        cfg.read(state / "airflow" / "airflow.cfg")
        assert cfg.get("core", "executor") == "CeleryExecutor"
        assert cfg.get("celery", "broker_url").startswith("redis://127.0.0.1:")
        assert cfg.get("operators", "default_queue") == "default"
        deadline = time.monotonic() + 420
        while catalog_files(state) == 0:
            assert time.monotonic() < deadline, "nothing was ingested within 7 min:\n" + "\n".join(sa.lines)
            assert sa.proc.poll() is None, "\n".join(sa.lines)
            time.sleep(2)
        ran = "".join((state / "logs" / f"celery-worker-{n}.log").read_text(errors="replace") for n in (1, 2))
        assert "Executing workload in Celery" in ran and "dag_id=emm_exi_ingest/" in ran
    finally:
        rc = sa.stop()
    assert rc == 0 and "Stopped." in sa.lines[-1], "\n".join(sa.lines[-20:])
    assert not processes_in(state), "processes of the standalone outlived its stop"
