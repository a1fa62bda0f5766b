"""Task bodies shared by the inbox DAGs (instrument ingest and SPICE refresh)."""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import BaseXCom, get_current_context
from airflow.sdk.exceptions import AirflowSkipException

from emm_sdc.core.archiving import InboxHandler, display_name
from emm_sdc.core.delivery import DeliveryItem, folder_markers
from emm_sdc.core.naming import task_label
from emm_sdc.core.storage import Storage

log = logging.getLogger(__name__)


def is_final_attempt() -> bool:
    """True on the running task's last try (no retry left after this one)."""
    ti = get_current_context()["ti"]
    return ti.try_number > ti.max_tries


def handle_inbox_item(handler: InboxHandler, item: dict[str, Any]) -> dict[str, Any]:
    """Body of a mapped inbox task: label the map index with the file name, handle the item, return the outcome."""
    parsed = DeliveryItem.from_dict(item)
    context = get_current_context()
    context["file_name"] = task_label(display_name(parsed.key))  # type: ignore[typeddict-unknown-key]
    outcome = handler.handle(parsed, final_attempt=is_final_attempt()).to_dict()
    if outcome["outcome"] == "quarantined":
        # Skipped, not success: a quarantined file stands out in the grid. The outcome is still this
        # task's XCom, for the run's report.
        context["ti"].xcom_push(key=BaseXCom.XCOM_RETURN_KEY, value=outcome)
        raise AirflowSkipException(f"quarantined {outcome['file_name']}: {outcome['reason_code']}: "
                                   f"{outcome['reason']} (copy and reason under {outcome['quarantine_key']})")
    return outcome


def inbox_accounting(remaining: list[str], planned: list[dict[str, Any]], waiting: dict[str, str],
                     outcomes: list[dict[str, Any]]) -> dict[str, str]:
    """Every key still in the inbox after a run, with the reason: nothing is silently skipped.

    ``remaining`` is the inbox listing at report time; ``waiting`` is what
    planning set aside; a planned item whose task returned no outcome failed
    (e.g. S3 or the catalog was down) and is retried by the next run.
    """
    why: dict[str, str] = {}
    finished = {o["inbox_key"]: o for o in outcomes}
    for item in planned:
        outcome = finished.get(item["key"])
        if outcome is None:
            reason = "its task failed in this run (see the task log); the next run tries again"
        elif outcome["outcome"] == "waiting":
            reason = outcome["reason"]
        else:
            reason = "uploaded again while this run handled the earlier upload; the next run handles it"
        for key in (item["key"], item.get("sidecar_key")):
            if key:
                why[key] = reason
    return {key: waiting.get(key) or why.get(key) or "arrived after this run planned its work, or was not "
            "planned because an earlier step of this run failed; the next run handles it" for key in remaining}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return [value] if isinstance(value, dict) else list(value)


def run_waiting(storage: Storage, bucket: str, prefix: str, plan_tasks: tuple[str, ...] = ("plan_batch",),
                handle_tasks: tuple[str, ...] = ("handle_file",), folders: tuple[str, ...] = ()) -> dict[str, str]:
    """What this run left in the inbox and why, from its plan and handle tasks (for the run's report).

    ``folders``: the sub-folders the run planned as inboxes of their own (their folder markers hold no data).
    """
    ti = get_current_context()["ti"]
    planned: list[dict[str, Any]] = []
    waiting: dict[str, str] = {}
    outcomes: list[dict[str, Any]] = []
    for t in plan_tasks:
        planned += _as_list(ti.xcom_pull(task_ids=t))
        waiting.update(ti.xcom_pull(task_ids=t, key="waiting") or {})
    for t in handle_tasks:
        outcomes += [o for o in _as_list(ti.xcom_pull(task_ids=t)) if o]
    markers = folder_markers(prefix, folders)
    remaining = [o.key for o in storage.list(bucket, prefix) if o.key not in markers]
    left = inbox_accounting(remaining, planned, waiting, outcomes)
    for key, why in left.items():
        log.info("left in the inbox: %s: %s", key, why)
    return left
