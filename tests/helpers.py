"""Shared pieces of the end-to-end tests: a module-wide SDC world on the real services, and DAG runs."""

from __future__ import annotations

import copy
import email
import itertools
import logging
import os
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from emm_sdc.core.catalog import Catalog

ROOT = Path(__file__).resolve().parents[1]
INSTRUMENTS = ("exi", "emu", "emr")
_n = itertools.count()


class SmtpHandler(socketserver.StreamRequestHandler):
    """Just enough SMTP for smtplib: every command is accepted, each message is kept."""

    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        rcpt: list[str] = []
        self.reply("220 emm-test-smtp")
        for raw in self.rfile:
            verb = raw[:4].decode().upper()
            if verb == "RCPT":
                rcpt.append(raw.decode().split(":", 1)[1].strip().strip("<>"))
            if verb == "QUIT":
                self.reply("221 bye")
                return
            if verb != "DATA":
                self.reply("250 ok")
                continue
            self.reply("354 end with .")
            data = b""
            while (line := self.rfile.readline()) not in (b".\r\n", b""):
                data += line[1:] if line.startswith(b"..") else line
            self.server.mails.append({"to": rcpt, "message": email.message_from_bytes(data)})  # type: ignore[attr-defined]
            rcpt = []
            self.reply("250 kept")


@contextmanager
def smtp_capture() -> Iterator[Any]:
    """A small SMTP server on loopback keeping every message in ``.mails`` (``to``, ``message``)."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SmtpHandler)
    server.daemon_threads = True
    server.mails = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def mail_text(mail: dict[str, Any]) -> str:
    """The text of a message :func:`smtp_capture` kept (every part of a multipart one)."""
    msg = mail["message"]
    parts = [p for p in msg.walk() if not p.is_multipart()] if msg.is_multipart() else [msg]
    return "\n".join(p.get_payload(decode=True).decode() for p in parts)


def smtp_conn_json(server: Any) -> str:
    """An Airflow SMTP connection (JSON form) to :func:`smtp_capture`'s server."""
    import json

    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": server.server_address[1],
                       "extra": {"from_email": "emm-sdc@example.org", "disable_tls": True, "disable_ssl": True}})


def write_configs(target: Path, edit: Callable[[str, dict[str, Any]], None] | None = None, **airflow: Any) -> Path:
    """Copies of the shipped ITF configs for tests: no retries, no retry delay, no sidecar grace.

    ``edit(instrument, data)`` may change a config further before it is written.
    """
    target.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "include" / "itf_configs").glob("*.yaml"):
        data = yaml.safe_load(src.read_text())
        data["ingest"]["sidecar_grace_minutes"] = 0
        data["airflow"].update({"retries": 0, "retry_delay_minutes": 0, **airflow})
        if edit is not None:
            edit(data["instrument"], data)
        (target / src.name).write_text(yaml.safe_dump(data))
    return target


def edit_configs(config_dir: Path, inst: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Change one instrument's config in place; return the previous content (for restoring)."""
    from emm_sdc.core.config import CONFIG_FILES

    path = config_dir / CONFIG_FILES[inst]
    before = yaml.safe_load(path.read_text())
    after = copy.deepcopy(before)
    change(after)
    path.write_text(yaml.safe_dump(after))
    return before


def restore_config(config_dir: Path, data: dict[str, Any]) -> None:
    from emm_sdc.core.config import CONFIG_FILES

    (config_dir / CONFIG_FILES[data["instrument"]]).write_text(yaml.safe_dump(data))


def run_dag(dag_id: str, conf: dict[str, Any] | None = None) -> str:
    """One real Airflow run of a DAG (dag.test), built fresh from the current configs; its final state."""
    from emm_sdc.factory import instrument_dags

    if dag_id == "emm_image_promote":
        from emm_sdc.pipeline.staging import build_promote_dag

        dag = build_promote_dag()
    elif dag_id == "emm_spice_refresh":
        from emm_sdc.pipeline.spice import build_spice_refresh_dag

        dag = build_spice_refresh_dag()
    else:
        dag = instrument_dags(dag_id.split("_")[1])[dag_id]
    from emm_sdc.alerts import dag_test

    return str(dag_test(dag, run_conf=conf).state)


def returned(dag_run: Any, task_id: str) -> Any:
    """The XCom return value of an unmapped task of a finished dag.test() run."""
    import json

    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(select(XComModel.value).where(
            XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id, XComModel.task_id == task_id,
            XComModel.key == "return_value"))
    return json.loads(value) if isinstance(value, str) else value


def archive_state(client: Any, bucket: str, prefix: str = "") -> dict[str, str]:
    keys: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            keys[o["Key"]] = o["ETag"]
    return keys


def new_catalog_and_buckets(pg_server: Any, s3_server: Any, tag: str) -> tuple[str, Any, Any, dict[str, str]]:
    """A fresh, migrated catalog database and fresh inbox/archive buckets (names carry ``tag``)."""
    from emm_sdc.core import catalog

    n = next(_n)
    db = f"emm_{tag}_{os.getpid()}_{n}"
    pg_server._server.psql(f'CREATE DATABASE "{db}";')
    conn = pg_server.connect(db)
    catalog.migrate(conn)
    client = s3_server.client()
    buckets = {"inbox": f"emm-{tag}-inbox-{n}", "archive": f"emm-{tag}-archive-{n}"}
    for b in buckets.values():
        client.create_bucket(Bucket=b)
    return db, conn, client, buckets


def make_world(tmp: Path, pg_server: Any, s3_server: Any,
               edit: Callable[[str, dict[str, Any]], None] | None = None) -> Iterator[dict[str, Any]]:
    """A catalog database, buckets and config copies for one test module, wired into the environment."""
    from emm_dev.embedded import aws_conn_json
    from emm_sdc.core.settings import get_settings

    mp = pytest.MonkeyPatch()
    db, conn, client, buckets = new_catalog_and_buckets(pg_server, s3_server, "world")
    configs = write_configs(tmp / "configs", edit)
    mp.setenv("AIRFLOW_CONN_EMM_CATALOG", pg_server.conn_json(db))
    mp.setenv("AIRFLOW_CONN_EMM_S3", aws_conn_json(s3_server.endpoint))
    mp.setenv("EMM_INBOX_BUCKET", buckets["inbox"])
    mp.setenv("EMM_ARCHIVE_BUCKET", buckets["archive"])
    mp.setenv("EMM_WORK_DIR", str(tmp / "work"))
    mp.setenv("EMM_KERNEL_DIR", str(tmp / "kernels"))
    mp.setenv("EMM_CONFIG_DIR", str(configs))
    get_settings.cache_clear()
    yield {"tmp": tmp, "cat": Catalog(conn), "client": client, "buckets": buckets, "configs": configs, "mp": mp}
    mp.undo()
    get_settings.cache_clear()
    conn.close()
    pg_server._server.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);')


