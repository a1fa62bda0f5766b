"""Processing lanes: daily work and reprocessing share the workers without slowing each other.

Each instrument has two Airflow pools, ``emm_<inst>_daily`` and
``emm_<inst>_reprocessing``, sized in its YAML (``airflow.pools``). Every
task of a processing chain (prepare, run, collect) takes a slot of its lane's
pool, daily tasks carry a far higher priority weight, and the Batch runner
sends each lane to its own job queue. A campaign of any size therefore holds
at most its pool's slots, and whenever a slot frees up, the scheduler gives it
to daily work first.

On the machine itself, reprocessing work also yields the CPU: its tasks and
processors run at a lower scheduling priority (``nice`` 10) and its containers
with an eighth of the CPU weight (``cpu_shares``), so when both lanes share a
worker, daily work gets the cores first.

Pools live in Airflow's metadata database: :func:`ensure_pools` creates or
resizes them (``./sdc pools``, the standalone and the benchmarks call it).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, Literal

from emm_sdc.core.config import ItfConfig

Lane = Literal["daily", "reprocessing"]
LANES: tuple[Lane, ...] = ("daily", "reprocessing")
#: Absolute priority weights: any daily task outranks every reprocessing task.
PRIORITY = {"daily": 100, "reprocessing": 1}


def pool_name(instrument: str, lane: Lane) -> str:
    """The Airflow pool of one instrument's lane."""
    return f"emm_{instrument}_{lane}"


def lane_args(cfg: ItfConfig, lane: Lane) -> dict[str, Any]:
    """Operator arguments that put a task in its lane: pool, priority weight (absolute)."""
    return {"pool": pool_name(cfg.instrument, lane), "priority_weight": PRIORITY[lane], "weight_rule": "absolute"}


#: Scheduling priority of reprocessing work on a worker (processes inherit it), and its containers' CPU weight.
REPROCESSING_NICE = 10
REPROCESSING_CPU_WEIGHT = 1 / 8


def yield_cpu(lane: str) -> None:
    """In a reprocessing task, lower this process's CPU priority (and so its processor's) to ``nice`` 10."""
    if lane != "reprocessing":
        return
    current = os.nice(0)
    if current < REPROCESSING_NICE:
        os.nice(REPROCESSING_NICE - current)


def pool_specs(configs: Iterable[ItfConfig]) -> list[dict[str, Any]]:
    """Name, size and description of every lane pool of the given instruments."""
    specs = []
    for cfg in configs:
        for lane in LANES:
            specs.append(
                {
                    "name": pool_name(cfg.instrument, lane),
                    "slots": getattr(cfg.airflow.pools, lane),
                    "description": f"{cfg.instrument} {lane} processing (airflow.pools.{lane} in its YAML)",
                }
            )
    return specs


def ensure_pools(configs: Iterable[ItfConfig] | None = None) -> list[dict[str, Any]]:
    """Create or resize the lane pools in Airflow's metadata database (needs its ORM: CLI, not tasks)."""
    from airflow.models.pool import Pool

    from emm_sdc.core.config import CONFIG_FILES, load_instrument

    if configs is None:
        configs = [load_instrument(inst) for inst in CONFIG_FILES]
    specs = pool_specs(configs)
    for spec in specs:
        Pool.create_or_update_pool(spec["name"], spec["slots"], spec["description"], include_deferred=False)
    return specs
