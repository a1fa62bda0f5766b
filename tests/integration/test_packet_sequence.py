"""CCSDS sequence-count checks at ingest, through the real Archiver on moto's S3 server and PostgreSQL.

The ITF's ``ingest.packet_sequence`` (read from a YAML file, as the DAGs read it) decides what a file
with gaps, repeats or out-of-order packets becomes; the counts are in the catalog in every case.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core import delivery
from emm_sdc.core.archiving import REASONS, Archiver, Delivery, Outcome, RunContext
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import config_dir, load_config
from emm_sdc.core.storage import Storage

PREFIX = "inbox/exi/"


def _archiver(env: dict[str, Any], rule: str, run_id: str) -> Archiver:
    """An EXI archiver whose config is the shipped YAML with ``ingest.packet_sequence: <rule>``."""
    data = yaml.safe_load((config_dir() / "exi.yaml").read_text())
    data["ingest"]["packet_sequence"] = rule
    path = env["tmp"] / rule / "exi.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return Archiver(Storage(env["s3"]), env["cat"], load_config(path), inbox_bucket=env["buckets"]["inbox"],
                    archive_bucket=env["buckets"]["archive"], ctx=RunContext("emm_exi_ingest", run_id))


@pytest.fixture
def env(buckets: dict[str, str], catalog_conn: Any, s3_client: Any, tmp_path: Path) -> dict[str, Any]:
    files = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("exi",))
    src = next(f for f in files if f.level == "l0")
    hk = next(f for f in files if f.level == "hk")
    broken = {
        "gap": synthetic.sequence_break(tmp_path / "gap", src, kind="gap"),
        "repeat": synthetic.sequence_break(tmp_path / "repeat", src, kind="repeat", shift_s=606),
        "out-of-order": synthetic.sequence_break(tmp_path / "ooo", src, kind="out-of-order", shift_s=707),
        "hk-gap": synthetic.sequence_break(tmp_path / "hk", hk, kind="gap"),
    }
    return {"files": files, "broken": broken, "s3": s3_client, "buckets": buckets, "cat": Catalog(catalog_conn),
            "tmp": tmp_path}


def _ingest(env: dict[str, Any], archiver: Archiver, files: list[synthetic.Delivered]) -> dict[str, Outcome]:
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, files)
    plan = delivery.plan(archiver.storage.list(env["buckets"]["inbox"], PREFIX), PREFIX, now=datetime.now(UTC),
                         grace=timedelta(hours=1))
    outcomes = [archiver.handle(item) for item in plan.actionable]
    assert len(outcomes) == len(files)
    return {o.inbox_key.removeprefix(PREFIX): o for o in outcomes}


def _check_row(env: dict[str, Any], delivery_id: str) -> dict[str, Any]:
    cur = env["cat"].conn.cursor()
    cur.execute("SELECT * FROM packet_sequence_checks WHERE delivery_id = %s", (delivery_id,))
    cols = [c[0] for c in cur.description]
    [row] = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    cur.execute("SELECT apid, packets, gaps, missing, repeats, out_of_order FROM packet_sequence_apids "
                "WHERE delivery_id = %s ORDER BY apid", (delivery_id,))
    row["apids"] = cur.fetchall()
    env["cat"].conn.rollback()
    return row


def test_quarantine_rule_quarantines_each_kind_and_archives_valid_files(env: dict[str, Any]) -> None:
    archiver = _archiver(env, "quarantine", "run_q")
    broken = env["broken"]
    outcomes = _ingest(env, archiver, [*env["files"], *broken.values()])

    for f in env["files"]:  # the generator's files are continuous: archived, checked, clean
        o = outcomes[f.file_name]
        assert o.outcome == "archived" and "packet_sequence" not in o.details
        row = env["cat"].packet_sequence_of_file(f.file_name)
        assert (row["verdict"], row["rule"], row["gaps"], row["repeats"], row["out_of_order"]) == (
            "continuous", "quarantine", 0, 0, 0)
        assert row["packets"] == sum(a["packets"] for a in row["apids"]) > 0
    assert len(env["cat"].packet_sequence_of_file(env["files"][0].file_name)["apids"]) == 3  # EXI: 3 filters

    expect = {"gap": "2 packet(s) missing", "repeat": "1 repeat(s)", "out-of-order": "1 out of order",
              "hk-gap": "APID 0x11f: 1 gap(s) (2 packet(s) missing)"}
    for kind, f in broken.items():
        o = outcomes[f.file_name]
        assert (o.outcome, o.reason_code) == ("quarantined", "packet-sequence"), kind
        assert expect[kind] in o.reason and "first: byte " in o.reason, o.reason
        assert env["cat"].get_file(f.file_name) is None
        reason = json.loads(env["s3"].get_object(Bucket=env["buckets"]["archive"],
                                                 Key=o.quarantine_key + ".reason.json")["Body"].read())
        assert reason["reason_code"] == "packet-sequence" and reason["rule"] == REASONS["packet-sequence"]
        assert reason["details"]["md5"] == f.md5 and reason["details"]["packet_sequence"]["packets"] > 0
        row = _check_row(env, o.delivery_id)
        assert (row["verdict"], row["rule"], row["file_name"], row["dag_run_id"]) == (
            "quarantined", "quarantine", f.file_name, "run_q")
        assert row["summary"] == o.reason
    gap = _check_row(env, outcomes[broken["gap"].file_name].delivery_id)
    assert (gap["gaps"], gap["missing"], gap["repeats"], gap["out_of_order"]) == (1, 2, 0, 0)
    assert [a for a in gap["apids"] if a[2]] == [(gap["apids"][1][0], 254, 1, 2, 0, 0)]  # one filter lost 2 rows
    assert _check_row(env, outcomes[broken["out-of-order"].file_name].delivery_id)["out_of_order"] == 1
    codes = sorted(r["reason_code"] for r in env["cat"].query("quarantine_list"))
    assert codes == ["packet-sequence"] * 4
    # quarantined files are in the run's quarantine list; the run's sequence warnings are only the warned ones
    assert {r["verdict"] for r in env["cat"].packet_sequence_anomalies("emm_exi_ingest", "run_q")} == {"quarantined"}


def test_warn_rule_archives_with_a_recorded_warning(env: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    archiver = _archiver(env, "warn", "run_w")
    broken = env["broken"]
    with caplog.at_level(logging.WARNING, logger="emm_sdc.core.archiving"):
        outcomes = _ingest(env, archiver, [env["files"][0], *broken.values()])
    assert outcomes[env["files"][0].file_name].details == {}
    for kind, f in broken.items():
        o = outcomes[f.file_name]
        assert o.outcome == "archived", kind
        warning = o.details["packet_sequence"]
        assert warning["rule"] == "warn" and warning["summary"].startswith("APID 0x1")
        row = env["cat"].packet_sequence_of_file(f.file_name)  # via the delivery that archived it
        assert (row["verdict"], row["summary"]) == ("warned", warning["summary"])
        assert any(a["gaps"] or a["repeats"] or a["out_of_order"] for a in row["apids"])
        assert any(f.file_name in r.getMessage() and "ingest.packet_sequence: warn" in r.getMessage()
                   for r in caplog.records if r.levelno == logging.WARNING)
    assert env["cat"].packet_sequence_of_file(broken["repeat"].file_name)["repeats"] == 1
    report = env["cat"].packet_sequence_anomalies("emm_exi_ingest", "run_w")
    assert sorted(r["file_name"] for r in report) == sorted(f.file_name for f in broken.values())
    assert {(r["outcome"], r["verdict"]) for r in report} == {("archived", "warned")}
    assert env["cat"].packet_sequence_anomalies("emm_exi_ingest", "another run") == []


def test_ignore_rule_archives_and_only_records(env: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    archiver = _archiver(env, "ignore", "run_i")
    f = env["broken"]["gap"]
    with caplog.at_level(logging.WARNING, logger="emm_sdc.core.archiving"):
        [o] = _ingest(env, archiver, [f]).values()
    assert o.outcome == "archived" and o.details == {}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    row = env["cat"].packet_sequence_of_file(f.file_name)
    assert (row["verdict"], row["rule"], row["gaps"], row["missing"]) == ("ignored", "ignore", 1, 2)


def test_a_retried_delivery_keeps_one_check(env: dict[str, Any]) -> None:
    archiver = _archiver(env, "warn", "run_r")
    f = env["broken"]["repeat"]
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [f])
    [item] = delivery.plan(archiver.storage.list(env["buckets"]["inbox"], PREFIX), PREFIX,
                           now=datetime.now(UTC), grace=timedelta(hours=1)).actionable
    data, sidecar = (archiver.storage.stat(env["buckets"]["inbox"], k) for k in (item.key, item.sidecar_key))
    assert data is not None and sidecar is not None
    # an attempt recorded the check and died before archiving; the retry reads the file again
    first = Delivery(item, data, sidecar)
    report = {"packets": 1, "gaps": 0, "missing": 0, "repeats": 9, "out_of_order": 0,
              "apids": [{"apid": 0x113, "packets": 1, "first_count": 0, "last_count": 0, "gaps": 0, "missing": 0,
                         "repeats": 9, "out_of_order": 0}]}
    assert env["cat"].record_packet_sequence(report, delivery_id=first.delivery_id, instrument="exi",
                                             file_name=f.file_name, rule="warn", verdict="warned",
                                             summary="first attempt", dag_id="emm_exi_ingest", dag_run_id="run_r")
    o = archiver.handle(item)
    assert o.outcome == "archived" and o.delivery_id == first.delivery_id
    row = _check_row(env, o.delivery_id)
    assert (row["summary"], row["repeats"], len(row["apids"])) == ("first attempt", 9, 1)  # kept, not duplicated
