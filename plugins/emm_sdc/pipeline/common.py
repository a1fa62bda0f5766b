"""Pieces every SDC DAG shares: default arguments, failure callbacks, the failure watcher, run identity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from airflow.sdk import Asset, TriggerRule, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from emm_sdc.core.archiving import RunContext
from emm_sdc.core.config import ItfConfig, Notifications
from emm_sdc.core.settings import get_settings
from emm_sdc.core.site_config import operators
from emm_sdc.notify import dag_failure_notifier

#: DAGs are not meant to catch up from this date; schedules start from "now".
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
#: Task id of the leaf watcher (:func:`fail_if_any_failed`).
WATCHER_TASK_ID = "fail_if_any_failed"


def default_args(cfg: ItfConfig, what: str) -> dict[str, Any]:
    """Owner and retries from the ITF's YAML.

    No per-task failure callback: failures are reported once per run (:func:`dag_callbacks`);
    ``what`` is no longer used here.
    """
    return {
        "owner": cfg.owner,
        "retries": cfg.airflow.retries,
        "retry_delay": timedelta(minutes=cfg.airflow.retry_delay_minutes),
    }


def dag_callbacks(itf: Notifications | None, what: str) -> dict[str, Any]:
    """Keyword arguments for ``@dag(...)``: one message per failed run.

    It goes to the ITF's contacts (``itf``, for instrument DAGs) and to the
    operators of the site config (``include/sdc.yaml``); platform DAGs pass
    ``None`` and tell the operators only. ``what`` names the DAG's job in the
    subject ("processing", "SPICE refresh", ...).
    """
    contacts = [itf, operators()] if itf is not None else [operators()]
    return {"on_failure_callback": dag_failure_notifier(contacts, what, ignore=[WATCHER_TASK_ID])}


def run_context() -> RunContext:
    ctx = get_current_context()
    return RunContext(dag_id=ctx["dag"].dag_id, dag_run_id=ctx["run_id"])


@task(task_id=WATCHER_TASK_ID, trigger_rule=TriggerRule.ONE_FAILED, retries=0,
      doc_md="**What it does**: runs only when another task of this run failed, and fails the run, so a run "
             "whose summary tasks still reported is not green.\n\n**If it fails** (it always does when it runs): "
             "open the other red task; this one needs no action of its own (clear the failed task with its "
             "downstream, and this one clears with it).")
def fail_if_any_failed() -> None:
    """Leaf watcher: makes the DAG run fail when any upstream task failed.

    Summary tasks run with ``all_done`` so they report partial results; without
    this watcher such a run would look green.
    """
    raise AirflowFailException("an upstream task failed; see the failed task's log")


ANNOUNCE_DOC = """\
**What it does**: reads from the catalog the files of this level that this run indexed and emits an event
of the level's Asset listing them (its `extra`); the DAGs scheduled on that Asset start from it.
*Skipped*: the run made none.

**If it fails**: the catalog was unreachable; the files are indexed and safe, but nothing downstream was
started: clear this task.
"""


def announce_task(asset: Asset, level: str, what: Literal["files", "products"],
                  inlets: list[Asset] | None = None) -> Any:
    """A task that emits an Asset event listing this run's new files of one level.

    ``what``: ``files`` an ingest run archived, or ``products`` a processing run indexed.

    Skipped when the run made none, so consumers are not triggered for nothing. ``inlets``: the Assets the
    level is made from, for the asset graph's lineage (:func:`emm_sdc.assets.level_inlets`).
    """

    @task(task_id=f"announce_{level}", outlets=[asset], inlets=list(inlets or []), trigger_rule=TriggerRule.ALL_DONE,
          retries=1, doc_md=ANNOUNCE_DOC)
    def announce() -> list[str]:
        from emm_sdc import connections

        ctx = get_current_context()
        cat = connections.catalog()
        made = cat.files_archived_in_run if what == "files" else cat.products_made_in_run
        rows = made(ctx["dag"].dag_id, ctx["run_id"], level)
        names = [r["file_name"] for r in rows]
        if not names:
            raise AirflowSkipException(f"no new {level} {what} in this run")
        ctx["outlet_events"][asset].extra = {"files": names, "count": len(names),
                                             "bucket": get_settings().archive_bucket}
        return names

    return announce()
