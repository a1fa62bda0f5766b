"""Public releases without services: windows, batch numbers, lag, schedule, rules, chunks, documents."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from croniter import croniter

from emm_sdc.core import config, release
from emm_sdc.core.release import ReleaseError, Rules, Window


@pytest.mark.parametrize(("batch", "start", "end"), [
    (1, date(2021, 2, 9), date(2021, 5, 31)),      # orbit insertion to the end of May
    (2, date(2021, 6, 1), date(2021, 8, 31)),
    (3, date(2021, 9, 1), date(2021, 11, 30)),
    (4, date(2021, 12, 1), date(2022, 2, 28)),     # Dec-Feb across the year
    (5, date(2022, 3, 1), date(2022, 5, 31)),      # the mission's 5th batch: 1 Mar-31 May 2022
    (6, date(2022, 6, 1), date(2022, 8, 31)),
    (7, date(2022, 9, 1), date(2022, 11, 30)),
    (8, date(2022, 12, 1), date(2023, 2, 28)),
    (9, date(2023, 3, 1), date(2023, 5, 31)),
    (12, date(2023, 12, 1), date(2024, 2, 29)),    # leap year
    (16, date(2024, 12, 1), date(2025, 2, 28)),
    (24, date(2026, 12, 1), date(2027, 2, 28)),
    (36, date(2029, 12, 1), date(2030, 2, 28)),
])
def test_batch_windows(batch: int, start: date, end: date) -> None:
    window = release.batch_window(batch)
    assert (window.start, window.end, window.batch) == (start, end, batch)
    assert window.name == f"batch-{batch:02d}"
    assert window.prefix == f"emm/releases/batch-{batch:02d}/"
    assert window.start_time == datetime(start.year, start.month, start.day, tzinfo=UTC)
    assert window.end_time == datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    assert release.batch_of(start) == release.batch_of(end) == batch


def test_windows_tile_the_mission_without_gaps_or_overlaps() -> None:
    assert release.batch_of(date(2021, 2, 8)) is None
    assert release.batch_of(date(2024, 2, 29)) == 12
    assert release.batch_of(date(2024, 3, 1)) == 13
    day, expected = release.MISSION_START, 1
    while day < date(2032, 1, 1):
        window = release.batch_window(expected)
        assert window.start == day
        for _ in range((window.end - window.start).days + 1):
            assert release.batch_of(day) == expected
            day += timedelta(days=1)
        expected += 1
    with pytest.raises(ReleaseError, match="start at 1"):
        release.batch_window(0)


@pytest.mark.parametrize(("released", "batch"), [
    # The mission's own release dates (EMM_API.md section 2) come out as the batch due, with a 4-month lag.
    (date(2021, 10, 1), 1), (date(2022, 1, 15), 2), (date(2022, 4, 8), 3), (date(2022, 10, 15), 5),
    (date(2023, 1, 5), 6), (date(2023, 10, 26), 9),
    (date(2021, 9, 30), None), (date(2021, 12, 31), 1), (date(2022, 1, 1), 2),
])
def test_due_batch_with_the_default_lag(released: date, batch: int | None) -> None:
    assert release.due_batch(released) == batch
    assert release.due_batch(datetime(released.year, released.month, released.day, 6, tzinfo=UTC)) == batch


@pytest.mark.parametrize(("lag", "first_due"), [(0, date(2021, 6, 1)), (1, date(2021, 7, 1)),
                                                 (4, date(2021, 10, 1)), (6, date(2021, 12, 1)),
                                                 (12, date(2022, 6, 1))])
def test_lag_moves_the_first_release(lag: int, first_due: date) -> None:
    assert release.due_batch(first_due - timedelta(days=1), lag) is None
    assert release.due_batch(first_due, lag) == 1


@pytest.mark.parametrize("lag", range(13))
def test_the_schedule_releases_every_batch_once_in_order(lag: int) -> None:
    cron = release.schedule_cron(lag)
    fires = croniter(cron, datetime(2021, 1, 1, tzinfo=UTC))
    seen: list[int] = []
    for _ in range(40):
        fire = fires.get_next(datetime)
        due = release.due_batch(fire, lag)
        if due is not None:
            seen.append(due)
            # the window closed exactly `lag` months before the run
            closed = release.batch_window(due).end + timedelta(days=1)
            assert release.add_months(closed, lag) == fire.date()
    assert seen == list(range(1, len(seen) + 1))
    assert len(seen) >= 35


def test_schedule_reads_as_a_quarterly_cron() -> None:
    assert release.schedule_cron(4) == "0 6 1 1,4,7,10 *"
    assert release.schedule_cron(0) == release.schedule_cron(12) == "0 6 1 3,6,9,12 *"
    assert release.schedule_cron(5) == "0 6 1 2,5,8,11 *"


def test_add_months_crosses_years() -> None:
    assert release.add_months(date(2021, 12, 1), 3) == date(2022, 3, 1)
    assert release.add_months(date(2022, 3, 1), -3) == date(2021, 12, 1)
    assert release.add_months(date(2021, 6, 1), 30) == date(2023, 12, 1)


NOW = datetime(2026, 3, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(("params", "expected"), [
    ({"batch": 5}, Window(date(2022, 3, 1), date(2022, 5, 31), 5)),
    ({"start_date": "2021-02-09", "end_date": "2021-05-31"}, release.batch_window(1)),
    ({"start_date": "2021-12-01", "end_date": "2022-02-28"}, release.batch_window(4)),
    ({"start_date": "2021-02-09", "end_date": "2021-05-22"}, Window(date(2021, 2, 9), date(2021, 5, 22))),
    ({}, release.batch_window(18)),  # 1 Mar 2026 - 4 months = 1 Nov 2025: Jun-Aug 2025 (batch 18) is due
])
def test_resolve_window(params: dict[str, Any], expected: Window) -> None:
    assert release.resolve_window({"batch": None, **params}, NOW, 4) == expected


def test_special_window_names() -> None:
    special = release.window_from(date(2021, 2, 9), date(2021, 5, 22))
    assert special.batch is None and special.name == "special-20210209-20210522"
    assert release.window_of_name("special-20210209-20210522") == special
    assert release.window_of_name("7") == release.window_of_name("batch-07") == release.batch_window(7)
    with pytest.raises(ReleaseError, match="is not a release"):
        release.window_of_name("batch seven")


@pytest.mark.parametrize(("params", "message"), [
    ({"batch": 2, "start_date": "2021-06-01", "end_date": "2021-08-31"}, "either a batch number or"),
    ({"start_date": "2021-06-01"}, "needs both start_date and end_date"),
    ({"start_date": "2021-06-02", "end_date": "2021-06-01"}, "ends .* before it starts"),
    ({"batch": 19}, r"batch-19 \(2025-09-01 to 2025-11-30\) has not closed on 2025-11-30"),
])
def test_resolve_window_refusals(params: dict[str, Any], message: str) -> None:
    at = datetime(2025, 11, 30, 23, tzinfo=UTC)
    with pytest.raises(ReleaseError, match=message):
        release.resolve_window({"batch": None, **params}, at, 4)


def test_nothing_due_before_the_first_batch() -> None:
    with pytest.raises(ReleaseError, match="no batch is due on 2021-09-30"):
        release.resolve_window({}, datetime(2021, 9, 30, tzinfo=UTC), 4)


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert release.lag_months() == 4 and release.public_bucket() is None
    monkeypatch.setenv("EMM_RELEASE_LAG_MONTHS", "6")
    monkeypatch.setenv("EMM_PUBLIC_BUCKET", "emm-public")
    assert release.lag_months() == 6 and release.public_bucket() == "emm-public"
    monkeypatch.setenv("EMM_RELEASE_LAG_MONTHS", "-1")
    with pytest.raises(ValueError, match="EMM_RELEASE_LAG_MONTHS='-1' must be a whole number"):
        release.lag_months()
    monkeypatch.setenv("EMM_PUBLIC_BUCKET", "Public_Bucket")
    with pytest.raises(ValueError, match="not a valid S3 bucket name"):
        release.public_bucket()


@pytest.mark.parametrize(("floor", "classes"), [("p", ["n", "p", "r", "f"]), ("r", ["n", "r", "f"]),
                                                ("f", ["n", "f"])])
def test_kernel_quality_rule(floor: str, classes: list[str]) -> None:
    assert Rules("exi", ("l1",), floor).kernel_classes() == classes


def test_rules_come_from_the_yaml_and_params_only_narrow_them() -> None:
    configs = {i: config.load_instrument(i) for i in ("exi", "emu", "emr")}
    rules = release.rules_for(configs)
    assert [(r.instrument, r.levels, r.min_pred_rec) for r in rules] == [
        ("emr", ("l1", "l2", "l2ql"), "r"), ("emu", ("l1", "l2a", "l2b", "l3"), "r"),
        ("exi", ("l1", "l2a", "l1ql"), "r")]
    narrowed = release.rules_for(configs, ["exi", "emr"], ["l1", "l1ql"])
    assert [(r.instrument, r.levels) for r in narrowed] == [("exi", ("l1", "l1ql")), ("emr", ("l1",))]
    with pytest.raises(ReleaseError, match=r"level\(s\) \['l2b'\] are not released by \['exi'\]"):
        release.rules_for(configs, ["exi"], ["l2b"])
    with pytest.raises(ReleaseError, match="no ITF config"):
        release.rules_for({"exi": configs["exi"]}, ["emu"])


def row(name: str, size: int = 100, **kw: Any) -> dict[str, Any]:
    inst, level = name.split("_")[1:3]
    return {"id": abs(hash(name)) % 10**9, "file_name": name, "instrument_id": inst, "data_level": level,
            "file_size": size, **kw}


def test_chunks_split_per_instrument_and_level_and_by_size() -> None:
    rows = [row(f"emm_exi_l1_{i}") for i in range(5)] + [row("emm_exi_l2a_0", size=70), row("emm_exi_l2a_1", 70)]
    rows += [row("emm_emr_l2_0")]
    out = release.chunks(rows, max_files=2, max_bytes=100)
    assert [(c["group"], len(c["ids"])) for c in out] == [
        ("emr l2", 1), ("exi l1", 1), ("exi l1", 1), ("exi l1", 1), ("exi l1", 1), ("exi l1", 1),
        ("exi l2a", 1), ("exi l2a", 1)]
    out = release.chunks(rows, max_files=2)
    assert [(c["group"], len(c["ids"])) for c in out] == [("emr l2", 1), ("exi l1", 2), ("exi l1", 2),
                                                          ("exi l1", 1), ("exi l2a", 2)]
    assert out[-1]["label"] == "exi l2a: 2 file(s), 140 B"
    assert sorted(i for c in out for i in c["ids"]) == sorted(r["id"] for r in rows)


def manifest_row(name: str, size: int, version: int, revision: int, selection: str = "window") -> dict[str, Any]:
    inst, level = name.split("_")[1:3]
    return {"file_name": name, "instrument_id": inst, "data_level": level,
            "product_type": "quicklook" if level.endswith("ql") else "science",
            "timetag": datetime(2021, 3, 1, 12, tzinfo=UTC), "orbit_number": 11, "pred_rec": "r",
            "version": version, "revision": revision, "absolute_version": version * 100 + revision,
            "file_size": size, "md5checksum": f"{size:032x}", "s3_key": f"emm/data/{inst}/{level}/{name}",
            "selection": selection, "released": True}


def test_documents_are_deterministic_and_complete() -> None:
    rows = [manifest_row("emm_exi_l2a_a_r_v01-01.fits", 2_500_000_000, 1, 1),
            manifest_row("emm_exi_l1ql_a_n_v01-00.png", 1000, 1, 0),
            manifest_row("emm_emr_l2_a_r_v01-00.fits", 30_000_000, 1, 0, "carry-over")]
    info = release.ReleaseInfo("batch-01", 1, date(2021, 2, 9), date(2021, 5, 31), "2021-10-01T06:00:00Z",
                               {"exi": {"levels": ["l1", "l2a", "l1ql"], "min_pred_rec": "r"}}, 1)
    docs = release.documents(info, rows)
    assert docs == release.documents(info, list(reversed(rows)))  # same rows, same bytes
    manifest = json.loads(docs["manifest.json"][0])
    assert manifest["release"] == "batch-01" and manifest["batch"] == 1
    assert manifest["window"] == {"start": "2021-02-09", "end": "2021-05-31"}
    assert manifest["published_at"] == "2021-10-01T06:00:00Z"
    assert [f["file_name"] for f in manifest["files"]] == [
        "emm_emr_l2_a_r_v01-00.fits", "emm_exi_l1ql_a_n_v01-00.png", "emm_exi_l2a_a_r_v01-01.fits"]
    assert manifest["files"][2] == {
        "file_name": "emm_exi_l2a_a_r_v01-01.fits", "instrument_id": "exi", "data_level": "l2a",
        "product_type": "science", "timetag": "2021-03-01T12:00:00Z", "orbit_number": 11, "pred_rec": "r",
        "version": 1, "revision": 1, "absolute_version": 101, "file_size": 2_500_000_000,
        "md5checksum": f"{2_500_000_000:032x}", "s3_key": "emm/data/exi/l2a/emm_exi_l2a_a_r_v01-01.fits",
        "selection": "window"}
    assert manifest["file_count"] == 3 and manifest["total_bytes"] == 2_530_001_000
    table = list(csv.DictReader(io.StringIO(docs["manifest.csv"][0].decode())))
    assert list(table[0]) == list(release.MANIFEST_FIELDS)
    assert [(r["file_name"], r["md5checksum"], r["file_size"], r["version"], r["revision"]) for r in table] == [
        (f["file_name"], f["md5checksum"], str(f["file_size"]), str(f["version"]), str(f["revision"]))
        for f in manifest["files"]]
    notes = docs["release_notes.md"][0].decode()
    assert "# EMM public data release: batch 1" in notes
    assert "Observation window: 2021-02-09 to 2021-05-31" in notes
    assert "Published: 2021-10-01T06:00:00Z" in notes
    assert "| EXI | l2a | 1 | 2.5 GB | 2500000000 |" in notes
    assert "| EMIRS | l2 | 1 | 30.0 MB | 30000000 |" in notes
    assert "Files: 3, 2.5 GB (2530001000 bytes)" in notes
    assert "1 were observed in earlier batches' windows" in notes
    assert "1 selected file(s) were held back" in notes


def test_human_bytes() -> None:
    assert [release.human_bytes(n) for n in (0, 999, 1000, 240 * 10**9, 3 * 10**12, 5 * 10**15)] == [
        "0 B", "999 B", "1.0 kB", "240.0 GB", "3.0 TB", "5000.0 TB"]
