"""Time coverage of Hope kernels by class: unions, newly covered time, best class at a time."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from emm_sdc.core.naming import KERNEL_QUALITY

Span = tuple[datetime, datetime]


def union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, merged intervals (touching intervals merge)."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def difference(spans: Iterable[Span], minus: Iterable[Span]) -> list[Span]:
    """Parts of ``spans`` not covered by ``minus``."""
    out: list[Span] = []
    cut = union(minus)
    for start, end in union(spans):
        cursor = start
        for c_start, c_end in cut:
            if c_end <= cursor or c_start >= end:
                continue
            if c_start > cursor:
                out.append((cursor, c_start))
            cursor = max(cursor, c_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out


def at_least(by_class: Mapping[str, Sequence[Span]], kernel_class: str) -> list[Span]:
    """Time covered by kernels of ``kernel_class`` or better."""
    q = KERNEL_QUALITY[kernel_class]
    return union(s for c, spans in by_class.items() if KERNEL_QUALITY[c] >= q for s in spans)


def best_class_at(by_class: Mapping[str, Sequence[Span]], t: datetime) -> str:
    """The best kernel class whose coverage contains ``t`` (``n`` when none does)."""
    best = "n"
    for cls, spans in by_class.items():
        if KERNEL_QUALITY[cls] > KERNEL_QUALITY[best] and any(s <= t <= e for s, e in spans):
            best = cls
    return best


def newly_covered(before: Mapping[str, Sequence[Span]], after: Mapping[str, Sequence[Span]]) -> dict[str, list[Span]]:
    """Per class r and f: time covered at that class or better now, but not before."""
    return {cls: difference(at_least(after, cls), at_least(before, cls)) for cls in ("r", "f")}


def by_class(rows: Iterable[Mapping[str, object]]) -> dict[str, list[Span]]:
    """Group catalog coverage rows (kernel_class, start_time, end_time) by class."""
    out: dict[str, list[Span]] = {}
    for r in rows:
        out.setdefault(str(r["kernel_class"]), []).append((r["start_time"], r["end_time"]))  # type: ignore[arg-type]
    return out
