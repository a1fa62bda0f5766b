"""Notifications to operators and ITFs: always logged; e-mail and Slack when configured.

E-mail and Slack go through the smtp and slack providers' own notifiers, using
the connection ids an ITF names in its YAML (credentials stay in Airflow
connections).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseNotifier

from emm_sdc.core.config import Notifications

log = logging.getLogger("emm_sdc.notify")


class SdcNotifier(BaseNotifier):
    """Sends one message to everyone an ITF config lists.

    Usable as a task/DAG callback (``on_failure_callback=SdcNotifier(...)``) or
    called directly from a task with a rendered subject and body.
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
    ):
        super().__init__()
        self.subject = subject
        self.body = body
        self.emails = list(emails)
        self.smtp_conn_id = smtp_conn_id
        self.slack_conn_id = slack_conn_id
        self.slack_channel = slack_channel

    @classmethod
    def from_config(cls, cfg: Notifications, subject: str, body: str) -> SdcNotifier:
        return cls(subject, body, emails=cfg.emails, smtp_conn_id=cfg.smtp_conn_id,
                   slack_conn_id=cfg.slack_conn_id, slack_channel=cfg.slack_channel)

    def notify(self, context: Any) -> None:
        log.warning("NOTIFY %s\n%s", self.subject, self.body)
        if self.smtp_conn_id and self.emails:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            SmtpNotifier(to=self.emails, subject=self.subject, html_content=f"<pre>{self.body}</pre>",
                         smtp_conn_id=self.smtp_conn_id).notify(context)
        if self.slack_conn_id:
            from airflow.providers.slack.notifications.slack import SlackNotifier

            kwargs: dict[str, Any] = {"slack_conn_id": self.slack_conn_id, "text": f"*{self.subject}*\n{self.body}"}
            if self.slack_channel:
                kwargs["channel"] = self.slack_channel
            SlackNotifier(**kwargs).notify(context)


def failure_notifier(cfg: Notifications, what: str) -> SdcNotifier:
    """Callback for failed tasks: names the DAG run, task and the error."""
    return SdcNotifier.from_config(
        cfg,
        subject=f"[EMM SDC] {what} failed: {{{{ dag.dag_id }}}} / {{{{ ti.task_id }}}}",
        body="Run {{ run_id }}, try {{ ti.try_number }}: {{ exception }}\nLog: {{ ti.log_url }}",
    )
