"""Coverage arithmetic behind kernel classes and reprocessing triggers."""

from __future__ import annotations

from datetime import UTC, datetime

from emm_sdc.core import coverage


def d(day: int, hour: int = 0) -> datetime:
    return datetime(2021, 6, day, hour, tzinfo=UTC)


def test_union_and_difference() -> None:
    assert coverage.union([(d(3), d(5)), (d(1), d(2)), (d(2), d(3))]) == [(d(1), d(5))]
    assert coverage.difference([(d(1), d(10))], [(d(2), d(3)), (d(5), d(6))]) == [
        (d(1), d(2)), (d(3), d(5)), (d(6), d(10))]
    assert coverage.difference([(d(1), d(2))], [(d(1), d(2))]) == []


def test_newly_covered_counts_only_new_time_at_a_class_or_better() -> None:
    before = {"p": [(d(1), d(30))], "r": [(d(1), d(10))]}
    after = {"p": [(d(1), d(30))], "r": [(d(1), d(12))], "f": [(d(5), d(6))]}
    fresh = coverage.newly_covered(before, after)
    assert fresh == {"r": [(d(10), d(12))], "f": [(d(5), d(6))]}
    assert coverage.newly_covered(after, after) == {"r": [], "f": []}  # identical re-delivery: nothing


def test_best_class_at() -> None:
    cov = {"p": [(d(1), d(30))], "r": [(d(1), d(10))], "f": [(d(2), d(3))]}
    assert [coverage.best_class_at(cov, t) for t in (d(2, 12), d(5), d(20))] == ["f", "r", "p"]
    assert coverage.best_class_at(cov, datetime(2022, 1, 1, tzinfo=UTC)) == "n"
