"""Notifications: always logged; the provider notifiers are used only when a connection is named."""

from __future__ import annotations

import logging

import pytest

from emm_sdc.core.config import Notifications
from emm_sdc.notify import SdcNotifier, failure_notifier


def test_logs_subject_and_body_without_connections(caplog: pytest.LogCaptureFixture) -> None:
    n = SdcNotifier.from_config(Notifications(emails=["itf@example.org"]), "3 files quarantined", "- a: empty")
    with caplog.at_level(logging.WARNING, logger="emm_sdc.notify"):
        n.notify({})
    assert "3 files quarantined" in caplog.text and "- a: empty" in caplog.text


def test_smtp_is_used_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple] = []

    class FakeSmtp:
        def __init__(self, **kw: object) -> None:
            sent.append(("smtp", kw["to"], kw["smtp_conn_id"], kw["subject"]))

        def notify(self, context: object) -> None:
            sent.append(("sent",))

    monkeypatch.setattr("airflow.providers.smtp.notifications.smtp.SmtpNotifier", FakeSmtp)
    cfg = Notifications(emails=["itf@example.org"], smtp_conn_id="itf_smtp")
    SdcNotifier.from_config(cfg, "subject", "body").notify({})
    assert sent == [("smtp", ["itf@example.org"], "itf_smtp", "subject"), ("sent",)]


def test_failure_notifier_is_templated() -> None:
    n = failure_notifier(Notifications(), "processing")
    assert "{{ dag.dag_id }}" in n.subject and "{{ exception }}" in n.body
    assert n.template_fields == ("subject", "body")
