"""Notifications to operators and ITFs: always logged; e-mail and Slack when configured.

E-mail and Slack go through the smtp and slack providers' own notifiers, using
the connection ids the ITF YAML or the site config (``include/sdc.yaml``)
names (credentials stay in Airflow connections).

Failed DAG runs are reported once per run by :func:`dag_failure_notifier`, a
DAG-level ``on_failure_callback``. Airflow 3 runs DAG callbacks in the DAG
processor (the scheduler sends it a ``DagCallbackRequest``), in a child process
without metadata-DB access; the context holds ``dag``, ``run_id``, ``reason``
and, when a task caused the failure, that task instance's template context
(``ti``, ``dag_run``, ...). The run's other failed task instances are asked
from the Task SDK's supervisor channel (``GetTaskStates``). ``dag.test()``
runs the same callbacks in its own process, which has the DB session.

A notifier object is often shared (one callback for many tasks and runs in
one process), and ``BaseNotifier.__call__`` renders ``template_fields`` in
place, so every notifier here renders and sends from a copy made per call:
the shared object keeps its templates and each message has its own text.
"""

from __future__ import annotations

import copy
import html
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from emm_sdc.core.config import Notifications

log = logging.getLogger("emm_sdc.notify")

#: Failed task instances one message lists at most (the rest are counted).
MAX_LISTED = 100
_MAPPED_KEY = re.compile(r"(?P<task_id>.+)_(?P<map_index>\d+)")


class _PerCallNotifier(BaseNotifier):
    """A notifier whose every call renders and sends from its own shallow copy.

    Rendering replaces the copy's template attributes (strings) with new
    values, so nothing of one call reaches the next through the shared object.
    """

    def __call__(self, *args: Any) -> None:
        BaseNotifier.__call__(copy.copy(self), *args)


class SdcNotifier(_PerCallNotifier):
    """Sends one message to every contact given (an ITF's, the operators', or both).

    Usable as a task/DAG callback (``on_failure_callback=SdcNotifier(...)``) or
    called directly from a task with a rendered subject and body. E-mail goes
    out once per SMTP connection (to all addresses using it), Slack once per
    connection and channel.
    """

    template_fields = ("subject", "body")

    def __init__(
        self,
        subject: str,
        body: str,
        *,
        emails: Sequence[str] = (),
        smtp_conn_id: str | None = None,
        slack_conn_id: str | None = None,
        slack_channel: str | None = None,
        contacts: Sequence[Notifications] = (),
    ):
        super().__init__()
        self.subject = subject
        self.body = body
        own = Notifications(emails=list(emails), smtp_conn_id=smtp_conn_id,
                            slack_conn_id=slack_conn_id, slack_channel=slack_channel)
        self.contacts: list[Notifications] = [*([own] if own != Notifications() else []), *contacts]

    @classmethod
    def from_config(cls, cfg: Notifications | Sequence[Notifications], subject: str, body: str) -> SdcNotifier:
        """A notifier for the contacts of one config section (or several)."""
        return cls(subject, body, contacts=[cfg] if isinstance(cfg, Notifications) else list(cfg))

    @property
    def emails(self) -> list[str]:
        """Every address named (mail goes to those whose contact names an SMTP connection)."""
        return _unique(e for c in self.contacts for e in c.emails)

    def notify(self, context: Any) -> None:
        log.warning("NOTIFY %s\n%s", self.subject, self.body)
        context = _provider_context(context)
        errors: list[Exception] = []
        for smtp_conn_id, emails in _mail_groups(self.contacts).items():
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            try:
                SmtpNotifier(to=emails, subject=self.subject, html_content=f"<pre>{html.escape(self.body)}</pre>",
                             smtp_conn_id=smtp_conn_id).notify(context)
            except Exception as exc:
                log.exception("e-mail through %s to %s failed", smtp_conn_id, emails)
                errors.append(exc)
        for slack_conn_id, channel in _unique((c.slack_conn_id, c.slack_channel) for c in self.contacts
                                              if c.slack_conn_id):
            from airflow.providers.slack.notifications.slack import SlackNotifier

            kwargs: dict[str, Any] = {"slack_conn_id": slack_conn_id, "text": f"*{self.subject}*\n{self.body}"}
            if channel:
                kwargs["channel"] = channel
            try:
                SlackNotifier(**kwargs).notify(context)
            except Exception as exc:
                log.exception("Slack post through %s failed", slack_conn_id)
                errors.append(exc)
        if errors:
            raise errors[0]


def _provider_context(context: Any) -> Any:
    """The context for the providers' notifiers, which may render with ``context["dag"]``'s Jinja environment.

    ``dag.test()`` gives DAG callbacks a serialized DAG, which has none; without a DAG they use Airflow's default.
    """
    dag = context.get("dag") if isinstance(context, dict) else None
    if dag is not None and not hasattr(dag, "get_template_env"):
        return {k: v for k, v in context.items() if k != "dag"}
    return context


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _mail_groups(contacts: Sequence[Notifications]) -> dict[str, list[str]]:
    """Addresses per SMTP connection (contacts without a connection are only logged)."""
    groups: dict[str, list[str]] = {}
    for c in contacts:
        if c.smtp_conn_id and c.emails:
            groups[c.smtp_conn_id] = _unique([*groups.get(c.smtp_conn_id, []), *c.emails])
    return groups


