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
    assert p.waiting == [P + "b.bin", P + "c.bin.md5"]


def test_after_grace_missing_and_orphan_checksums_are_overdue() -> None:
    p = plan([obj("b.bin", 61), obj("c.bin.md5", 61), obj("d.bin", 59)], P, now=NOW, grace=timedelta(minutes=60))
    assert {(i.key, i.problem) for i in p.overdue} == {
        (P + "b.bin", "missing-checksum"), (P + "c.bin.md5", "orphan-checksum")}
    assert p.waiting == [P + "d.bin"]


def test_subfolders_are_strays() -> None:
    p = plan([obj("x/y.bin")], P, now=NOW, grace=timedelta(minutes=60))
    assert p.overdue[0].problem == "unexpected-location"


def test_sensor_check_fires_only_for_actionable_work() -> None:
    waiting = [{"Key": P + "b.bin", "Size": 3, "LastModified": datetime.now(UTC)}]
    ready = [*waiting, {"Key": P + "b.bin.md5", "Size": 3, "LastModified": datetime.now(UTC)}]
    assert not inbox_has_work(waiting, prefix=P, grace_minutes=60)
    assert inbox_has_work(ready, prefix=P, grace_minutes=60)
    assert inbox_has_work(waiting, prefix=P, grace_minutes=0)
    assert sensor_objects(ready)[1].name == "b.bin.md5"
