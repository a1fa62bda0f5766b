"""Processing lanes: daily work and reprocessing share the workers without slowing each other.

Each instrument has two Airflow pools, ``emm_<inst>_daily`` and
``emm_<inst>_reprocessing``, sized in its YAML (``airflow.pools``). Every
task of a processing chain (prepare, run, collect) takes a slot of its lane's
pool, daily tasks carry a far higher priority weight, and the Batch runner
sends each lane to its own job queue. A campaign of any size therefore holds
at most its pool's slots, and whenever a slot frees up, the scheduler gives it
to daily work first.

Reprocessing also yields to daily work as it happens: before a reprocessing
job starts, it looks for running or queued tasks of any instrument's ingest or
processing DAG and, while there are some, reschedules itself (a reschedule,
not a retry; at most :data:`MAX_YIELDS` times in a row, so a constant stream of
new data cannot starve a campaign). On the machine itself, reprocessing work also yields the CPU: its tasks and
processors run at a lower scheduling priority (``nice`` 10) and its containers
with an eighth of the CPU weight (``cpu_shares``), so when both lanes share a
worker, daily work gets the cores first.

Under CeleryExecutor each lane also has its own Celery queue (:data:`QUEUES`):
deliveries (every ingest DAG and the SPICE refresh) on ``emm_ingest``, daily
processing on ``emm_daily``, reprocessing and staging checks on
``emm_reprocessing``; the platform DAGs stay on ``[operators] default_queue``.
A deployment starts a worker set per queue (``deploy/helm/values.yaml``), so a
campaign scales its own workers instead of taking the daily lane's.
``EMM_LANE_QUEUES=off`` keeps every task on the default queue (Amazon MWAA,
whose workers serve only that one).

Pools live in Airflow's metadata database: :func:`ensure_pools` creates or
resizes them (``./sdc pools``, the standalone and the benchmarks call it).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from emm_sdc.core.config import ItfConfig

log = logging.getLogger(__name__)
Lane = Literal["daily", "reprocessing"]
LANES: tuple[Lane, ...] = ("daily", "reprocessing")
#: Absolute priority weights: any daily task outranks every reprocessing task.
PRIORITY = {"daily": 100, "reprocessing": 1}


#: The Celery queue of each kind of work (see the module docstring).
QUEUES = {"ingest": "emm_ingest", "daily": "emm_daily", "reprocessing": "emm_reprocessing"}
Work = Literal["ingest", "daily", "reprocessing"]


def queue_args(work: Work) -> dict[str, Any]:
    """Operator arguments that send a task to its work's Celery queue (none with ``EMM_LANE_QUEUES=off``)."""
    from emm_sdc.core.settings import get_settings

    return {"queue": QUEUES[work]} if get_settings().lane_queues else {}


def pool_name(instrument: str, lane: Lane) -> str:
    """The Airflow pool of one instrument's lane."""
    return f"emm_{instrument}_{lane}"


def lane_args(cfg: ItfConfig, lane: Lane) -> dict[str, Any]:
    """Operator arguments that put a task in its lane: pool, priority weight (absolute), Celery queue."""
    return {"pool": pool_name(cfg.instrument, lane), "priority_weight": PRIORITY[lane], "weight_rule": "absolute",
            **queue_args(lane)}


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


#: How long a reprocessing job waits before it looks again, and how many times in a row it yields (30 min).
YIELD_FOR = timedelta(seconds=20)
MAX_YIELDS = 90
_BUSY = ["running", "queued", "scheduled"]


def daily_work_in_flight(ti: Any) -> list[str]:
    """The daily-lane DAGs (every instrument's ingest and processing) with tasks running or queued now."""
    from emm_sdc.core.config import CONFIG_FILES

    dags = [f"emm_{inst}_{kind}" for inst in CONFIG_FILES for kind in ("ingest", "process")]
    return [d for d in dags if ti.get_ti_count(dag_id=d, states=_BUSY)]


def yield_to_daily_work(context: Any) -> None:
    """In a reprocessing task: reschedule it while daily work is in flight (see the module docstring)."""
    from airflow.sdk.exceptions import AirflowRescheduleException

    yields = int(context.get("task_reschedule_count") or 0)
    if yields >= MAX_YIELDS:
        log.warning("reprocessing goes ahead after yielding %d times to daily work", yields)
        return
    busy = daily_work_in_flight(context["ti"])
    if busy:
        log.info("daily work in flight (%s): this reprocessing job waits %s", ", ".join(busy), YIELD_FOR)
        raise AirflowRescheduleException(reschedule_date=datetime.now(UTC) + YIELD_FOR)


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

    from emm_sdc.core.config import CONFIG_FILES
    from emm_sdc.core.config_store import running_config

    if configs is None:
        configs = [running_config(inst) for inst in CONFIG_FILES]
    specs = pool_specs(configs)
    for spec in specs:
        Pool.create_or_update_pool(spec["name"], spec["slots"], spec["description"], include_deferred=False)
    return specs
