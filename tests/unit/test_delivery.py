"""Inbox planning: pairing with sidecars, grace period, strays."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from emm_sdc.core.delivery import plan, sensor_objects
from emm_sdc.core.storage import ObjectInfo
from emm_sdc.pipeline.ingest import inbox_has_work

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
P = "inbox/exi/"


def obj(name: str, age_min: float = 0) -> ObjectInfo:
    return ObjectInfo(P + name, 10, NOW - timedelta(minutes=age_min), "e" * 32)


def test_pairs_files_with_sidecars_and_waits_for_the_rest() -> None:
    p = plan([obj("a.bin"), obj("a.bin.md5"), obj("b.bin"), obj("c.bin.md5"), obj("")], P,
             now=NOW, grace=timedelta(minutes=60))
    assert [(i.key, i.sidecar_key) for i in p.ready] == [(P + "a.bin", P + "a.bin.md5")]
    assert p.overdue == []
    assert list(p.waiting) == [P + "b.bin", P + "c.bin.md5"]
    assert "sidecar" in p.waiting[P + "b.bin"] and "without its data file" in p.waiting[P + "c.bin.md5"]


def test_after_grace_missing_and_orphan_checksums_are_overdue() -> None:
    p = plan([obj("b.bin", 61), obj("c.bin.md5", 61), obj("d.bin", 59)], P, now=NOW, grace=timedelta(minutes=60))
    assert {(i.key, i.problem) for i in p.overdue} == {
        (P + "b.bin", "missing-checksum"), (P + "c.bin.md5", "orphan-checksum")}
    assert list(p.waiting) == [P + "d.bin"]


def test_subfolders_are_strays() -> None:
    p = plan([obj("x/y.bin")], P, now=NOW, grace=timedelta(minutes=60))
    assert p.overdue[0].problem == "unexpected-location"


def test_keys_ending_in_a_slash_are_quarantined_not_skipped() -> None:
    """A file uploaded "as a folder" is accounted for; only the prefix's own marker is left out."""
    p = plan([obj(""), obj("emm_exi_l0_x.bin/"), obj("sub/"), obj("sub/a.bin")], P, now=NOW,
             grace=timedelta(minutes=60))
    assert {(i.key, i.problem) for i in p.overdue} == {
        (P + "emm_exi_l0_x.bin/", "folder-key"), (P + "sub/", "folder-key"), (P + "sub/a.bin", "unexpected-location")}
    assert p.waiting == {} and p.ready == []


def test_batch_limit_names_what_waits() -> None:
    objs = [o for n in "abc" for o in (obj(f"{n}.bin"), obj(f"{n}.bin.md5"))]
    work, waiting = plan(objs, P, now=NOW, grace=timedelta(minutes=60)).batch(2)
    assert [i.key for i in work] == [P + "a.bin", P + "b.bin"]
    assert set(waiting) == {P + "c.bin", P + "c.bin.md5"} and "batch limit" in waiting[P + "c.bin"]


def test_sensor_check_fires_only_for_actionable_work() -> None:
    waiting = [{"Key": P + "b.bin", "Size": 3, "LastModified": datetime.now(UTC)}]
    ready = [*waiting, {"Key": P + "b.bin.md5", "Size": 3, "LastModified": datetime.now(UTC)}]
    assert not inbox_has_work(waiting, prefix=P, grace_minutes=60)
    assert inbox_has_work(ready, prefix=P, grace_minutes=60)
    assert inbox_has_work(waiting, prefix=P, grace_minutes=0)
    assert sensor_objects(ready)[1].name == "b.bin.md5"
