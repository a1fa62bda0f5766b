"""Late-data alerts: Airflow deadline alerts on ingest and processing runs, and the delivery watch.

* **Not processed in time**: every ``emm_<inst>_ingest`` and ``emm_<inst>_process`` run carries an
  Airflow 3 ``DeadlineAlert`` (queued time + the ITF YAML's ``alerts.processed_within_minutes``,
  default 30). When a run is still unfinished then, Airflow's triggerer calls
  :func:`deadline_missed`, which tells the ITF and the operators which run, since when, and
  where to look. A run that finishes in time cancels its deadline.
* **No delivery**: the ``emm_delivery_watch`` DAG checks, every hour, when each instrument's last
  delivery was handled; an instrument silent for longer than ``alerts.no_delivery_hours``
  (default 24; ``null`` turns it off) fails its task (red in the grid while the silence lasts)
  and is notified once, in the hour the silence crosses the limit.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from emm_sdc.core.config import ItfConfig

log = logging.getLogger(__name__)

#: How often the delivery watch runs: a silence is notified in the one run that sees it cross the limit.
WATCH_EVERY = timedelta(hours=1)


def processing_deadline(cfg: ItfConfig, what: str) -> DeadlineAlert:
    """The deadline alert of one instrument's ingest or processing runs (``what`` names the DAG's job)."""
    minutes = cfg.alerts.processed_within_minutes
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(deadline_missed, kwargs={"instrument": cfg.instrument, "what": what,
                                                        "minutes": minutes}),
        name=f"{what} within {minutes:g} min",
    )


def deadline_message(instrument: str, what: str, minutes: float, context: dict[str, Any]) -> tuple[str, str]:
    """Subject and body of a missed-deadline message from the triggerer's context (``dag_run``, ``deadline``)."""
    run = context.get("dag_run") or {}
    dag_id, run_id = run.get("dag_id", "?"), run.get("dag_run_id") or run.get("run_id", "?")
    subject = f"[EMM SDC] {instrument.upper()} {what} late: {dag_id} run {run_id} not finished after {minutes:g} min"
    body = "\n".join([
        f"{dag_id} run {run_id} was queued at {run.get('queued_at')} and had not finished "
        f"{minutes:g} minutes later (deadline {(context.get('deadline') or {}).get('deadline_time')}); "
        f"its state then: {run.get('state')}.",
        "Data delivered for it is not fully processed yet. Open the run's grid: a task waiting in a pool "
        "or queue means the SDC is busy (see the reprocessing lane); a task up for retry names its error; "
        "a deferred task waits on S3 or Batch.",
        "The run goes on; you hear from the SDC again if it fails.",
    ])
    return subject, body


async def deadline_missed(instrument: str, what: str, minutes: float, context: dict[str, Any] | None = None) -> str:
    """Deadline callback (runs in the triggerer): tell the ITF and the operators that a run is late."""
    subject, body = deadline_message(instrument, what, minutes, context or {})
    await asyncio.to_thread(notify_instrument, instrument, subject, body, context or {})
    return subject


def notify_instrument(instrument: str, subject: str, body: str, context: dict[str, Any]) -> None:
    """Tell the instrument's ITF (its running config's contacts) and the operators."""
    from emm_sdc.core.config_store import running_config
    from emm_sdc.core.site_config import operators
    from emm_sdc.notify import SdcNotifier

    contacts = [operators()]
    try:
        contacts.insert(0, running_config(instrument).notifications)
    except Exception:  # a broken ITF YAML must not stop the operators' alert
        log.exception("the %s ITF config did not load; telling the operators only", instrument)
    SdcNotifier.from_config(contacts, subject=subject, body=body).notify(context)


def silence(last_delivery: datetime | None, now: datetime, limit: timedelta,
            every: timedelta = WATCH_EVERY) -> tuple[bool, bool]:
    """(silent, notify_now): silent past ``limit``; notify only in the check that first sees it.

    With no delivery ever, the instrument is not silent (nothing was expected yet).
    """
    if last_delivery is None:
        return False, False
    quiet = now - last_delivery
    return quiet > limit, limit < quiet <= limit + every


def dag_test(dag: Any, **kwargs: Any) -> Any:
    """``dag.test(**kwargs)`` of a DAG that may carry deadline alerts, with the alerts left out.

    Airflow 3.3.2's ``dag.test()`` cannot finish a run of a DAG with deadline alerts (it looks them up by
    the ids a DAG gets only when the DAG processor stores it), and it runs no triggerer to evaluate them
    anyway; real schedulers do (tests/e2e/test_operator_sdc.py).
    """
    saved = dag.deadline
    dag.deadline = None
    try:
        return dag.test(**kwargs)
    finally:
        dag.deadline = saved
