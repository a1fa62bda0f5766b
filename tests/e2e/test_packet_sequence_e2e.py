"""Packet-sequence rules through real Airflow ingest runs (dag.test), moto's S3 server and PostgreSQL.

EXI's YAML says ``ingest.packet_sequence: warn`` and EMUS's ``quarantine``: a file with a sequence gap is
archived with the warning in the run's report, a file with a repeated packet is quarantined.
"""

from __future__ import annotations

from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from tests.helpers import keep_world_dirs, make_world, returned

pytestmark = pytest.mark.e2e
RULES = {"exi": "warn", "emu": "quarantine", "emr": "warn"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    def edit(inst: str, data: dict[str, Any]) -> None:
        data["ingest"]["packet_sequence"] = RULES[inst]

    yield from make_world(tmp_path_factory.mktemp("seq"), pg_server, s3_server, edit)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def ingest(inst: str) -> Any:
    from emm_sdc.alerts import dag_test
    from emm_sdc.factory import instrument_dags

    return dag_test(instrument_dags(inst)[f"emm_{inst}_ingest"])


def handle_states(dag_run: Any) -> list[str]:
    return sorted(str(ti.state) for ti in dag_run.get_task_instances() if ti.task_id == "handle_file")


def test_warn_rule_archives_and_the_report_carries_the_warning(world: dict[str, Any]) -> None:
    files = [f for f in synthetic.generate(world["tmp"] / "moc", orbits=(11,), instruments=("exi",))
             if f.level == "l0"]
    gap = synthetic.sequence_break(world["tmp"] / "bad", files[0], kind="gap")
    deliver(world["client"], world["buckets"]["inbox"], "inbox/exi/", [*files, gap])
    dr = ingest("exi")
    assert str(dr.state) == "success" and handle_states(dr) == ["success"] * 3
    summary = returned(dr, "report")
    assert (summary["archived"], summary["quarantined"]) == (3, 0)
    [warned] = summary["packet_sequence"]
    assert warned["file"] == f"inbox/exi/{gap.file_name}" and warned["outcome"] == "archived"
    assert "1 gap(s) (2 packet(s) missing)" in warned["summary"]
    assert world["cat"].get_file(gap.file_name) is not None
    assert world["cat"].packet_sequence_of_file(gap.file_name)["verdict"] == "warned"
    assert world["cat"].packet_sequence_of_file(files[1].file_name)["verdict"] == "continuous"


def test_quarantine_rule_quarantines_and_the_report_says_why(world: dict[str, Any]) -> None:
    [src] = [f for f in synthetic.generate(world["tmp"] / "moc-emu", orbits=(11,), instruments=("emu",))
             if f.level == "l0"]
    repeat = synthetic.sequence_break(world["tmp"] / "bad-emu", src, kind="repeat")
    deliver(world["client"], world["buckets"]["inbox"], "inbox/emu/", [src, repeat])
    dr = ingest("emu")
    assert str(dr.state) == "success" and handle_states(dr) == ["skipped", "success"]
    summary = returned(dr, "report")
    assert (summary["archived"], summary["quarantined"], summary["packet_sequence"]) == (1, 1, [])
    [q] = summary["quarantine"]
    assert q["file"] == f"inbox/emu/{repeat.file_name}" and q["reason_code"] == "packet-sequence"
    assert q["reason"].startswith("APID 0x120: 1 repeat(s) in 641 packets; first: byte ")
    assert world["cat"].get_file(repeat.file_name) is None
