"""What the Airflow benchmarks share: timestamped progress lines and nearest-rank percentiles.

Run a benchmark as ``python bench/<name>.py``: its folder is then on ``sys.path`` and it imports this module.
"""

from __future__ import annotations

import time

#: When the benchmark started (this module is imported at its start).
T0 = time.monotonic()


def say(msg: str) -> None:
    """A progress line, stamped with the seconds since the benchmark started."""
    print(f"[{time.monotonic() - T0:6.0f} s] {msg}", flush=True)


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank), as a person counts it on a short list."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]
