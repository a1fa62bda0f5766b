"""Public releases end to end: real Airflow runs (dag.test), moto's S3 server and a real PostgreSQL.

Products are indexed and archived through the catalog and storage code (window edges, kernel
classes, quicklooks, raw files and revisions chosen exactly). Batch 1 is released by its scheduled
run (logical date 1 Oct 2021), re-run without any change, then a newer revision and a late product
of its window go out with batch 2, as carry-over, while an object corrupted behind the catalog's
back is withheld and reported. Withdrawals of a file and of a batch are audited, and the public
bucket mirrors the released objects and documents under the same keys.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from emm_sdc.core import catalog, naming, release
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import load_instrument
from tests.helpers import archive_state, keep_world_dirs, make_world

pytestmark = pytest.mark.e2e

BATCH1 = {  # name -> released by batch 1?
    "emm_exi_l2a_20210310T101500_0005_xos1_f635_r_v01-00.fits": False,   # superseded by v01-01
    "emm_exi_l2a_20210310T101500_0005_xos1_f635_r_v01-01.fits": True,
    "emm_exi_l1_20210401T101500_0008_xos1_f635_p_v01-00.fits": False,    # predicted kernels (< r)
    "emm_exi_l1_20210401T101500_0008_xos1_f437_f_v01-00.fits": True,
    "emm_exi_l1ql_20210401T101500_0008_xos1_f635_n_v01-00.png": True,    # quicklook, made without kernels
    "emm_exi_l0_20210401T101500_0008_xos1_n_v01-00.bin": False,          # raw data is never released
    "emm_emr_l2_20210531t235959_0040_r_v01-00.fits": True,               # last second of the window
    "emm_emr_l2_20210601t000000_0040_r_v01-00.fits": False,              # first second of batch 2
    "emm_emr_l1_20210208t230000_0001_r_v01-00.fits": False,              # before orbit insertion
    "emm_emu_l2b_20210209t000000_0001_os2_sw1of3_f_v01-00.fits": True,   # first second of the window
    "emm_emu_hk_20210301t000000_0004_n_v01-00.bin": False,               # housekeeping
}
LATER = {  # indexed after batch 1 was published
    "emm_exi_l2a_20210310T101500_0005_xos1_f635_r_v01-02.fits": "carry-over",  # newer revision
    "emm_emu_l2a_20210415t120000_0020_os1_r_v01-00.fits": "carry-over",        # late product
    "emm_exi_l2a_20210715T080000_0070_xos2_f437_r_v01-00.fits": "window",
}
CORRUPTED = "emm_emu_l2a_20210720t000000_0072_os1_r_v01-00.fits"


def content(name: str) -> bytes:
    return (name * 40).encode()


def add(world: dict[str, Any], names: list[str]) -> None:
    """Index and archive files as ingest/processing would (catalog row + object with its MD5)."""
    for file_name in names:
        data = content(file_name)
        md5 = hashlib.md5(data).hexdigest()
        parsed = naming.parse(file_name)
        record = catalog.file_record(parsed, size=len(data), md5=md5, bucket=world["buckets"]["archive"])
        assert world["cat"].query("insert_file_if_new", record), file_name
        world["client"].put_object(Bucket=world["buckets"]["archive"], Key=parsed.archive_key, Body=data,
                                   Metadata={"md5": md5})


def run_release(conf: dict[str, Any] | None = None, logical_date: datetime | None = None) -> Any:
    from emm_sdc.pipeline.release import build_release_dag

    kwargs = {"logical_date": logical_date} if logical_date else {}
    return build_release_dag().test(run_conf=conf, **kwargs)


def run_withdraw(conf: dict[str, Any]) -> Any:
    from emm_sdc.pipeline.release import build_withdraw_dag

    return build_withdraw_dag().test(run_conf=conf)


def task_state(dag_run: Any, task_id: str) -> str:
    return str(dag_run.get_task_instance(task_id).state)


def released(cat: Catalog) -> dict[str, bool]:
    return {r["file_name"]: r["released"] for r in cat.query("release_flags")}


SNAPSHOT = {  # fixed statements (tests only): every row of the release tables
    "releases": "SELECT * FROM releases ORDER BY id",
    "release_files": "SELECT * FROM release_files ORDER BY release_id, file_id",
    "release_withdrawals": "SELECT * FROM release_withdrawals ORDER BY id",
}


def state(world: dict[str, Any]) -> dict[str, Any]:
    """Everything a release may change: flags, release tables, objects under emm/ and the public bucket."""
    with catalog.transaction(world["cat"].conn) as cur:
        tables = {}
        for table, statement in SNAPSHOT.items():
            cur.execute(statement)
            tables[table] = cur.fetchall()
    return {"flags": released(world["cat"]), **tables,
            "archive": archive_state(world["client"], world["buckets"]["archive"]),
            "public": archive_state(world["client"], world["public"])}


def read(world: dict[str, Any], bucket: str, key: str) -> bytes:
    return world["client"].get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    for w in make_world(tmp_path_factory.mktemp("release"), pg_server, s3_server):
        w["public"] = f"{w['buckets']['archive']}-public"
        w["client"].create_bucket(Bucket=w["public"])
        w["mp"].setenv("EMM_PUBLIC_BUCKET", w["public"])
        add(w, list(BATCH1))
        yield w


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


@pytest.fixture(scope="module")
def batch1(world: dict[str, Any]) -> Any:
    """The scheduled run of 1 Oct 2021 06:00 UTC: batch 1 is due (window closed 31 May + 4 months)."""
    return run_release(logical_date=datetime(2021, 10, 1, 6, tzinfo=UTC))


def test_scheduled_run_releases_the_due_batch_by_the_yaml_rules(world: dict[str, Any], batch1: Any) -> None:
    assert str(batch1.state) == "success"
    rel = release.release_row(world["cat"], "batch-01")
    assert rel is not None
    assert (rel["batch"], str(rel["period_start"]), str(rel["period_end"]), rel["status"]) == (
        1, "2021-02-09", "2021-05-31", "published")
    assert rel["dag_run_id"] == batch1.run_id and rel["withheld"] == []
    flags = released(world["cat"])
    assert {n: flags[n] for n in BATCH1} == BATCH1
    assert rel["file_count"] == sum(BATCH1.values())
    assert rel["rules"]["exi"] == {"levels": ["l1", "l2a", "l1ql"], "min_pred_rec": "r"}


def test_manifest_lists_exactly_the_released_objects_with_their_md5s(world: dict[str, Any], batch1: Any) -> None:
    bucket = world["buckets"]["archive"]
    manifest = json.loads(read(world, bucket, "emm/releases/batch-01/manifest.json"))
    assert manifest["release"] == "batch-01" and manifest["window"] == {"start": "2021-02-09", "end": "2021-05-31"}
    files = {f["file_name"]: f for f in manifest["files"]}
    assert set(files) == {n for n, yes in BATCH1.items() if yes}
    for name, entry in files.items():
        data = read(world, bucket, entry["s3_key"])
        assert entry["s3_key"] == naming.parse(name).archive_key
        assert entry["md5checksum"] == hashlib.md5(data).hexdigest() == world["cat"].get_file(name)["md5checksum"]
        assert entry["file_size"] == len(data)
        parsed = naming.parse(name)
        assert (entry["version"], entry["revision"], entry["selection"]) == (parsed.version, parsed.revision,
                                                                             "window")
    table = list(csv.DictReader(io.StringIO(read(world, bucket, "emm/releases/batch-01/manifest.csv").decode())))
    assert {r["file_name"]: (r["md5checksum"], int(r["file_size"]), r["s3_key"]) for r in table} == {
        n: (e["md5checksum"], e["file_size"], e["s3_key"]) for n, e in files.items()}
    notes = read(world, bucket, "emm/releases/batch-01/release_notes.md").decode()
    assert "# EMM public data release: batch 1" in notes
    assert "Observation window: 2021-02-09 to 2021-05-31" in notes
    exi_l1 = files["emm_exi_l1_20210401T101500_0008_xos1_f437_f_v01-00.fits"]["file_size"]
    assert f"| EXI | l1 | 1 | {release.human_bytes(exi_l1)} | {exi_l1} |" in notes
    assert f"Files: {len(files)}," in notes


def test_public_bucket_mirrors_the_release_under_the_same_keys(world: dict[str, Any], batch1: Any) -> None:
    archive = archive_state(world["client"], world["buckets"]["archive"])
    public = archive_state(world["client"], world["public"])
    rel = release.release_row(world["cat"], "batch-01")
    files = world["cat"].query("release_manifest", {"release_id": rel["id"]})
    expected = {f["s3_key"] for f in files} | {f"emm/releases/batch-01/{d}"
                                               for d in ("manifest.json", "manifest.csv", "release_notes.md")}
    assert set(public) == expected
    for key in expected:
        assert read(world, world["public"], key) == read(world, world["buckets"]["archive"], key), key
    assert all(k in archive for k in expected)


def test_rerun_changes_nothing_and_does_not_release_newer_versions(world: dict[str, Any], batch1: Any) -> None:
    add(world, list(LATER))  # a newer revision and a late product of batch 1's window, and batch 2 data
    before = state(world)
    again = run_release({"batch": 1})
    assert str(again.state) == "success"
    assert state(world) == before
    assert not any(released(world["cat"])[n] for n in LATER)


def test_dry_run_writes_nothing(world: dict[str, Any], batch1: Any) -> None:
    before = state(world)
    dry = run_release({"batch": 2, "dry_run": True})
    assert str(dry.state) == "success"
    assert task_state(dry, "documents") == task_state(dry, "copy_public") == "skipped"
    assert state(world) == before
    assert release.release_row(world["cat"], "batch-02") is None


def test_corrupted_object_is_withheld_and_reported(world: dict[str, Any], batch1: Any) -> None:
    add(world, [CORRUPTED])
    key = naming.parse(CORRUPTED).archive_key
    good = content(CORRUPTED)
    world["client"].put_object(Bucket=world["buckets"]["archive"], Key=key, Body=good[::-1])  # same size
    run = run_release({"batch": 2})
    assert str(run.state) == "failed"
    assert task_state(run, "report") == "failed"
    assert task_state(run, "publish") == task_state(run, "documents") == task_state(run, "copy_public") == "success"
    rel = release.release_row(world["cat"], "batch-02")
    [withheld] = rel["withheld"]
    assert (withheld["file_name"], withheld["reason"]) == (CORRUPTED, "md5-mismatch")
    assert withheld["found"]["md5"] == hashlib.md5(good[::-1]).hexdigest()
    flags = released(world["cat"])
    assert flags[CORRUPTED] is False
    assert all(flags[n] for n in LATER)
    assert flags["emm_emr_l2_20210601t000000_0040_r_v01-00.fits"] is True
    manifest = json.loads(read(world, world["buckets"]["archive"], "emm/releases/batch-02/manifest.json"))
    selection = {f["file_name"]: f["selection"] for f in manifest["files"]}
    assert selection == {**LATER, "emm_emr_l2_20210601t000000_0040_r_v01-00.fits": "window"}
    assert key not in archive_state(world["client"], world["public"])
    notes = read(world, world["buckets"]["archive"], "emm/releases/batch-02/release_notes.md").decode()
    assert "2 were observed in earlier batches' windows" in notes and "1 selected file(s) were held back" in notes
    # once repaired, the file is released by the next batch (carry-over), never by re-running batch 2
    world["client"].put_object(Bucket=world["buckets"]["archive"], Key=key, Body=good, Metadata={"md5": "x"})
    rules = release.rules_for({i: load_instrument(i) for i in naming.INSTRUMENTS})
    nxt = {r["file_name"]: r["selection"] for r in release.select(world["cat"], release.batch_window(3), rules)}
    assert nxt == {CORRUPTED: "carry-over"}


def test_withdraw_a_file_with_a_reason_is_immediate_and_audited(world: dict[str, Any], batch1: Any) -> None:
    name = "emm_exi_l2a_20210310T101500_0005_xos1_f635_r_v01-01.fits"
    key = naming.parse(name).archive_key
    assert key in archive_state(world["client"], world["public"])
    run = run_withdraw({"file_names": [name], "reason": "flat field error in orbit 5"})
    assert str(run.state) == "success"
    row = world["cat"].get_file(name)
    assert row["released"] is False
    [audit] = world["cat"].query("withdrawals_of_file", {"file_id": row["id"]})
    assert (audit["reason"], audit["scope"], audit["requested_by"], audit["dag_run_id"]) == (
        "flat field error in orbit 5", "file", "dag_test", run.run_id)
    assert audit["release_id"] == release.release_row(world["cat"], "batch-01")["id"]
    record_key = f"emm/releases/batch-01/withdrawals/{run.run_id}.json".replace(":", "_").replace("+", "_")
    record = json.loads(read(world, world["buckets"]["archive"], record_key))
    assert record["reason"] == "flat field error in orbit 5" and [f["file_name"] for f in record["files"]] == [name]
    assert read(world, world["public"], record_key) == read(world, world["buckets"]["archive"], record_key)
    assert key not in archive_state(world["client"], world["public"])
    # withdrawn files are never selected again (the older revision is not "latest" either)
    rules = release.rules_for({i: load_instrument(i) for i in naming.INSTRUMENTS})
    assert name not in {r["file_name"] for r in release.select(world["cat"], release.batch_window(3), rules)}
    # a second withdrawal of the same file changes nothing; a blank reason is refused
    before = state(world)
    summary = release.withdraw(world["cat"], reason="again", requested_by="test", file_names=[name],
                               dag_id="t", dag_run_id="t")
    assert summary["withdrawn"] == [] and summary["not_released"] == [name]
    assert state(world) == before
    with pytest.raises(release.ReleaseError, match="needs a reason"):
        release.withdraw(world["cat"], reason="   ", requested_by="test", file_names=[name], dag_id="t",
                         dag_run_id="t")


def test_withdraw_a_whole_batch(world: dict[str, Any], batch1: Any) -> None:
    run = run_withdraw({"release": "2", "reason": "calibration pipeline bug"})
    assert str(run.state) == "success"
    rel = release.release_row(world["cat"], "batch-02")
    assert rel["status"] == "withdrawn"
    files = world["cat"].query("release_manifest", {"release_id": rel["id"]})
    assert files and not any(f["released"] for f in files)
    audits = [a for f in files for a in world["cat"].query("withdrawals_of_file", {"file_id": f["file_id"]})]
    assert len(audits) == len(files)
    assert {(a["scope"], a["reason"], a["release_id"]) for a in audits} == {
        ("release", "calibration pipeline bug", rel["id"])}
    public = archive_state(world["client"], world["public"])
    assert not any(f["s3_key"] in public for f in files)
    # the manifest stays what was published; re-running the batch changes nothing
    before = state(world)
    assert str(run_release({"batch": 2}).state) == "success"  # its withheld object was reported by its run
    assert state(world) == before


def test_a_window_with_nothing_to_release_records_nothing(world: dict[str, Any], batch1: Any) -> None:
    """A special window (not a batch: no carry-over) with no products: no release is recorded."""
    before = state(world)
    run = run_release({"start_date": "2022-03-01", "end_date": "2022-03-31"})
    assert str(run.state) == "success"
    assert task_state(run, "documents") == "skipped"
    assert release.release_row(world["cat"], "special-20220301-20220331") is None
    assert state(world) == before
