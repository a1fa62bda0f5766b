"""``emm_config_check``: every few minutes, validate each ITF YAML and ``include/sdc.yaml``.

One task per file (``check_exi``, ``check_emu``, ``check_emr``, ``check_site``). A valid file is kept as
its **last-good copy** (``EMM_LAST_GOOD_DIR``; written only when the content changed, atomically): the
copy the instrument's DAGs are built from if the YAML later breaks. A broken file fails its task with
every problem (file, field, rule) and is notified to its ITF (contacts from the last-good copy) and to
the operators (``include/sdc.yaml``) when the problems appear or change, again every 24 h while they
last, and once more when the file validates again. The task is green again once the file validates.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import DAG, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

from emm_sdc.core import config_store
from emm_sdc.core.config import CONFIG_FILES, Notifications
from emm_sdc.pipeline.common import START_DATE

log = logging.getLogger(__name__)

#: How often the configs are checked.
CHECK_SCHEDULE = "*/5 * * * *"
CHECKED = (*CONFIG_FILES, config_store.SITE)

_TASK_DOC = """**What it does**: validates `{what}` and, when it is valid, keeps it as its last-good copy.

**If it fails**, the YAML is invalid: the log (and the message sent to the ITF and operators) lists each
problem as file, field and rule. {effect} Fix the YAML (check it first with `./sdc check-config <file>`);
the next run turns green. A failure to write the last-good copy (`EMM_LAST_GOOD_DIR` not writable) also
fails this task: fix the folder's permissions.
"""
_EFFECT = {
    "itf": "The instrument keeps running on the last-good copy (its DAGs carry the `config-fallback` tag and "
           "a banner); with no copy (fresh install) its DAG file shows an import error instead.",
    "site": "Notifications then go to the operators of the last-good copy of the site config.",
}


def _contacts(cf: config_store.ConfigFile, current: Any | None) -> list[Notifications]:
    """Who hears about ``cf``: its ITF (from the valid config, else the last-good copy) and the operators."""
    out: list[Notifications] = []
    if cf.name in CONFIG_FILES:
        itf = current
        if itf is None:
            try:
                itf = config_store.read_last_good(cf).config
            except config_store.LastGoodUnavailable:
                itf = None
        if itf is not None:
            out.append(itf.notifications)
    out.append(config_store.operators_or_last_good())
    return out


def _notify(contacts: list[Notifications], subject: str, body: str, context: Any) -> bool:
    from emm_sdc.notify import SdcNotifier

    try:
        SdcNotifier(subject, body, contacts=contacts).notify(context)
    except Exception:
        log.exception("could not send %r (will try again on the next check)", subject)
        return False
    return True


def problem_message(result: config_store.CheckResult) -> tuple[str, str]:
    """Subject and body of the message about a broken YAML."""
    cf, err = result.file, result.error
    assert err is not None
    try:
        lg = config_store.read_last_good(cf)
        effect = (f"The SDC keeps running on its last-good copy, kept {lg.age()} ago "
                  f"({lg.kept_at:%Y-%m-%d %H:%M} UTC, {lg.path}); changes made since then are not in effect.")
    except config_store.LastGoodUnavailable as why:
        effect = (f"There is no last-good copy to run on ({why})"
                  + ("; the instrument's DAGs are off until the file validates." if cf.name in CONFIG_FILES
                     else "."))
    body = "\n".join([f"{cf.path} ({cf.label}) is invalid: {len(err.problems)} problem(s)",
                      *(f"  - {fld}: {msg}" for fld, msg in err.problems), "", effect,
                      f"Check a fix with ./sdc check-config {cf.path}; emm_config_check fails until it validates."])
    return f"[EMM SDC] invalid {cf.label}: {cf.path.name}", body


def run_check(name: str, context: Any) -> dict[str, Any]:
    """One check task's work: validate, keep the copy or fail (notifying when due)."""
    cf = config_store.config_files()[CHECKED.index(name)]
    result = config_store.check(cf, keep=True)
    if result.ok:
        if config_store.clear_problem(cf):
            current = config_store.read_last_good(cf).config if cf.name in CONFIG_FILES else None
            _notify(_contacts(cf, current), f"[EMM SDC] {cf.label} valid again: {cf.path.name}",
                    f"{cf.path} validates again; the SDC runs on it from the next DAG parse.", context)
        log.info("%s is valid%s", cf.path, "; kept as the last-good copy" if result.kept else "")
        return {"file": str(cf.path), "ok": True, "kept": result.kept}
    err = result.error
    assert err is not None
    subject, body = problem_message(result)
    if config_store.problem_notice_due(cf, err):
        if _notify(_contacts(cf, None), subject, body, context):
            config_store.record_problem_notice(cf, err)
    else:
        log.info("these problems were notified less than %s ago; not notifying again yet", config_store.REMIND_AFTER)
    raise AirflowFailException(body)


def build_config_check_dag() -> DAG:
    """``emm_config_check``: one task per YAML; failed = that YAML is broken (see the task's log)."""

    @dag(
        dag_id="emm_config_check",
        schedule=CHECK_SCHEDULE,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "sdc-ops", "retries": 0},
        tags=["emm", "maintenance", "config"],
        doc_md=__doc__,
    )
    def config_check() -> None:
        for name in CHECKED:
            what = "include/sdc.yaml (the site config)" if name == config_store.SITE else \
                f"include/itf_configs/{CONFIG_FILES[name]} (the {name} ITF config)"
            doc = _TASK_DOC.format(what=what, effect=_EFFECT["site" if name == config_store.SITE else "itf"])

            @task(task_id=f"check_{name}", doc_md=doc)
            def check_one(which: str) -> dict[str, Any]:
                return run_check(which, get_current_context())

            check_one(name)

    return config_check()
