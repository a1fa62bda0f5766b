"""``emm_delivery_watch``: hourly, is any instrument silent for longer than its YAML allows?

One task per instrument compares the time its last delivery was handled with
``alerts.no_delivery_hours`` of its ITF YAML (see :mod:`emm_sdc.alerts`). A
silent instrument's task fails, so the grid shows the silence for as long as it
lasts, and the ITF and the operators are told once, in the hour it began.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from airflow.sdk import DAG, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from emm_sdc.alerts import WATCH_EVERY, silence
from emm_sdc.core.config import CONFIG_FILES
from emm_sdc.pipeline.common import START_DATE

WATCH_DOC = """\
**What it does**: reads when this instrument's last delivery was handled (catalog `deliveries`) and compares
it with `alerts.no_delivery_hours` of the ITF YAML.

**If it fails** (red), there was no delivery for longer than that: check with the MOC that passes happened
and that files reach `s3://<inbox>/inbox/<inst>/` (a failing ingest run or a quarantine still counts as a delivery). It
turns green by itself with the next delivery. Silences expected for weeks (solar conjunction): set
`alerts.no_delivery_hours: null` in the ITF YAML for that period.
"""


def check_instrument(instrument: str, now: datetime | None = None) -> dict[str, object]:
    """Check one instrument; notify once when a silence begins; raise while it lasts (``now``: for tests)."""
    from emm_sdc import connections
    from emm_sdc.alerts import notify_instrument
    from emm_sdc.core.config_store import running_config

    hours = running_config(instrument).alerts.no_delivery_hours
    last = connections.catalog().last_delivery(instrument)
    now = now or datetime.now(UTC)
    status: dict[str, object] = {"instrument": instrument, "limit_hours": hours,
                                 "last_delivery": last["received_at"].isoformat() if last else None}
    if hours is None:
        return {**status, "silent": False}
    silent, notify_now = silence(last["received_at"] if last else None, now, timedelta(hours=hours))
    if not silent:
        return {**status, "silent": False}
    assert last is not None
    quiet_h = (now - last["received_at"]).total_seconds() / 3600
    subject = f"[EMM SDC] no {instrument.upper()} delivery for {quiet_h:.1f} h (limit {hours:g} h)"
    body = (f"The last {instrument} delivery was handled at {last['received_at']:%Y-%m-%d %H:%M} UTC "
            f"({last['inbox_key']}, {last['outcome']}); nothing since. Check with the MOC that passes happened and "
            f"that files reach the inbox. You are told once; the emm_delivery_watch task stays red until the "
            f"next delivery.")
    if notify_now:
        notify_instrument(instrument, subject, body, _context())
    raise AirflowFailException(subject.removeprefix("[EMM SDC] "))


def _context() -> dict[str, object]:
    """The running task's context, or an empty one outside a task (a check run by hand)."""
    try:
        return dict(get_current_context())
    except Exception:
        return {}


def build_delivery_watch_dag() -> DAG:
    """The hourly delivery watch over every instrument."""

    @dag(
        dag_id="emm_delivery_watch",
        schedule=WATCH_EVERY,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "sdc-operations", "retries": 1, "retry_delay": timedelta(minutes=5)},
        tags=["emm", "operations", "alerts"],
        doc_md=__doc__,
    )
    def delivery_watch() -> None:
        for instrument in CONFIG_FILES:
            task(task_id=f"watch_{instrument}", doc_md=WATCH_DOC)(check_instrument)(instrument)

    return delivery_watch()
