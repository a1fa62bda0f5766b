"""Failure alerting through real Airflow: one message per failed DAG run, to the ITF and the operators.

A small DAG (in its own DAG bundle) maps a task over three items, two of which
fail, and reports failures with ``dag_callbacks`` like the SDC's DAGs. It runs
once with ``dag.test()``, which calls DAG callbacks in its own process; then
the callback request the scheduler makes for that failed run is handed to
Airflow's DAG-processor child process, where production runs DAG callbacks.
Mail goes through the smtp provider to a small SMTP server on loopback.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.helpers import smtp_capture, smtp_conn_json

DAG_ID = "emm_test_alerting"
CALLBACK_DAG = f'''
from datetime import UTC, datetime

from airflow.sdk import dag, get_current_context, task

from emm_sdc.core.config import Notifications
from emm_sdc.pipeline.common import dag_callbacks, fail_if_any_failed


@dag(dag_id="{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC), catchup=False,
     default_args={{"owner": "test", "retries": 0}},
     **dag_callbacks(Notifications(emails=["itf@example.org"], smtp_conn_id="emm_test_smtp"), "testing"))
def alerting():
    @task
    def items():
        return ["a", "b", "c"]

    @task(map_index_template="{{{{ item_name }}}}")
    def work(item):
        get_current_context()["item_name"] = f"file-{{item}}"
        if item != "b":
            raise ValueError(f"bad item {{item}}")

    @task
    def after(_results):
        pass

    done = work.expand(item=items())
    after(done)
    done >> fail_if_any_failed()


alerting()
'''


@pytest.fixture(scope="module")
def smtp_server() -> Iterator[Any]:
    with smtp_capture() as server:
        yield server


def _subject(mail: dict[str, Any]) -> str:
    return str(make_header(decode_header(mail["message"]["Subject"])))


@pytest.fixture(scope="module")
def failed_run(tmp_path_factory: pytest.TempPathFactory, airflow_db: None, smtp_server: Any) -> Iterator[Any]:
    """The small DAG in its own bundle, run once with dag.test(); what its callback logged and mailed."""
    from airflow.configuration import conf
    from airflow.dag_processing.dagbag import BundleDagBag

    tmp = tmp_path_factory.mktemp("alerting")
    folder = tmp / "bundle"
    folder.mkdir()
    (folder / "alerting_dag.py").write_text(CALLBACK_DAG)
    (tmp / "sdc.yaml").write_text("operators:\n  emails: [ops@example.org]\n  smtp_conn_id: emm_test_smtp\n")
    bundles = [*conf.getjson("dag_processor", "dag_bundle_config_list"),
               {"name": "emm-test-alerting", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                "kwargs": {"path": str(folder), "refresh_interval": 0}}]
    notices: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("NOTIFY"):
                notices.append(record.getMessage())

    handler = Keep(logging.WARNING)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps(bundles))
        mp.setenv("EMM_SITE_CONFIG", str(tmp / "sdc.yaml"))
        mp.setenv("AIRFLOW_CONN_EMM_TEST_SMTP", smtp_conn_json(smtp_server))
        dag = BundleDagBag(dag_folder=str(folder), bundle_path=folder, bundle_name="emm-test-alerting").dags[DAG_ID]
        logging.getLogger("emm_sdc.notify").addHandler(handler)
        try:
            run = dag.test()
        finally:
            logging.getLogger("emm_sdc.notify").removeHandler(handler)
        yield {"folder": folder, "dag": dag, "run_id": run.run_id, "state": str(run.state), "notices": notices,
               "mails": list(smtp_server.mails)}


def test_dag_test_calls_the_callback_once_listing_every_failed_task(failed_run: Any) -> None:
    assert failed_run["state"] == "failed"
    [notice] = failed_run["notices"]
    subject, *body = notice.splitlines()
    assert subject == f"NOTIFY [EMM SDC] testing failed: {DAG_ID} run {failed_run['run_id']}"
    assert body[:5] == [
        f"DAG {DAG_ID}, run {failed_run['run_id']} failed (task_failure).",
        "2 failed task instance(s):",
        "  - work[0] file-a",
        "  - work[2] file-c",
        "1 task instance(s) did not run because of them (upstream_failed).",
    ]
    assert body[5].startswith(f"Run: http://localhost:8080/dags/{DAG_ID}/runs/manual__")
    [mail] = failed_run["mails"]
    assert mail["to"] == ["itf@example.org", "ops@example.org"]
    assert _subject(mail) == subject.removeprefix("NOTIFY ")


def test_contacts_land_in_the_dags_callback(failed_run: Any) -> None:
    from emm_sdc.core.config import Notifications
    from emm_sdc.notify import DagFailureNotifier

    callback = failed_run["dag"].on_failure_callback
    assert isinstance(callback, DagFailureNotifier)
    assert callback.contacts == [Notifications(emails=["itf@example.org"], smtp_conn_id="emm_test_smtp"),
                                 Notifications(emails=["ops@example.org"], smtp_conn_id="emm_test_smtp")]
    assert all(not t.on_failure_callback for t in failed_run["dag"].tasks)


def test_dag_processor_runs_the_schedulers_callback_request_once(failed_run: Any, smtp_server: Any) -> None:
    """What production does: the scheduler's request for the failed run, run by a DAG-processor child."""
    from airflow.dag_processing.manager import DagFileProcessorManager
    from airflow.dag_processing.processor import DagFileProcessorProcess
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=DAG_ID, run_id=failed_run["run_id"]).one()
        run.dag = DBDagBag().get_dag_for_run(run, session=session)
        _, request = run.update_state(session=session, execute_callbacks=False)  # as the scheduler does
    assert request is not None and request.is_failure_callback and request.msg == "task_failure"
    events = structlog.testing.CapturingLogger()
    folder: Path = failed_run["folder"]
    mails_before = len(smtp_server.mails)
    proc = DagFileProcessorProcess.start(
        id=uuid.uuid4(), path=str(folder / "alerting_dag.py"), bundle_path=folder, bundle_name="emm-test-alerting",
        dag_file_rel_path="alerting_dag.py", callbacks=[request], client=DagFileProcessorManager(max_runs=1).client,
        logger=structlog.wrap_logger(events, processors=[]).bind(), logger_filehandle=open(folder / "proc.log", "ab"),  # noqa: SIM115
    )
    deadline = time.monotonic() + 120
    while not proc.is_ready and time.monotonic() < deadline:
        proc._service_subprocess(0.5)
    proc.close()
    messages = [str(c.kwargs.get("event", "")) for c in events.calls]
    assert proc.is_ready and not [m for m in messages if "Callback failed" in m or "Traceback" in m], messages
    [notice] = [m for m in messages if m.startswith("NOTIFY")]
    assert f"NOTIFY [EMM SDC] testing failed: {DAG_ID} run {failed_run['run_id']}" in notice
    # The supervisor channel gives states and map indexes, not the rendered names.
    assert "2 failed task instance(s):\n  - work[0]\n  - work[2]\n1 task instance(s) did not run" in notice
    [mail] = smtp_server.mails[mails_before:]
    assert mail["to"] == ["itf@example.org", "ops@example.org"]
    assert _subject(mail) == notice.splitlines()[0].removeprefix("NOTIFY ")
