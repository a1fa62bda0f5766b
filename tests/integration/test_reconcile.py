"""Integrity reconciliation against moto's S3 server and a real PostgreSQL: faults injected behind the SDC's back.

The archive is made by the SDC's own code (ingest's Archiver: pinned multipart copies, deliveries, a quarantined
delivery with its sidecar and reason; products indexed with lineage by a processing run with its log; a kernel
and a meta-kernel). Each fault is then made directly in S3 or PostgreSQL (or, for bit rot, in moto's stored
bytes, keeping size and ETag), and the run must report it exactly once with the right kind, and nothing else.
Repairs are planned by a dry run (nothing changes), applied, and a second run is clean.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core import catalog, delivery, naming
from emm_sdc.core import reconcile as rc
from emm_sdc.core.archiving import Archiver, RunContext
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import load_instrument
from emm_sdc.core.site_config import ReconciliationConfig
from emm_sdc.core.storage import Storage

CFG = ReconciliationConfig(settle_minutes=0, stale_inbox_margin_minutes=60, deep_verify_mb_per_s=0)
L1 = "emm_exi_l1_{stamp}_0011_xos1_f437_r_v01-{rev:02d}.fits"


def product_bytes(name: str) -> bytes:
    return (name * 50).encode()


def build_world(s3: Any, cat: Catalog, buckets: dict[str, str], tmp: Path) -> dict[str, Any]:
    """A small, consistent SDC archive made by the SDC's code; returns what the faults need."""
    storage = Storage(s3)
    archive = buckets["archive"]
    files = synthetic.generate(tmp / "moc", orbits=(11,), instruments=("exi",))
    bad = synthetic.corrupt(tmp / "moc-bad", next(f for f in files if f.level == "l0"))
    deliver(s3, buckets["inbox"], "inbox/exi/", [*files, bad])
    archiver = Archiver(storage, cat, load_instrument("exi"), inbox_bucket=buckets["inbox"], archive_bucket=archive,
                        ctx=RunContext("emm_exi_ingest", "run_1"))
    plan = delivery.plan(storage.list(buckets["inbox"], "inbox/exi/"), "inbox/exi/", now=datetime.now(UTC),
                         grace=timedelta(minutes=60), folders=("calibration",))
    outcomes = Counter(archiver.handle(item).outcome for item in plan.actionable)
    assert outcomes == {"archived": 3, "quarantined": 1}
    l0 = sorted(f.file_name for f in files if f.level == "l0")
    hk = next(f.file_name for f in files if f.level == "hk")
    # A processing run made two revisions of an L1 product (v01-00, then v01-01) from the first L0, with its log.
    stamp = naming.parse(l0[0]).start.strftime("%Y%m%dT%H%M%S")
    run_id = cat.start_run(dag_id="emm_exi_process", dag_run_id="run_2", task_id="unit.l1.collect", map_index=0,
                           try_number=1, instrument_id="exi", data_level="l1", work_unit="orbit-0011",
                           runner="local", processor_name="emm-exi-ref", processor_version="1.0.0", image=None,
                           environment="production", meta_kernel=None, reason=None, started_at=datetime.now(UTC))
    products = []
    for rev in (0, 1):
        name = naming.parse(L1.format(stamp=stamp, rev=rev))
        data = product_bytes(name.file_name)
        path = tmp / name.file_name
        path.write_bytes(data)
        md5 = hashlib.md5(data).hexdigest()
        storage.upload_new(path, archive, name.archive_key, md5=md5)
        products.append((catalog.file_record(name, size=len(data), md5=md5, bucket=archive), [l0[0]]))
    log_key = "emm/logs/exi/l1/2021/02/job-1.log"
    s3.put_object(Bucket=archive, Key=log_key, Body=b"processor log\n")
    ids = cat.index_products(run_id, products, ended_at=datetime.now(UTC), log_uri=f"s3://{archive}/{log_key}")
    # A kernel and a meta-kernel, as the SPICE refresh archives them.
    kernel = b"KPL/LSK\n\\begindata\nDELTET/DELTA_T_A = 32.184\n"
    kmd5 = hashlib.md5(kernel).hexdigest()
    s3.put_object(Bucket=archive, Key="emm/spice/lsk/emm_lsk_naif0012_v01.tls", Body=kernel, Metadata={"md5": kmd5})
    s3.put_object(Bucket=archive, Key="emm/spice/mk/emm_meta_v0001.tm", Body=b"KPL/MK\n")
    with catalog.transaction(cat.conn) as cur:
        cur.execute("INSERT INTO spice_kernels (file_name, kernel_type, kernel_class, version, md5checksum, file_size,"
                    " bucket, s3_key) VALUES ('emm_lsk_naif0012_v01.tls', 'lsk', 'n', 1, %s, %s, %s, "
                    "'emm/spice/lsk/emm_lsk_naif0012_v01.tls')", (kmd5, len(kernel), archive))
        cur.execute("INSERT INTO meta_kernels (version, file_name, s3_key, kernels) VALUES (1, 'emm_meta_v0001.tm', "
                    "'emm/spice/mk/emm_meta_v0001.tm', '[]')")
    return {"s3": s3, "cat": cat, "storage": storage, "buckets": buckets, "archive": archive, "l0": l0, "hk": hk,
            "products": ids, "product_names": [r["file_name"] for r, _ in products], "tmp": tmp}


