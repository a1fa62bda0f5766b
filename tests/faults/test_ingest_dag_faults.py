"""The ingest DAG itself under poison input (real Airflow runs through dag.test).

A 10 MB garbage sidecar, a 300-character name, an L0 uploaded "as a folder" and
a file still waiting for its sidecar arrive with a good file: the run is green,
the poison is quarantined with its reason, the map index labels fit Airflow's
250 characters, the run's report names what waits and why, and the next run
is green too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_sdc.core import checksums
from tests.faults.harness import TOTALS
from tests.helpers import keep_world_dirs, make_world, run_dag

pytestmark = pytest.mark.e2e
PREFIX = "inbox/exi/"


def _grace(inst: str, data: dict[str, Any]) -> None:
    data["ingest"]["sidecar_grace_minutes"] = 60


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    yield from make_world(tmp_path_factory.mktemp("dagfaults"), pg_server, s3_server, edit=_grace)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def _task_instances(dag_id: str) -> list[Any]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(TaskInstance).filter(TaskInstance.dag_id == dag_id).all()
        return [(ti.run_id, ti.task_id, ti.map_index, ti.rendered_map_index, ti.state) for ti in rows]


def _report(dag_id: str, run_id: str) -> dict[str, Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter(XComModel.dag_id == dag_id, XComModel.run_id == run_id,
                                              XComModel.task_id == "report", XComModel.key == "return_value").one()
        return XComModel.deserialize_value(row)


def test_poison_never_turns_runs_red(world: Any, tmp_path: Path) -> None:
    client, inbox = world["client"], world["buckets"]["inbox"]
    files = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("exi",))
    good, waits = files[0], files[1]
    put = lambda key, body: client.put_object(Bucket=inbox, Key=key, Body=body)  # noqa: E731
    put(PREFIX + good.file_name, good.path.read_bytes())
    put(PREFIX + good.file_name + ".md5", good.sidecar_path.read_bytes())
    poison = files[2]
    put(PREFIX + poison.file_name, poison.path.read_bytes())
    put(PREFIX + poison.file_name + ".md5", b"\x00" * (10 * 1024 * 1024))
    long_name = "emm_exi_l0_" + "x" * 289 + ".bin"
    put(PREFIX + long_name, b"data")
    put(PREFIX + long_name + ".md5", checksums.format_sidecar("0" * 32, long_name).encode())
    put(PREFIX + good.file_name.replace(".bin", "_as_folder.bin/"), good.path.read_bytes())
    put(PREFIX + waits.file_name, waits.path.read_bytes())  # its sidecar is not there yet (grace 60 min)

    before = {r for r, *_ in _task_instances("emm_exi_ingest")}  # the Airflow DB is shared with other tests
    assert run_dag("emm_exi_ingest") == "success"
    cat = world["cat"]
    codes = {r["original_key"].removeprefix(PREFIX): r["reason_code"] for r in cat.query("quarantine_list")}
    assert codes == {poison.file_name: "bad-sidecar", long_name: "invalid-name",
                     good.file_name.replace(".bin", "_as_folder.bin/"): "folder-key"}
    assert cat.get_file(good.file_name) is not None
    tis = [t for t in _task_instances("emm_exi_ingest") if t[0] not in before]
    labels = [label for _, task, _, label, _ in tis if task == "handle_file"]
    assert len(labels) == 4 and all(label and len(label) <= 250 for label in labels)
    assert any("…" in label for label in labels)
    [run_id] = {r for r, *_ in tis}
    report = _report("emm_exi_ingest", run_id)
    assert report["quarantined"] == 3 and report["archived"] == 1
    assert list(report["waiting"]) == [PREFIX + waits.file_name]
    assert "sidecar" in report["waiting"][PREFIX + waits.file_name]

    put(PREFIX + waits.file_name + ".md5", waits.sidecar_path.read_bytes())
    assert run_dag("emm_exi_ingest") == "success"
    assert cat.get_file(waits.file_name) is not None
    assert [k for k in (o["Key"] for o in client.list_objects_v2(Bucket=inbox).get("Contents", []))] == []
    TOTALS["checks"] += 1
    TOTALS["held"] += len(codes) + 2  # quarantined + archived good + archived once its sidecar came
