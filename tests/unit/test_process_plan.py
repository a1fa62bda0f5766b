"""Processing plan helpers: work units and latest-version selection."""

from __future__ import annotations

from datetime import UTC, datetime

from emm_sdc.core.config import load_instrument
from emm_sdc.lifecycle import latest_per_root
from emm_sdc.pipeline.process import plan_units_from


def row(name: str, orbit: int, root: str = "r", absv: int = 100) -> dict:
    return {"file_name": name, "orbit_number": orbit, "timetag": datetime(2021, 6, 1 + orbit % 2, tzinfo=UTC),
            "file_root": root, "absolute_version": absv}


def test_units_group_by_orbit() -> None:
    cfg = load_instrument("emr")
    units = plan_units_from(cfg, [row("b", 12), row("a", 11), row("c", 11)])
    assert units == [{"unit": "orbit-0011", "inputs": ["a", "c"], "kernel_class": "n"},
                     {"unit": "orbit-0012", "inputs": ["b"], "kernel_class": "n"}]


def test_units_split_by_the_best_kernel_class_covering_each_input() -> None:
    cfg = load_instrument("emr")
    t = [row("a", 11), row("b", 11), row("c", 12)]  # a, c: 2021-06-02 (orbit%2==1) / b same day
    t[1]["timetag"] = datetime(2021, 6, 2, 12, tzinfo=UTC)
    hope = {"p": [(datetime(2021, 5, 1, tzinfo=UTC), datetime(2021, 7, 1, tzinfo=UTC))],
            "r": [(datetime(2021, 6, 2, 6, tzinfo=UTC), datetime(2021, 6, 3, tzinfo=UTC))]}
    units = plan_units_from(cfg, t, hope)
    assert [(u["unit"], u["inputs"], u["kernel_class"]) for u in units] == [
        ("orbit-0011-p", ["a"], "p"), ("orbit-0011-r", ["b"], "r"), ("orbit-0012-p", ["c"], "p")]


def test_latest_per_root_keeps_the_highest_absolute_version() -> None:
    rows = [row("x1", 1, "x", 100), row("x2", 1, "x", 101), row("y1", 1, "y", 300), row("x0", 1, "x", 99)]
    assert [r["file_name"] for r in latest_per_root(rows)] == ["x2", "y1"]