def reconcile(world: dict[str, Any], snap: Any, **kwargs: Any) -> rc.Summary:
    kwargs.setdefault("deep_fraction", 1.0)
    kwargs.setdefault("inbox", [rc.InboxTarget("exi", world["buckets"]["inbox"], "inbox/exi/", 60, ("calibration",))])
    return rc.reconcile(world["storage"], world["cat"], snap, bucket=world["archive"], cfg=CFG,
                        work_dir=world["tmp"] / "work", **kwargs)


def findings(world: dict[str, Any], summary: rc.Summary) -> list[dict[str, Any]]:
    return world["cat"].query("recon_findings", {"run_id": summary.run_id})


def row(world: dict[str, Any], file_name: str) -> dict[str, Any]:
    found = world["cat"].get_file(file_name)
    assert found is not None
    return found


def sql(world: dict[str, Any], statement: str, params: tuple[Any, ...] = ()) -> None:
    with catalog.transaction(world["cat"].conn) as cur:
        cur.execute(statement, params)


def rot(bucket: str, key: str) -> None:
    """Bit rot: flip one byte of the stored object inside moto, keeping its size and ETag."""
    from moto.s3.models import s3_backends

    obj = s3_backends["123456789012"]["aws"].buckets[bucket].keys.get(key)
    data = bytearray(obj.value)
    data[len(data) // 2] ^= 0x01
    etag = obj.etag
    obj.value = bytes(data)
    assert obj.etag == etag and obj.contentsize == len(data)


@pytest.fixture
def world(buckets: dict[str, str], catalog_conn: Any, s3_client: Any, tmp_path: Path) -> dict[str, Any]:
    return build_world(s3_client, Catalog(catalog_conn), buckets, tmp_path)


@pytest.fixture
def snap(pg_server: Any, catalog_conn: Any) -> Any:
    """A second connection to the same catalog, for the run's snapshot."""
    conn = pg_server.connect(catalog_conn.info.dbname)
    yield conn
    conn.close()


def test_a_clean_archive_reconciles_clean_and_every_object_is_reread(world: dict[str, Any], snap: Any) -> None:
    summary = reconcile(world, snap)
    assert findings(world, summary) == []
    assert summary.status == "clean" and summary.total == 0
    listed = [o["Key"] for o in world["s3"].list_objects_v2(Bucket=world["archive"])["Contents"]]
    # every object was compared (the report is written after); every object with a known MD5 (or a plain ETag)
    # was re-read
    assert summary.stats["objects"] == len([k for k in listed if not k.startswith("emm/reports/")])
    assert summary.stats["verified_objects"] >= 3 + 2 + 1 + 1  # L0/HK, products, kernel, quarantined file
    run = world["cat"].query("recon_run", {"run_id": summary.run_id})[0]
    assert run["status"] == "clean" and run["report_prefix"].startswith("emm/reports/reconciliation/")
    report = json.loads(world["s3"].get_object(Bucket=world["archive"], Key=run["report_prefix"] + "report.json")
                        ["Body"].read())
    assert report["total"] == 0 and report["findings"] == [] and set(report["counts"]) == set(rc.KINDS)
    # the next run sees the report as the catalog's own object, not an orphan
    assert reconcile(world, snap).total == 0


def _delete_object(w: dict[str, Any]) -> str:
    key = row(w, w["product_names"][1])["s3_key"]
    w["s3"].delete_object(Bucket=w["archive"], Key=key)
    return key


def _delete_row(w: dict[str, Any]) -> str:
    r = row(w, w["product_names"][1])
    sql(w, "DELETE FROM science_files WHERE id = %s", (r["id"],))
    return r["s3_key"]


def _flip_byte(w: dict[str, Any]) -> str:
    key = row(w, w["l0"][1])["s3_key"]
    rot(w["archive"], key)
    return key


def _rewrite(w: dict[str, Any]) -> str:
    r = row(w, w["product_names"][0])
    w["s3"].put_object(Bucket=w["archive"], Key=r["s3_key"], Body=b"x" * r["file_size"])
    return r["s3_key"]


def _unknown(w: dict[str, Any]) -> str:
    key = "emm/data/exi/l1/2021/02/emm_exi_l1_20210211T000000_0011_xos1_f437_r_v09-00.fits"
    w["s3"].put_object(Bucket=w["archive"], Key=key, Body=b"nobody indexed me")
    return key


def _duplicate_latest(w: dict[str, Any]) -> str:
    r = row(w, w["product_names"][0])  # v01-00: its root spelled with 't' no longer groups with v01-01
    sql(w, "UPDATE science_files SET file_root = replace(file_root, 'T', 't') WHERE id = %s", (r["id"],))
    return r["s3_key"]


def _orphan_lineage(w: dict[str, Any]) -> str:
    r = row(w, w["product_names"][1])
    with catalog.transaction(w["cat"].conn) as cur:  # foreign keys off for this transaction only
        cur.execute("SET LOCAL session_replication_role = replica")
        cur.execute("INSERT INTO lineage (product_id, input_id) VALUES (%s, 987654)", (r["id"],))
    return r["s3_key"]


def _stale_inbox(w: dict[str, Any]) -> str:
    f = synthetic.generate(w["tmp"] / "late", orbits=(12,), instruments=("exi",))[0]
    deliver(w["s3"], w["buckets"]["inbox"], "inbox/exi/", [f])
    return f"inbox/exi/{f.file_name}"


def _kernel_class(w: dict[str, Any]) -> str:
    r = row(w, w["product_names"][1])  # named _r_, recorded as predicted
    sql(w, "UPDATE science_files SET pred_rec = 'p' WHERE id = %s", (r["id"],))
    return r["s3_key"]


def _reason_gone(w: dict[str, Any]) -> str:
    q = w["cat"].query("recon_quarantine_row", {"id": 1})[0]
    w["s3"].delete_object(Bucket=w["archive"], Key=q["quarantine_key"] + ".reason.json")
    return q["quarantine_key"] + ".reason.json"


FAULTS = {
    "delete object": (_delete_object, "phantom"),
    "delete row": (_delete_row, "orphan"),
    "flip one byte keeping size": (_flip_byte, "checksum_mismatch"),
    "rewrite with new bytes": (_rewrite, "checksum_mismatch"),
    "unknown object": (_unknown, "orphan"),
    "duplicate latest flag": (_duplicate_latest, "duplicate_latest"),
    "orphan lineage row": (_orphan_lineage, "lineage_missing_row"),
    "old unhandled inbox file": (_stale_inbox, "stale_inbox"),
    "kernel letter vs recorded class": (_kernel_class, "kernel_class_mismatch"),
    "quarantine reason object deleted": (_reason_gone, "quarantine_reason_missing"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_reported_once_with_its_kind_and_nothing_else(world: dict[str, Any], snap: Any,
                                                                    fault: str) -> None:
    inject, kind = FAULTS[fault]
    key = inject(world)
    later = datetime.now(UTC) + timedelta(hours=2)  # the inbox file is old by then (grace 60 + margin 60 min)
    summary = reconcile(world, snap, now=later)
    found = findings(world, summary)
    assert [(f["kind"], f["s3_key"]) for f in found] == [(kind, key)], found
    f = found[0]
    assert f["action"] == rc.ACTIONS[kind] and f["expected"] and f["found"]
    assert f["severity"] == rc.severity(kind, f["area"])
    assert summary.counts[kind] == 1 and summary.total == 1
    if kind != "stale_inbox":
        assert f["instrument_id"] == "exi"
    csv_text = world["s3"].get_object(Bucket=world["archive"], Key=summary.report.split("/", 3)[3] + "findings.csv")[
        "Body"].read().decode()
    assert len(csv_text.strip().splitlines()) == 2 and kind in csv_text


def test_bit_rot_is_found_only_by_deep_verification(world: dict[str, Any], snap: Any) -> None:
    key = _flip_byte(world)
    assert reconcile(world, snap, deep_fraction=0.0).total == 0  # listing alone cannot see it
    found = findings(world, reconcile(world, snap, deep_fraction=1.0))
    assert [(f["kind"], f["s3_key"], json.loads(json.dumps(f["details"]))["method"]) for f in found] == [
        ("checksum_mismatch", key, "re-read")]


def test_deep_verification_rotates_over_the_whole_key_space() -> None:
    cfg = ReconciliationConfig(deep_verify_days=4)
    now = datetime(2026, 3, 1, tzinfo=UTC)
    start, frac = rc.deep_window(None, now, cfg, None)
    covered = 0.0
    keys = [f"emm/data/exi/l0/2021/02/file-{i}.bin" for i in range(2000)]
    seen: set[str] = set()
    for day in range(4):
        seen |= {k for k in keys if rc.in_slice(k, start, frac)}
        covered += frac
        last = {"deep_start": start, "deep_fraction": frac, "started_at": now + timedelta(days=day)}
        start, frac = rc.deep_window(last, now + timedelta(days=day + 1), cfg, None)
    assert covered == pytest.approx(1.0) and seen == set(keys)


def test_repairs_dry_run_then_apply_then_a_second_run_is_clean(world: dict[str, Any], snap: Any) -> None:
    w = world
    w["s3"].put_bucket_versioning(Bucket=w["archive"], VersioningConfiguration={"Status": "Enabled"})
    # an HK row lost behind the SDC's back (its delivery no longer points at it): its bytes match the delivery
    hk = row(w, w["hk"])
    sql(w, "UPDATE deliveries SET file_id = NULL WHERE file_id = %s", (hk["id"],))
    sql(w, "DELETE FROM science_files WHERE id = %s", (hk["id"],))
    unknown = _unknown(w)
    # a product object deleted: the versioned bucket still holds its bytes as a noncurrent version
    gone = _delete_object(w)
    _duplicate_latest(w)
    q = w["cat"].query("recon_quarantine_row", {"id": 1})[0]
    w["s3"].delete_object(Bucket=w["archive"], Key=q["quarantine_key"] + ".reason.json")
    before = {o["Key"]: o["ETag"] for o in w["s3"].list_objects_v2(Bucket=w["archive"])["Contents"]}

    dry = reconcile(w, snap, repair_mode="dry-run")
    assert dry.counts == {**dict.fromkeys(rc.KINDS, 0), "orphan": 2, "phantom": 1, "duplicate_latest": 1,
                          "quarantine_reason_missing": 1}
    planned = {f["kind"] + ":" + (f["s3_key"] or ""): f for f in findings(w, dry)}
    assert {f["repair_status"] for f in planned.values()} == {"planned"}
    assert planned[f"orphan:{hk['s3_key']}"]["repair_result"].startswith("would re-index " + w["hk"])
    assert planned[f"orphan:{unknown}"]["repair_result"].startswith("would move to quarantine")
    assert planned[f"phantom:{gone}"]["repair_result"].startswith("would restore version")
    after_dry = {o["Key"]: o["ETag"] for o in w["s3"].list_objects_v2(Bucket=w["archive"])["Contents"]}
    assert {k: v for k, v in after_dry.items() if not k.startswith("emm/reports/")} == before  # nothing changed

    applied = reconcile(w, snap, repair_mode="apply")
    results = {f["kind"] + ":" + (f["s3_key"] or ""): f for f in findings(w, applied)}
    assert {f["repair_status"] for f in results.values()} == {"applied"}, results
    reindexed = w["cat"].get_file(w["hk"])
    assert reindexed is not None and reindexed["md5checksum"] == hk["md5checksum"]
    assert w["cat"].query("recon_inbox_handled", {"keys": [f"inbox/exi/{w['hk']}"]})
    quarantined = results[f"orphan:{unknown}"]["repair_result"]
    qkey = quarantined.split(f"s3://{w['archive']}/", 1)[1].split(" ", 1)[0]
    body = w["s3"].get_object(Bucket=w["archive"], Key=qkey)["Body"].read()
    assert body == b"nobody indexed me"  # moved, not lost
    assert json.loads(w["s3"].get_object(Bucket=w["archive"], Key=qkey + ".reason.json")["Body"].read())[
        "reason_code"] == "orphan"
    restored = w["s3"].get_object(Bucket=w["archive"], Key=gone)["Body"].read()
    assert hashlib.md5(restored).hexdigest() == row(w, w["product_names"][1])["md5checksum"]

    again = reconcile(w, snap)
    assert findings(w, again) == [] and again.status == "clean"
    # repairing a run again changes nothing (applied repairs are not redone)
    run_row = w["cat"].query("recon_run", {"run_id": applied.run_id})[0]
    assert rc.repair(w["storage"], w["cat"], run_row, bucket=w["archive"], dry_run=False) == {}


def test_a_phantom_without_versions_is_marked_missing_once(world: dict[str, Any], snap: Any) -> None:
    gone = _delete_object(world)
    first = reconcile(world, snap, repair_mode="apply")
    [f] = findings(world, first)
    assert f["kind"] == "phantom" and f["repair_status"] == "applied" and "mark it missing" in f["repair_result"]
    second = reconcile(world, snap)
    assert second.total == 0
    assert world["cat"].query("recon_missing_marks", {"bucket": world["archive"], "lo": gone,
                                                      "hi": gone + "\x01"})[0]["s3_key"] == gone
    # the object comes back (a re-delivery, a restore): the mark is cleared by the next run
    name = world["product_names"][1]
    world["s3"].put_object(Bucket=world["archive"], Key=gone, Body=product_bytes(name))
    assert reconcile(world, snap).total == 0
    assert world["cat"].query("recon_missing_marks", {"bucket": world["archive"], "lo": gone,
                                                      "hi": gone + "\x01"}) == []


def test_scope_is_validated_with_the_field_and_rule() -> None:
    with pytest.raises(ValueError, match=r"instruments: \['xyz'\] are not instrument codes"):
        rc.check_scope(["xyz"])
    with pytest.raises(ValueError, match="prefixes: 'data/exi' must be an archive folder under 'emm/'"):
        rc.check_scope([], ["data/exi"])


def test_the_inventory_path_finds_what_the_listing_finds(world: dict[str, Any], snap: Any) -> None:
    """An S3 Inventory (CSV manifest) of the archive, taken after the faults, gives the same findings."""
    from emm_sdc.core import inventory
    from emm_sdc.core.site_config import InventorySource

    w = world
    gone = _delete_object(w)
    unknown = _unknown(w)
    w["s3"].create_bucket(Bucket=w["archive"] + "-inv")
    listed = list(inventory.live_listing(w["s3"], w["archive"]))
    inventory.write_inventory(w["s3"], source_bucket=w["archive"], destination_bucket=w["archive"] + "-inv",
                              prefix=f"inv/{w['archive']}/daily/",
                              objects=iter([(o.key, o.size, o.etag, o.last_modified) for o in listed]),
                              created=datetime.now(UTC), rows_per_file=3)
    cfg = CFG.model_copy(update={"inventory": InventorySource(bucket=w["archive"] + "-inv",
                                                              prefix=f"inv/{w['archive']}/daily/")})
    summary = rc.reconcile(w["storage"], w["cat"], snap, bucket=w["archive"], cfg=cfg, work_dir=w["tmp"] / "work",
                           deep_fraction=0.0)
    run = w["cat"].query("recon_run", {"run_id": summary.run_id})[0]
    assert run["listing"] == "inventory"
    assert sorted((f["kind"], f["s3_key"]) for f in findings(w, summary)) == [("orphan", unknown),
                                                                              ("phantom", gone)]
