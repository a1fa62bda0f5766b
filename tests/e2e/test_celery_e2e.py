"""CeleryExecutor for real: two workers on an embedded Redis broker; one is killed in the middle of a task.

The SDC runs as ``./sdc standalone --executor celery`` runs it (:class:`emm_dev.airflow_local.AirflowLocal` with
``executor="celery"``), the processors replaced by the constant-time stub (``processors/stub``). An EXI orbit is
delivered; the first processing job stops at the stub's hold point, so the test knows which task runs where.
The worker running it is SIGKILLed with its whole process tree, as when its machine dies. Then:

* the scheduler notices the missing heartbeats, and the task's retry runs on the other worker;
* every delivered file is archived and indexed once, nothing is left in the inbox or quarantined;
* every product exists once (one catalog row per file name, one per input) and the archive holds exactly
  the catalog's objects, with the catalog's checksums.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.airflow_local import ARCHIVE_BUCKET, INBOX_BUCKET, NEVER, AirflowLocal
from emm_dev.moc import deliver
from emm_sdc.lanes import QUEUES

ORBIT = 11
STUB = ["python", "processors/launch.py", "processors/stub/processor.py"]
LEVELS = ("l1", "l2a", "l1ql")
DAGS = ("emm_spice_refresh", "emm_exi_ingest", "emm_exi_process")
#: Seconds without heartbeats before the scheduler fails the dead worker's task (Airflow's default is 300).
HEARTBEAT_TIMEOUT = 30


@pytest.fixture(scope="module")
def celery_sdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from emm_dev.cli import _deliver_kernels

    tmp = tmp_path_factory.mktemp("celery-sdc")
    hold = tmp / "hold"
    hold.mkdir()
    af = AirflowLocal(
        tmp / "af", executor="celery", celery_workers=2, worker_concurrency=2, dags=DAGS, ingest_schedule=NEVER,
        itf_overrides={"processing.runner.command": STUB, "airflow.retries": 2, "airflow.retry_delay_minutes": 0,
                       "ingest.sidecar_grace_minutes": 0},
        env={"EMM_STUB_HOLD_DIR": str(hold), "EMM_STUB_SECONDS": "0",
             "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT)},
    )
    try:
        af.start_services()
        _deliver_kernels(af.s3, tmp / "moc" / "kernels", ORBIT - 1, ORBIT + 3, "p", generic=True)
        af.start_airflow()
        af.trigger("emm_spice_refresh", note="seed kernels")
        af.wait_for(lambda: af.catalog_sql("SELECT 1 FROM meta_kernels"), 300, interval=1, what="a meta-kernel")
        yield {"af": af, "hold": hold, "tmp": tmp}
    finally:
        af.stop()


def _held(hold: Path) -> dict[str, Any] | None:
    markers = list(hold.glob("held-*.json"))
    return json.loads(markers[0].read_text()) if markers else None


def test_a_killed_worker_s_task_is_retried_on_the_other_and_nothing_is_lost(celery_sdc: dict[str, Any]) -> None:
    af: AirflowLocal = celery_sdc["af"]
    hold: Path = celery_sdc["hold"]
    delivered = synthetic.generate(celery_sdc["tmp"] / "moc" / "l0", orbits=[ORBIT], instruments=("exi",))
    deliver(af.s3, INBOX_BUCKET, "inbox/exi/", delivered)
    l0 = sorted(d.file_name for d in delivered if d.level == "l0")

    # -- the first processing job reaches the stub's hold point: the worker running it is known
    held = af.wait_for(lambda: _held(hold), 600, interval=0.5, what="the first processing job at its hold point")
    assert held["level"] == "l1"
    victim = af.worker_of(held["pid"])
    assert victim in af.worker_names, f"process {held['pid']} is under no Celery worker"
    [survivor] = [w for w in af.worker_names if w != victim]
    [(dag_run, map_index, try_number, queue)] = af.meta_sql(
        "SELECT run_id, map_index, try_number, queue FROM task_instance "
        "WHERE dag_id = 'emm_exi_process' AND task_id = 'unit.l1.run' AND state = 'running'")
    assert (try_number, queue) == (1, QUEUES["daily"])

    # -- the worker dies with everything under it; the job's processor dies with it
    killed = af.kill_worker(victim)
    assert held["pid"] in killed
    (hold / "release").touch()  # the retry must not be held

    # -- the scheduler fails the task for its missing heartbeats; the retry runs on the other worker
    state = af.wait_for_run("emm_exi_process", dag_run, timeout=600)
    assert state == "success", af.diagnostics()
    [(final_state, final_try)] = af.meta_sql(
        "SELECT state, try_number FROM task_instance WHERE dag_id = 'emm_exi_process' AND run_id = %s "
        "AND task_id = 'unit.l1.run' AND map_index = %s", (dag_run, map_index))
    assert (final_state, final_try) == ("success", 2)
    [(first_try_state,)] = af.meta_sql(
        "SELECT state FROM task_instance_history WHERE dag_id = 'emm_exi_process' AND run_id = %s "
        "AND task_id = 'unit.l1.run' AND map_index = %s AND try_number = 1", (dag_run, map_index))
    assert first_try_state in ("failed", "up_for_retry"), first_try_state
    # the workers log each workload they execute, with its task log's path: the retry's is in the survivor's log
    attempt_2 = f"dag_id=emm_exi_process/run_id={dag_run}/task_id=unit.l1.run/map_index={map_index}/attempt=2.log"
    assert attempt_2 in (af.logs / f"{survivor}.log").read_text(errors="replace"), "the retry ran on the survivor"
    af.check_alive()  # the survivor and Airflow's components are still up

    # -- nothing lost: every delivered file archived and indexed once; the inbox empty; nothing quarantined
    indexed = af.catalog_sql(
        "SELECT file_name, data_level, count(*) OVER (PARTITION BY file_name) FROM science_files "
        "WHERE instrument_id = 'exi' AND orbit_number = %s", (ORBIT,))
    assert all(n == 1 for _, _, n in indexed), "one row per file"
    by_level: dict[str, list[str]] = {}
    for name, level, _ in indexed:
        by_level.setdefault(level, []).append(name)
    assert sorted(by_level["l0"]) == l0
    assert sorted(by_level["hk"]) == sorted(d.file_name for d in delivered if d.level == "hk")
    for level in LEVELS:  # the stub makes one product per input of the level's source
        assert len(by_level.get(level, [])) == len(l0), (level, by_level.get(level))
    assert af.s3.list_objects_v2(Bucket=INBOX_BUCKET, Prefix="inbox/exi/").get("KeyCount") == 0
    assert af.catalog_sql("SELECT original_key, reason_code FROM quarantine") == []

    # -- the archive holds exactly the catalog's objects, with its checksums (no half-made product)
    rows = {f"{d.rstrip('/')}/{n}": md5 for n, d, md5 in af.catalog_sql(
        "SELECT file_name, directory_path, md5checksum FROM science_files WHERE instrument_id = 'exi'")}
    pages = af.s3.get_paginator("list_objects_v2").paginate(Bucket=ARCHIVE_BUCKET, Prefix="emm/data/")
    objects = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert sorted(objects) == sorted(rows)
    for key, md5 in rows.items():
        body = af.s3.get_object(Bucket=ARCHIVE_BUCKET, Key=key)["Body"].read()
        assert hashlib.md5(body).hexdigest() == md5, key
