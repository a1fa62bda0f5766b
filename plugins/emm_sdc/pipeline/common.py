"""Pieces every SDC DAG shares: default arguments, the failure watcher, run identity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from emm_sdc.core.archiving import RunContext
from emm_sdc.core.config import ItfConfig
from emm_sdc.notify import failure_notifier

#: DAGs are not meant to catch up from this date; schedules start from "now".
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)


def default_args(cfg: ItfConfig, what: str) -> dict[str, Any]:
    """Owner, retries and failure notification from the ITF's YAML."""
    return {
        "owner": cfg.owner,
        "retries": cfg.airflow.retries,
        "retry_delay": timedelta(minutes=cfg.airflow.retry_delay_minutes),
        "on_failure_callback": failure_notifier(cfg.notifications, what),
    }


def run_context() -> RunContext:
    ctx = get_current_context()
    return RunContext(dag_id=ctx["dag"].dag_id, dag_run_id=ctx["run_id"])


@task(trigger_rule=TriggerRule.ONE_FAILED, retries=0)
def fail_if_any_failed() -> None:
    """Leaf watcher: makes the DAG run fail when any upstream task failed.

    Summary tasks run with ``all_done`` so they report partial results; without
    this watcher such a run would look green.
    """
    raise AirflowFailException("an upstream task failed; see the failed task's log")
