"""Calibration data from the ITFs against moto's S3 server and a real PostgreSQL: delivery, versions, sets,
quarantine, staging for jobs, racing ingest runs, and a real ingest DAG run with data and calibration together."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core import calibration, checksums, delivery
from emm_sdc.core.archiving import Archiver, InboxHandler, Outcome, RunContext
from emm_sdc.core.calibration import (
    CalibrationArchiver,
    CalibrationError,
    CalibrationSet,
    CalibrationSetNotFound,
    calibration_set,
    calibration_versions,
    stage_set,
)
from emm_sdc.core.catalog import Catalog, _rows, transaction
from emm_sdc.core.config import load_instrument
from emm_sdc.core.storage import ObjectInfo, Storage
from emm_sdc.pipeline.ingest import FOLDERS
from tests.faults.harness import Actor, DbFaults, S3Faults, md5
from tests.helpers import keep_world_dirs, make_world, run_dag

PREFIX = "inbox/exi/"
CAL = PREFIX + "calibration/"
FLAT = "emm_exi_cal_flatfield.fits"
DARK = "emm_exi_cal_dark.fits"


def _handlers(storage: Storage, cat: Catalog, buckets: dict[str, str], run_id: str) -> dict[str | None, InboxHandler]:
    common: dict[str, Any] = {
        "inbox_bucket": buckets["inbox"],
        "archive_bucket": buckets["archive"],
        "ctx": RunContext("test_dag", run_id),
    }
    return {
        None: Archiver(storage, cat, load_instrument("exi"), **common),
        calibration.FOLDER: CalibrationArchiver(storage, cat, "exi", **common),
    }


@pytest.fixture
def env(buckets: dict[str, str], catalog_conn: Any, s3_client: Any, tmp_path: Path) -> dict[str, Any]:
    # Versioned, as the README recommends for inboxes (a re-upload never hides the upload being handled).
    s3_client.put_bucket_versioning(Bucket=buckets["inbox"], VersioningConfiguration={"Status": "Enabled"})
    cat = Catalog(catalog_conn)
    storage = Storage(s3_client)
    return {
        "s3": s3_client,
        "buckets": buckets,
        "cat": cat,
        "storage": storage,
        "tmp": tmp_path,
        "handlers": _handlers(storage, cat, buckets, "run_1"),
    }


def _ingest(
    env: dict[str, Any],
    grace: timedelta = timedelta(minutes=60),
    handlers: dict[str | None, InboxHandler] | None = None,
    final_attempt: bool = True,
) -> list[Outcome]:
    """What one ingest run does: plan the instrument inbox (with its calibration folder), route, handle."""
    handlers = handlers or env["handlers"]
    objects = env["storage"].list(env["buckets"]["inbox"], PREFIX)
    plan = delivery.plan(objects, PREFIX, now=datetime.now(UTC) + timedelta(seconds=1), grace=grace, folders=FOLDERS)
    return [handlers[item.folder].handle(item, final_attempt=final_attempt) for item in plan.actionable]


def _put(env: dict[str, Any], name: str, data: bytes, sidecar: bytes | str | None = "auto", prefix: str = CAL) -> None:
    env["s3"].put_object(Bucket=env["buckets"]["inbox"], Key=prefix + name, Body=data)
    if sidecar == "auto":
        sidecar = checksums.format_sidecar(md5(data), name).encode()
    if isinstance(sidecar, bytes):
        env["s3"].put_object(Bucket=env["buckets"]["inbox"], Key=prefix + name + ".md5", Body=sidecar)


def _keys(env: dict[str, Any], which: str, prefix: str = "") -> list[str]:
    resp = env["s3"].list_objects_v2(Bucket=env["buckets"][which], Prefix=prefix)
    return sorted(o["Key"] for o in resp.get("Contents", []))


def _archived(env: dict[str, Any], key: str) -> bytes:
    return env["s3"].get_object(Bucket=env["buckets"]["archive"], Key=key)["Body"].read()


def _versions(env: dict[str, Any]) -> list[tuple[str, int, int]]:
    return [(r["file_name"], r["version"], r["set_version"]) for r in calibration_versions(env["cat"], "exi")]


def _deliveries(env: dict[str, Any]) -> list[dict[str, Any]]:
    with transaction(env["cat"].conn) as cur:
        cur.execute("SELECT outcome, calibration_id, file_id, quarantine_id, inbox_key FROM deliveries ORDER BY id")
        return _rows(cur)


# --------------------------------------------------------------------------- planning


def _obj(key: str) -> ObjectInfo:
    return ObjectInfo(key, 10, datetime(2026, 1, 1, tzinfo=UTC), "e" * 32)


def test_plan_routes_the_calibration_folder_and_only_when_asked() -> None:
    objs = [
        _obj(k)
        for k in (
            PREFIX,
            CAL,
            CAL + FLAT,
            CAL + FLAT + ".md5",
            CAL + "sub/x.fits",
            CAL + "odd/",
            PREFIX + "a.bin",
            PREFIX + "a.bin.md5",
        )
    ]
    now = datetime(2026, 1, 1, 0, 30, tzinfo=UTC)
    p = delivery.plan(objs, PREFIX, now=now, grace=timedelta(hours=1), folders=FOLDERS)
    assert [(i.key, i.sidecar_key, i.folder) for i in p.ready] == [
        (PREFIX + "a.bin", PREFIX + "a.bin.md5", None),
        (CAL + FLAT, CAL + FLAT + ".md5", "calibration"),
    ]
    assert {(i.key, i.problem, i.folder) for i in p.overdue} == {
        (CAL + "sub/x.fits", "unexpected-location", "calibration"),
        (CAL + "odd/", "folder-key", "calibration"),
    }
    assert p.waiting == {}  # the folder markers hold no data
    # Other inboxes (SPICE) plan no folders: there a calibration/ key is a stray, as before.
    plain = delivery.plan(objs, PREFIX, now=now, grace=timedelta(hours=1))
    assert (CAL + FLAT, "unexpected-location", None) in {(i.key, i.problem, i.folder) for i in plain.overdue}
    assert delivery.DeliveryItem.from_dict(p.ready[1].to_dict()) == p.ready[1]


def test_name_rule() -> None:
    assert calibration.is_calibration_name(FLAT, "exi")
    assert calibration.name_problem("emm_emu_cal_flat.fits", "exi")[0] == "wrong-instrument"  # type: ignore[index]
    for bad in (
        "emm_exi_cal_",
        "emm_exi_flat.fits",
        "flat.fits",
        "emm_exi_cal_a b.fits",
        ".emm_exi_cal_x",
        "emm_xyz_cal_flat.fits",
        "emm_exi_cal_" + "x" * 250,
    ):
        assert calibration.name_problem(bad, "exi")[0] == "invalid-name", bad  # type: ignore[index]
    assert calibration.archive_key("exi", FLAT, 2) == f"emm/calibration/exi/{FLAT}/v0002/{FLAT}"


# --------------------------------------------------------------------------- delivery and versions


def test_delivery_is_archived_and_indexed_as_version_1_of_set_1(env: dict[str, Any]) -> None:
    data = b"flat field v1" * 100
    _put(env, FLAT, data)
    [o] = _ingest(env)
    key = f"emm/calibration/exi/{FLAT}/v0001/{FLAT}"
    assert (o.outcome, o.archive_key, o.md5, o.size) == ("archived", key, md5(data), len(data))
    assert o.details == {"version": 1, "set_version": 1}
    assert _archived(env, key) == data
    assert env["s3"].head_object(Bucket=env["buckets"]["archive"], Key=key)["Metadata"]["md5"] == md5(data)
    assert _keys(env, "inbox") == []
    [row] = calibration_versions(env["cat"], "exi")
    assert (row["version"], row["set_version"], row["md5checksum"], row["file_size"]) == (1, 1, md5(data), len(data))
    assert (row["bucket"], row["s3_key"], row["dag_id"], row["dag_run_id"]) == (
        env["buckets"]["archive"],
        key,
        "test_dag",
        "run_1",
    )
    assert row["delivery_id"] == o.delivery_id
    assert _deliveries(env) == [
        {
            "outcome": "archived",
            "calibration_id": row["id"],
            "file_id": None,
            "quarantine_id": None,
            "inbox_key": CAL + FLAT,
        }
    ]
    assert env["cat"].query("run_deliveries", {"dag_id": "test_dag", "dag_run_id": "run_1"})[0]["outcome"] == "archived"


def test_versions_sets_and_duplicates(env: dict[str, Any]) -> None:
    flat1, dark1, flat2 = b"flat 1" * 50, b"dark 1" * 50, b"flat 2" * 50
    _put(env, FLAT, flat1)
    _ingest(env)
    _put(env, DARK, dark1)
    [o] = _ingest(env)
    assert o.details == {"version": 1, "set_version": 2}
    _put(env, FLAT, flat2)
    [o] = _ingest(env)
    assert (o.outcome, o.details) == ("archived", {"version": 2, "set_version": 3})
    assert _versions(env) == [(FLAT, 1, 1), (DARK, 1, 2), (FLAT, 2, 3)]
    v1 = f"emm/calibration/exi/{FLAT}/v0001/{FLAT}"
    assert _archived(env, v1) == flat1  # the old version's bytes never change
    assert _archived(env, f"emm/calibration/exi/{FLAT}/v0002/{FLAT}") == flat2

    # An identical re-delivery of the latest version is a duplicate: logged, no new version or set.
    archive_before = _keys(env, "archive")
    _put(env, FLAT, flat2)
    [dup] = _ingest(env)
    assert (dup.outcome, dup.details) == ("duplicate", {"version": 2, "set_version": 3})
    assert _versions(env) == [(FLAT, 1, 1), (DARK, 1, 2), (FLAT, 2, 3)]
    assert _keys(env, "archive") == archive_before and _keys(env, "inbox") == []
    last = _deliveries(env)[-1]
    flat_v2 = calibration_versions(env["cat"], "exi")[-1]
    assert (last["outcome"], last["calibration_id"]) == ("duplicate", flat_v2["id"])

    # The bytes of an older version are new bytes for the name: its next version (a revert is a new set).
    _put(env, FLAT, flat1)
    [o] = _ingest(env)
    assert (o.outcome, o.details) == ("archived", {"version": 3, "set_version": 4})


def test_duplicate_restores_a_missing_archive_object(env: dict[str, Any]) -> None:
    data = b"flat" * 10
    _put(env, FLAT, data)
    [o] = _ingest(env)
    env["s3"].delete_object(Bucket=env["buckets"]["archive"], Key=o.archive_key)
    _put(env, FLAT, data)
    assert _ingest(env)[0].outcome == "duplicate"
    assert _archived(env, o.archive_key) == data


def test_calibration_sets(env: dict[str, Any]) -> None:
    cat = env["cat"]
    with pytest.raises(CalibrationSetNotFound, match="exi has no calibration set yet"):
        calibration_set(cat, "exi", "latest")
    flat1, dark1, flat2 = b"flat 1" * 50, b"dark 1" * 50, b"flat 2" * 50
    for name, data in ((FLAT, flat1), (DARK, dark1), (FLAT, flat2)):
        _put(env, name, data)
        _ingest(env)

    latest = calibration_set(cat, "exi", "latest")
    assert latest.set_version == 3
    assert [(f.file_name, f.version, f.md5) for f in latest.files] == [(DARK, 1, md5(dark1)), (FLAT, 2, md5(flat2))]
    two = calibration_set(cat, "exi", 2)
    assert [(f.file_name, f.version, f.md5) for f in two.files] == [(DARK, 1, md5(dark1)), (FLAT, 1, md5(flat1))]
    assert [f.file_name for f in calibration_set(cat, "exi", 1).files] == [FLAT]
    assert calibration_set(cat, "exi", 3) == latest

    for missing in (4, 0):
        with pytest.raises(
            CalibrationSetNotFound,
            match=rf"calibration set {missing} of exi does not exist "
            r"\(the latest is 3\)",
        ):
            calibration_set(cat, "exi", missing)
    with pytest.raises(CalibrationSetNotFound, match="calibration set 1 of emu does not exist"):
        calibration_set(cat, "emu", 1)
    with pytest.raises(ValueError, match="'latest' or its number"):
        calibration_set(cat, "exi", "newest")  # type: ignore[arg-type]

    # JSON-able, and an identity that names the exact content.
    assert CalibrationSet.from_dict(json.loads(json.dumps(latest.to_dict()))) == latest
    assert latest.identity() == f"3|{DARK}:{md5(dark1)}|{FLAT}:{md5(flat2)}"
    assert two.identity() != latest.identity()
    assert CalibrationSet("exi", 3, tuple(reversed(latest.files))).identity() == latest.identity()


def test_stage_set_verifies_every_file(env: dict[str, Any], tmp_path: Path) -> None:
    flat, dark = b"flat" * 1000, b"dark" * 1000
    _put(env, FLAT, flat)
    _put(env, DARK, dark)
    _ingest(env)
    cset = calibration_set(env["cat"], "exi", "latest")
    dest = tmp_path / "job" / "calibration"
    paths = stage_set(env["storage"], env["buckets"]["archive"], cset, dest)
    assert paths == [dest / DARK, dest / FLAT]
    assert [p.read_bytes() for p in paths] == [dark, flat]
    assert not any(p.stat().st_mode & stat.S_IWUSR for p in paths)  # jobs read calibration, never change it
    assert sorted(p.name for p in dest.iterdir()) == [DARK, FLAT]

    # Bytes that differ from the catalog's are refused and never left where a job would read them.
    flat_key = next(f.s3_key for f in cset.files if f.file_name == FLAT)
    env["s3"].put_object(Bucket=env["buckets"]["archive"], Key=flat_key, Body=b"bit rot" * 10)
    other = tmp_path / "other"
    with pytest.raises(CalibrationError, match=rf"{FLAT} version 1 of exi .* has MD5 {md5(b'bit rot' * 10)}"):
        stage_set(env["storage"], env["buckets"]["archive"], cset, other)
    assert sorted(p.name for p in other.iterdir()) == [DARK]


# --------------------------------------------------------------------------- quarantine


def _no_sidecar(env: dict[str, Any]) -> None:
    _put(env, FLAT, b"flat", sidecar=None)


BAD = {
    "invalid-name": (lambda env: _put(env, "emm_exi_flatfield.fits", b"flat"), "starts with 'emm_exi_cal_'"),
    "unsafe-name": (lambda env: _put(env, "emm_exi_cal_flat field.fits", b"flat"), "only letters, digits"),
    "wrong-instrument": (lambda env: _put(env, "emm_emu_cal_flat.fits", b"flat"), "emu calibration file"),
    "checksum-mismatch": (
        lambda env: _put(env, FLAT, b"flat", checksums.format_sidecar("0" * 32, FLAT).encode()),
        "the sidecar declares",
    ),
    "bad-sidecar": (lambda env: _put(env, FLAT, b"flat", b"garbage\n"), "not md5sum format"),
    "empty": (lambda env: _put(env, FLAT, b""), "zero bytes"),
    "missing-checksum": (_no_sidecar, "no .md5 sidecar"),
}
CODES = {"unsafe-name": "invalid-name"}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_deliveries_are_quarantined_with_reason(env: dict[str, Any], case: str) -> None:
    make, phrase = BAD[case]
    code = CODES.get(case, case)
    make(env)
    if case == "missing-checksum":
        assert _ingest(env) == []  # within the grace period it waits for its sidecar
        assert len(_keys(env, "inbox")) == 1
    [o] = _ingest(env, grace=timedelta(0))
    assert (o.outcome, o.reason_code) == ("quarantined", code)
    assert phrase in (o.reason or "")
    assert _keys(env, "inbox") == []
    reason = calibration_reason(env, o)
    assert reason["reason_code"] == code and reason["rule"] and reason["instrument"] == "exi"
    assert o.quarantine_key in _keys(env, "archive", "emm/quarantine/exi/")
    [row] = env["cat"].query("quarantine_list")
    assert row["reason_code"] == code and row["original_key"].startswith(CAL)
    assert calibration_versions(env["cat"], "exi") == []
    assert _keys(env, "archive", "emm/calibration/") == []
    assert [d["outcome"] for d in _deliveries(env)] == ["quarantined"]


def calibration_reason(env: dict[str, Any], o: Outcome) -> dict[str, Any]:
    return json.loads(_archived(env, f"{o.quarantine_key}.reason.json"))


def test_too_large_is_quarantined_before_it_is_read(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(calibration, "MAX_FILE_BYTES", 100)
    _put(env, FLAT, b"x" * 101)
    [o] = _ingest(env)
    assert (o.outcome, o.reason_code) == ("quarantined", "too-large")
    assert "at most 100 bytes" in (o.reason or "")
    assert calibration_versions(env["cat"], "exi") == []


# --------------------------------------------------------------------------- failures and races


def test_a_retry_after_a_failure_before_commit_reuses_its_version(
    env: dict[str, Any], pg_server: Any, catalog_conn: Any
) -> None:
    """The copy of version 2 is in the archive when indexing fails: the retry indexes that very object."""
    _put(env, FLAT, b"flat 1")
    _ingest(env)
    admin = pg_server.connect(catalog_conn.info.dbname)
    try:
        faulty = DbFaults(pg_server.connect(catalog_conn.info.dbname), admin)

        def boom() -> None:
            raise RuntimeError("the catalog fell over")

        faulty.at("insert_calibration_file", boom)
        handlers = _handlers(env["storage"], Catalog(faulty), env["buckets"], "run_2")
        _put(env, FLAT, b"flat 2")
        with pytest.raises(RuntimeError, match="fell over"):
            _ingest(env, handlers=handlers, final_attempt=False)
        v2 = calibration.archive_key("exi", FLAT, 2)
        assert _archived(env, v2) == b"flat 2" and _versions(env) == [(FLAT, 1, 1)]
        [o] = _ingest(env, handlers=handlers)  # the retry
        assert (o.outcome, o.archive_key, o.details) == ("archived", v2, {"version": 2, "set_version": 2})
        faulty.conn.close()
    finally:
        admin.close()


def test_an_uncommitted_copy_is_never_overwritten_its_version_is_skipped(env: dict[str, Any]) -> None:
    """A copy left by an attempt that never committed, whose delivery was then replaced by other bytes."""
    _put(env, FLAT, b"flat 1")
    _ingest(env)
    orphan = calibration.archive_key("exi", FLAT, 2)
    env["storage"].put_new(env["buckets"]["archive"], orphan, b"never indexed", metadata={"md5": md5(b"never indexed")})
    _put(env, FLAT, b"flat 2")
    [o] = _ingest(env)
    assert (o.outcome, o.details) == ("archived", {"version": 3, "set_version": 2})
    assert _archived(env, orphan) == b"never indexed"
    assert _archived(env, calibration.archive_key("exi", FLAT, 3)) == b"flat 2"
    assert [f.version for f in calibration_set(env["cat"], "exi", "latest").files] == [3]


@pytest.mark.parametrize("second", ["same-name", "other-name"])
def test_two_runs_allocating_versions_at_once(
    env: dict[str, Any], s3_server: Any, pg_server: Any, catalog_conn: Any, second: str
) -> None:
    """Run 1 holds the version lock mid-copy (version 2 of the flat field chosen); run 2, with a newer upload of
    the same name (or another file), checks its delivery and waits for the lock. Neither takes the other's version
    or set, neither is lost, and each archived object holds its own delivery's bytes."""
    _put(env, FLAT, b"flat 1")
    _ingest(env)
    admin = pg_server.connect(catalog_conn.info.dbname)
    opened = [admin]

    def worker(run_id: str) -> tuple[dict[str | None, InboxHandler], S3Faults, DbFaults]:
        client = s3_server.client()
        conn = pg_server.connect(catalog_conn.info.dbname)
        opened.append(conn)
        dbf = DbFaults(conn, admin)
        return _handlers(Storage(client), Catalog(dbf), env["buckets"], run_id), S3Faults(client), dbf

    try:
        h1, s3f1, _ = worker("run1")
        h2, _, dbf2 = worker("run2")
        _put(env, FLAT, b"flat 2")
        items1 = _plan(env)
        run1 = Actor("run1", lambda: [h1[i.folder].handle(i) for i in items1])
        s3f1.at("CompleteMultipartUpload", run1.pause_hook)
        run1.start_and_wait_paused()
        second_name, second_bytes = (FLAT, b"flat 3") if second == "same-name" else (DARK, b"dark 1")
        _put(env, second_name, second_bytes)  # the inbox is versioned: run 1 still holds its own upload
        items2 = [i for i in _plan(env) if i.key == CAL + second_name]
        run2 = Actor("run2", lambda: [h2[i.folder].handle(i) for i in items2])
        dbf2.at("lock_calibration_versions", run2.reached.set)  # a signal, not a pause
        run2.start_and_wait_paused()
        _wait_for_lock_waiter(admin)
        [first] = run1.release()
        [late] = run2.release()
        assert run1.error is None and run2.error is None, (run1.error, run2.error)
    finally:
        for conn in opened:
            conn.close()
    assert (first.outcome, first.details) == ("archived", {"version": 2, "set_version": 2})
    want = 3 if second == "same-name" else 1
    assert (late.outcome, late.details) == ("archived", {"version": want, "set_version": 3})
    assert _archived(env, first.archive_key) == b"flat 2" and _archived(env, late.archive_key) == second_bytes
    assert _archived(env, calibration.archive_key("exi", FLAT, 1)) == b"flat 1"
    assert [r[2] for r in _versions(env)] == [1, 2, 3]
    assert _keys(env, "inbox") == []