@dataclass(frozen=True)
class TaskState:
    """One task instance of a DAG run: its task id, map index (-1 when not mapped), rendered name, state."""

    task_id: str
    map_index: int
    state: str | None
    rendered_map_index: str | None = None

    def label(self) -> str:
        if self.map_index < 0:
            return self.task_id
        name = f" {self.rendered_map_index}" if self.rendered_map_index not in (None, str(self.map_index)) else ""
        return f"{self.task_id}[{self.map_index}]{name}"


def _from_state_key(task_ids: set[str], key: str, state: str | None) -> TaskState:
    """``GetTaskStates`` names a mapped instance ``<task_id>_<map_index>`` and others ``<task_id>``."""
    m = _MAPPED_KEY.fullmatch(key)
    if key not in task_ids and m and m["task_id"] in task_ids:
        return TaskState(m["task_id"], int(m["map_index"]), state)
    return TaskState(key, -1, state)


def run_task_states(dag: Any, run_id: str) -> list[TaskState]:
    """Every task instance of one DAG run, sorted by task id and map index.

    In the DAG processor (and in tasks) the Task SDK's supervisor channel answers;
    ``dag.test()`` calls DAG callbacks without that channel, in the process that
    holds the metadata DB session, which then answers (with rendered map indexes).
    """
    from airflow.sdk.execution_time import task_runner

    if getattr(task_runner, "SUPERVISOR_COMMS", None) is not None:
        states = task_runner.RuntimeTaskInstance.get_task_states(dag_id=dag.dag_id, run_ids=[run_id])
        task_ids = set(dag.task_dict)
        out = [_from_state_key(task_ids, k, v) for k, v in states.get(run_id, {}).items()]
    else:
        from airflow.models.taskinstance import TaskInstance as TI
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            rows = session.execute(select(TI.task_id, TI.map_index, TI.state, TI.rendered_map_index)
                                   .where(TI.dag_id == dag.dag_id, TI.run_id == run_id)).all()
        out = [TaskState(r.task_id, r.map_index, r.state, r.rendered_map_index) for r in rows]
    return sorted(out, key=lambda t: (t.task_id, t.map_index))


def failure_message(what: str, dag_id: str, run_id: str, reason: str | None, tasks: Sequence[TaskState] | None,
                    *, run_url: str | None = None, ignore: Iterable[str] = ()) -> tuple[str, str]:
    """Subject and body of a failed-run message; ``tasks`` None when they could not be listed."""
    lines = [f"DAG {dag_id}, run {run_id} failed" + (f" ({reason})." if reason else ".")]
    if tasks is None:
        lines.append("Its failed task instances could not be listed (see the DAG processor log).")
    else:
        skip = set(ignore)
        failed = [t for t in tasks if t.state == "failed"]
        shown = [t for t in failed if t.task_id not in skip] or failed
        lines.append(f"{len(shown)} failed task instance(s):" if shown else "No task instance failed.")
        lines += [f"  - {t.label()}" for t in shown[:MAX_LISTED]]
        if len(shown) > MAX_LISTED:
            lines.append(f"  ... and {len(shown) - MAX_LISTED} more")
        blocked = sum(t.state == "upstream_failed" for t in tasks)
        if blocked:
            lines.append(f"{blocked} task instance(s) did not run because of them (upstream_failed).")
    if run_url:
        lines.append(f"Run: {run_url}")
    return f"[EMM SDC] {what} failed: {dag_id} run {run_id}", "\n".join(lines)


def _run_url(dag_id: str, run_id: str) -> str:
    from airflow.sdk.configuration import conf

    base = conf.get("api", "base_url", fallback="http://localhost:8080/")
    return f"{base.rstrip('/')}/dags/{dag_id}/runs/{quote(run_id)}"


class DagFailureNotifier(_PerCallNotifier):
    """DAG-level ``on_failure_callback``: one message per failed run, listing its failed task instances.

    ``ignore`` names watcher tasks (e.g. ``fail_if_any_failed``) left out of the
    list when other tasks failed too.
    """

    def __init__(self, what: str, contacts: Sequence[Notifications], *, ignore: Sequence[str] = ()):
        super().__init__()
        self.what = what
        self.contacts = list(contacts)
        self.ignore = tuple(ignore)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render (the message is built in :meth:`notify`).

        Airflow's own rendering would need ``context["dag"].get_template_env()``,
        which the serialized DAG that ``dag.test()`` puts in the context lacks.
        """

    def notify(self, context: Any) -> None:
        dag, run_id = context["dag"], context["run_id"]
        try:
            tasks: list[TaskState] | None = run_task_states(dag, run_id)
        except Exception:
            log.exception("could not list the task instances of %s run %s", dag.dag_id, run_id)
            tasks = None
        subject, body = failure_message(self.what, dag.dag_id, run_id, context.get("reason"), tasks,
                                        run_url=_run_url(dag.dag_id, run_id), ignore=self.ignore)
        SdcNotifier(subject, body, contacts=self.contacts).notify(context)


def dag_failure_notifier(contacts: Notifications | Sequence[Notifications], what: str, *,
                         ignore: Sequence[str] = ()) -> DagFailureNotifier:
    """DAG-level failure callback telling ``contacts`` once per failed run which task instances failed."""
    return DagFailureNotifier(what, [contacts] if isinstance(contacts, Notifications) else contacts, ignore=ignore)


def operators_notifier(subject: str, body: str) -> SdcNotifier:
    """A message to the operators named in the site config (``include/sdc.yaml``)."""
    from emm_sdc.core.site_config import operators

    return SdcNotifier.from_config(operators(), subject, body)