def keep_world_dirs(monkeypatch: pytest.MonkeyPatch, world: dict[str, Any]) -> None:
    """Undo the per-test work/kernel directories of the autouse fixture: a module's world shares its own."""
    from emm_sdc.core.settings import get_settings

    monkeypatch.setenv("EMM_WORK_DIR", str(world["tmp"] / "work"))
    monkeypatch.setenv("EMM_KERNEL_DIR", str(world["tmp"] / "kernels"))
    get_settings.cache_clear()


@contextmanager
def dissemination_world(pg_server: Any, s3_server: Any, tag: str) -> Iterator[dict[str, Any]]:
    """A catalog database, buckets and a Cognito user pool (moto) wired into the environment, for the API and
    page tests; torn down afterwards. Yields db, conn, cat, client, buckets and cognito (the EMM_COGNITO_* env)."""
    from emm_dev.embedded import aws_conn_json, cognito_env
    from emm_sdc.api.config import api_settings
    from emm_sdc.core.settings import get_settings

    mp = pytest.MonkeyPatch()
    db, conn, client, buckets = new_catalog_and_buckets(pg_server, s3_server, tag)
    cognito = cognito_env(s3_server.endpoint, pool_name=f"emm-{db.replace('_', '-')}")
    env = {**cognito, "EMM_INBOX_BUCKET": buckets["inbox"], "EMM_ARCHIVE_BUCKET": buckets["archive"],
           "AIRFLOW_CONN_EMM_S3": aws_conn_json(s3_server.endpoint),
           "AIRFLOW_CONN_EMM_CATALOG": pg_server.conn_json(db)}
    for k, v in env.items():
        mp.setenv(k, v)
    mp.delenv("EMM_API_ALLOW_ANONYMOUS", raising=False)
    api_settings.cache_clear()
    get_settings.cache_clear()
    try:
        yield {"db": db, "conn": conn, "cat": Catalog(conn), "client": client, "buckets": buckets,
               "cognito": cognito}
    finally:
        mp.undo()
        api_settings.cache_clear()
        get_settings.cache_clear()
        conn.close()
        pg_server._server.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);')