def _plan(env: dict[str, Any]) -> list[Any]:
    objects = env["storage"].list(env["buckets"]["inbox"], PREFIX)
    return delivery.plan(objects, PREFIX, now=datetime.now(UTC), grace=timedelta(hours=1), folders=FOLDERS).ready


def _wait_for_lock_waiter(admin: Any) -> None:
    """Until PostgreSQL shows a session waiting for an advisory lock (run 2 blocked behind run 1)."""
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while datetime.now(UTC) < deadline:
        with admin.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            waiting = cur.fetchone()[0]
        admin.commit()
        if waiting:
            return
    raise AssertionError("run 2 never waited for the version lock")


# --------------------------------------------------------------------------- the ingest DAG


@pytest.fixture
def world(
    tmp_path: Path, pg_server: Any, s3_server: Any, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    for w in make_world(tmp_path, pg_server, s3_server):
        keep_world_dirs(monkeypatch, w)
        yield w


@pytest.mark.e2e
def test_ingest_dag_handles_data_and_calibration_together(world: dict[str, Any], tmp_path: Path) -> None:
    client, inbox, cat = world["client"], world["buckets"]["inbox"], world["cat"]
    l0 = next(f for f in synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("exi",)) if f.level == "l0")
    deliver(client, inbox, PREFIX, [l0])
    client.put_object(Bucket=inbox, Key=CAL, Body=b"")  # a console-made folder marker: no data, never reported
    flat = b"SIMPLE  =                    T" * 40
    client.put_object(Bucket=inbox, Key=CAL + FLAT, Body=flat)
    client.put_object(Bucket=inbox, Key=CAL + FLAT + ".md5", Body=checksums.format_sidecar(md5(flat), FLAT).encode())
    client.put_object(Bucket=inbox, Key=CAL + "emm_exi_flat.fits", Body=b"x")
    client.put_object(
        Bucket=inbox,
        Key=CAL + "emm_exi_flat.fits.md5",
        Body=checksums.format_sidecar(md5(b"x"), "emm_exi_flat.fits").encode(),
    )

    assert run_dag("emm_exi_ingest") == "success"
    assert cat.get_file(l0.file_name) is not None
    [row] = calibration_versions(cat, "exi")
    assert (row["file_name"], row["version"], row["set_version"], row["md5checksum"]) == (FLAT, 1, 1, md5(flat))
    assert row["dag_id"] == "emm_exi_ingest"
    assert client.get_object(Bucket=world["buckets"]["archive"], Key=row["s3_key"])["Body"].read() == flat
    [q] = cat.query("quarantine_list")
    assert (q["original_key"], q["reason_code"]) == (CAL + "emm_exi_flat.fits", "invalid-name")
    outcomes = sorted(
        (r["inbox_key"], r["outcome"])
        for r in cat.query("run_deliveries", {"dag_id": "emm_exi_ingest", "dag_run_id": row["dag_run_id"]})
    )
    assert outcomes == sorted(
        [(PREFIX + l0.file_name, "archived"), (CAL + FLAT, "archived"), (CAL + "emm_exi_flat.fits", "quarantined")]
    )
    left = [o["Key"] for o in client.list_objects_v2(Bucket=inbox).get("Contents", [])]
    assert left == [CAL]
    assert calibration_set(cat, "exi", "latest").identity() == f"1|{FLAT}:{md5(flat)}"
