"""Ingest rules against moto's S3 server and a real PostgreSQL: every file archived or quarantined."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core import delivery
from emm_sdc.core.archiving import Archiver, RunContext
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import load_instrument
from emm_sdc.core.storage import Storage

PREFIX = "inbox/exi/"


@pytest.fixture
def env(buckets: dict[str, str], catalog_conn: Any, s3_client: Any, tmp_path: Path) -> dict[str, Any]:
    # Versioned, as the README recommends: an identical re-delivery is then a new delivery even within the
    # same second (tests/faults covers unversioned inboxes).
    s3_client.put_bucket_versioning(Bucket=buckets["inbox"], VersioningConfiguration={"Status": "Enabled"})
    files = synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("exi",))
    archiver = Archiver(Storage(s3_client), Catalog(catalog_conn), load_instrument("exi"),
                        inbox_bucket=buckets["inbox"], archive_bucket=buckets["archive"],
                        ctx=RunContext("test_dag", "run_1"))
    return {"files": files, "archiver": archiver, "s3": s3_client, "buckets": buckets,
            "cat": Catalog(catalog_conn), "tmp": tmp_path}


def _ingest(env: dict[str, Any], grace: timedelta = timedelta(minutes=60)) -> list[Any]:
    storage: Storage = env["archiver"].storage
    objects = storage.list(env["buckets"]["inbox"], PREFIX)
    plan = delivery.plan(objects, PREFIX, now=datetime.now(UTC), grace=grace)
    return [env["archiver"].handle(item) for item in plan.actionable]


def _keys(env: dict[str, Any], which: str, prefix: str = "") -> list[str]:
    resp = env["s3"].list_objects_v2(Bucket=env["buckets"][which], Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def test_valid_delivery_is_archived_indexed_and_removed_from_inbox(env: dict[str, Any]) -> None:
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, env["files"])
    outcomes = _ingest(env)
    assert {o.outcome for o in outcomes} == {"archived"}
    assert len(outcomes) == len(env["files"]) == 3
    assert _keys(env, "inbox") == []
    for f in env["files"]:
        row = env["cat"].get_file(f.file_name)
        assert row["md5checksum"] == f.md5 and row["file_size"] == f.size
        head = env["s3"].head_object(Bucket=env["buckets"]["archive"], Key=row["s3_key"])
        assert head["Metadata"]["md5"] == f.md5
        assert row["s3_key"].startswith(f"emm/data/exi/{f.level}/")
    hk = next(f for f in env["files"] if f.level == "hk")
    assert env["cat"].get_file(hk.file_name)["product_type"] == "hk"


def test_duplicate_delivery_is_a_no_op(env: dict[str, Any]) -> None:
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, env["files"][:1])
    _ingest(env)
    before = env["cat"].query("table_counts")
    archived = _keys(env, "archive")
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, env["files"][:1])
    [outcome] = _ingest(env)
    assert outcome.outcome == "duplicate"
    assert _keys(env, "archive") == archived and _keys(env, "inbox") == []
    counts = {r["table_name"]: r["rows"] for r in env["cat"].query("table_counts")}
    assert counts["science_files"] == {r["table_name"]: r["rows"] for r in before}["science_files"]
    assert env["cat"].query("delivery_outcomes")[-1]["outcome"] == "duplicate"


def test_duplicate_restores_a_missing_archive_object(env: dict[str, Any]) -> None:
    f = env["files"][0]
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [f])
    _ingest(env)
    key = env["cat"].get_file(f.file_name)["s3_key"]
    env["s3"].delete_object(Bucket=env["buckets"]["archive"], Key=key)
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [f])
    assert _ingest(env)[0].outcome == "duplicate"
    assert env["s3"].head_object(Bucket=env["buckets"]["archive"], Key=key)["ContentLength"] == f.size


def test_conflict_is_quarantined_and_never_overwrites(env: dict[str, Any]) -> None:
    f = env["files"][0]
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [f])
    _ingest(env)
    key = env["cat"].get_file(f.file_name)["s3_key"]
    other = synthetic.conflicting(env["tmp"] / "again", f)
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [other])
    [outcome] = _ingest(env)
    assert outcome.outcome == "quarantined" and outcome.reason_code == "conflict"
    body = env["s3"].get_object(Bucket=env["buckets"]["archive"], Key=key)["Body"].read()
    assert body == f.path.read_bytes()
    assert env["cat"].get_file(f.file_name)["md5checksum"] == f.md5


@pytest.mark.parametrize(
    ("make", "code", "phrase"),
    [
        (lambda d, f: synthetic.corrupt(d, f), "checksum-mismatch", "the sidecar declares"),
        (lambda d, f: synthetic.truncated(d, f), "truncated", "last packet ends"),
        (lambda d, f: synthetic.zero_byte(d, f), "empty", "zero bytes"),
        (lambda d, f: synthetic.misnamed(d, f, rule="orbit"), "invalid-name", "4 digits, zero padded"),
        (lambda d, f: synthetic.misnamed(d, f, rule="instrument"), "invalid-name", "instrument must be one of"),
    ],
)
def test_bad_files_are_quarantined_with_reason(env: dict[str, Any], make: Any, code: str, phrase: str) -> None:
    bad = make(env["tmp"] / "bad", env["files"][0])
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [bad])
    [outcome] = _ingest(env)
    assert (outcome.outcome, outcome.reason_code) == ("quarantined", code)
    assert phrase in outcome.reason
    assert _keys(env, "inbox") == []
    qkeys = _keys(env, "archive", "emm/quarantine/exi/")
    assert outcome.quarantine_key in qkeys and outcome.quarantine_key + ".md5" in qkeys
    reason = json.loads(env["s3"].get_object(Bucket=env["buckets"]["archive"],
                                             Key=outcome.quarantine_key + ".reason.json")["Body"].read())
    assert reason["reason_code"] == code and reason["file"] == bad.file_name and reason["rule"]
    [row] = env["cat"].query("quarantine_list")
    assert row["reason_code"] == code
    assert env["cat"].get_file(bad.file_name) is None


def test_file_of_another_instrument_and_unexpected_type(env: dict[str, Any], tmp_path: Path) -> None:
    emu = synthetic.generate(tmp_path / "emu", orbits=(11,), instruments=("emu",))[0]
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [emu])
    [outcome] = _ingest(env)
    assert outcome.reason_code == "wrong-instrument"


def test_bad_sidecar(env: dict[str, Any]) -> None:
    f = env["files"][0]
    inbox = env["buckets"]["inbox"]
    env["s3"].put_object(Bucket=inbox, Key=PREFIX + f.file_name, Body=f.path.read_bytes())
    env["s3"].put_object(Bucket=inbox, Key=PREFIX + f.file_name + ".md5", Body=b"garbage\n")
    [outcome] = _ingest(env)
    assert outcome.reason_code == "bad-sidecar" and "not md5sum format" in outcome.reason


def test_missing_sidecar_waits_then_is_quarantined(env: dict[str, Any]) -> None:
    lonely = synthetic.missing_sidecar(env["tmp"] / "x", env["files"][0])
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, [lonely])
    assert _ingest(env) == []  # within the grace period: waits
    assert _keys(env, "inbox") == [PREFIX + lonely.file_name]
    [outcome] = _ingest(env, grace=timedelta(0))
    assert outcome.reason_code == "missing-checksum"
    assert _keys(env, "inbox") == []


def test_orphan_sidecar_and_subfolder(env: dict[str, Any]) -> None:
    inbox = env["buckets"]["inbox"]
    env["s3"].put_object(Bucket=inbox, Key=PREFIX + "lost.bin.md5", Body=b"x")
    env["s3"].put_object(Bucket=inbox, Key=PREFIX + "sub/../../etc/passwd", Body=b"x")
    codes = sorted(o.reason_code for o in _ingest(env, grace=timedelta(0)))
    assert codes == ["orphan-checksum", "unexpected-location"]
    assert all(k.startswith("emm/quarantine/exi/") and "/../" not in k for k in _keys(env, "archive"))


def test_handling_twice_is_safe(env: dict[str, Any]) -> None:
    deliver(env["s3"], env["buckets"]["inbox"], PREFIX, env["files"][:1])
    plan = delivery.plan(env["archiver"].storage.list(env["buckets"]["inbox"], PREFIX), PREFIX,
                         now=datetime.now(UTC), grace=timedelta(hours=1))
    first = env["archiver"].handle(plan.ready[0])
    again = env["archiver"].handle(plan.ready[0])  # a retried task after success
    assert (first.outcome, again.outcome) == ("archived", "gone")
    assert len(env["cat"].query("delivery_outcomes")) == 1