@contextmanager
def served(app: Any) -> Iterator[int]:
    """An ASGI app served by uvicorn on a free loopback port (yielded) until the block ends."""
    import threading
    import time

    import uvicorn

    from emm_dev.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def sync_dags_to_db() -> None:
    """Parse the dags folder into Airflow's metadata DB (what the DAG processor does; dag.test does it too)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert not bag.import_errors, bag.import_errors
        sync_bag_to_db(bag, bundle.name, bundle.version)


def execute_runs(dag: Any, run_ids: list[int]) -> dict[str, str]:
    """Execute existing DAG runs (by row id) one by one in this process, the way ``dag.test()`` executes its
    own run: no scheduler, each ready task run in-process. Returns {logical date: final state}."""
    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import select

    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    states: dict[str, str] = {}
    for run_id in run_ids:
        session = settings.Session()  # a task run closes the scoped session: fetch each run afresh
        dr = session.scalar(select(DagRun).where(DagRun.id == run_id))
        dr.dag = scheduler_dag
        dr.state = DagRunState.RUNNING
        session.commit()
        while dr.state == DagRunState.RUNNING:
            session.expire_all()
            schedulable, _ = dr.update_state(session=session)
            for ti in schedulable:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in [t for t in dr.get_task_instances(session=session) if t.state == TaskInstanceState.SCHEDULED]:
                try:
                    _run_task(ti=ti, task=dag.task_dict[ti.task_id], run_triggerer=True)
                except Exception:  # the task's failure is its state; the loop goes on as dag.test's does
                    logging.getLogger(__name__).exception("task %s failed", ti)
        states[f"{dr.logical_date:%Y-%m-%d}"] = str(dr.state)
    return states


def run_scheduled(dag_id: str, day: str) -> tuple[str, list[tuple[str, str]]]:
    """A run of ``dag_id`` as its scheduler would create it for the interval starting ``day`` (run type
    scheduled), executed; returns its state and (task id, state) of every task."""
    from datetime import datetime, timedelta

    from airflow import settings
    from airflow.models.dagrun import DagRun
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.utils.state import DagRunState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType

    from emm_sdc.factory import instrument_dags

    dag = instrument_dags(dag_id.split("_")[1])[dag_id]
    sync_dags_to_db()
    end = datetime.fromisoformat(day + "T00:00:00+00:00") + timedelta(days=1)
    interval = coerce_to_core_timetable(dag.timetable).infer_manual_data_interval(run_after=end)
    session = settings.Session()
    scheduler_dag = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    try:
        dr = scheduler_dag.create_dagrun(
            run_id=DagRun.generate_run_id(run_type=DagRunType.SCHEDULED, logical_date=interval.start,
                                          run_after=interval.end),
            logical_date=interval.start, data_interval=interval, run_after=interval.end, conf=None,
            run_type=DagRunType.SCHEDULED, state=DagRunState.QUEUED, triggered_by=DagRunTriggeredByType.TIMETABLE,
            triggering_user_name=None, session=session)
        session.commit()
    except Exception:
        session.rollback()  # leave the shared scoped session usable for the next test
        raise
    run_id = dr.id
    [state] = execute_runs(dag, [run_id]).values()
    session = settings.Session()
    dr = session.scalar(select_run(run_id))
    return state, sorted((ti.task_id, str(ti.state)) for ti in dr.get_task_instances(session=session))


def select_run(run_id: int) -> Any:
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    return select(DagRun).where(DagRun.id == run_id)


def run_backfill(dag_id: str, from_date: str, to_date: str, conf: dict[str, Any] | None, *,
                 reprocess_behavior: str = "none") -> dict[str, str]:
    """A real Airflow backfill, then its runs executed one by one in this process.

    The backfill is created by ``airflow.models.backfill._create_backfill``, the function
    ``airflow backfill create`` calls (same runs, conf, data intervals, run type and
    reprocess behaviour); each of its runs is then executed the way ``dag.test()`` executes
    its own run (no scheduler). Returns {logical date: final state}.
    """
    from datetime import datetime

    from airflow import settings
    from airflow.models.backfill import ReprocessBehavior, _create_backfill
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    from emm_sdc.factory import instrument_dags

    dag = instrument_dags(dag_id.split("_")[1])[dag_id]
    sync_dags_to_db()
    backfill = _create_backfill(
        dag_id=dag_id, from_date=datetime.fromisoformat(from_date + "T00:00:00+00:00"),
        to_date=datetime.fromisoformat(to_date + "T00:00:00+00:00"), max_active_runs=2, reverse=False,
        dag_run_conf=conf, triggering_user_name="test-operator",
        reprocess_behavior=ReprocessBehavior(reprocess_behavior))
    session = settings.Session()
    ids = list(session.scalars(select(DagRun.id).where(DagRun.backfill_id == backfill.id)
                               .order_by(DagRun.logical_date)))
    states = execute_runs(dag, ids)
    # What the scheduler's _mark_backfills_complete does once no run of the backfill is unfinished.
    from datetime import UTC

    from airflow.models.backfill import Backfill

    session = settings.Session()
    session.get(Backfill, backfill.id).completed_at = datetime.now(UTC)
    session.commit()
    session.close()
    return states


def rendered_fields(dag_id: str, task_id: str, map_index: int = 0) -> tuple[dict[str, Any], int]:
    """The rendered template fields (as the UI's Rendered Templates tab shows them) and the try number of a
    task instance in the DAG's latest run."""
    from airflow.models.dagrun import DagRun
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as Rtif
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run_id = session.scalar(select(DagRun.run_id).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()))
        where = (Rtif.dag_id == dag_id, Rtif.run_id == run_id, Rtif.task_id == task_id, Rtif.map_index == map_index)
        fields = session.scalar(select(Rtif.rendered_fields).where(*where))
        ti_where = (TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id, TaskInstance.task_id == task_id,
                    TaskInstance.map_index == map_index)
        try_number = session.scalar(select(TaskInstance.try_number).where(*ti_where))
    assert fields is not None, f"no rendered fields of {task_id}[{map_index}] in the latest run of {dag_id}"
    return fields, try_number
