"""The delivery watch on a real catalog: silent instruments go red, and are told once (mail on loopback)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from emm_sdc.core.catalog import Catalog, delivery_params
from emm_sdc.pipeline.delivery_watch import check_instrument
from tests.helpers import mail_text, smtp_capture, smtp_conn_json, write_configs

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def smtp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def contacts(inst: str, data: dict[str, Any]) -> None:
        data["notifications"] = {"emails": [f"{inst}-itf@example.org"], "smtp_conn_id": "emm_test_smtp"}
        data["alerts"] = {"no_delivery_hours": 6 if inst == "exi" else None}

    monkeypatch.setenv("EMM_CONFIG_DIR", str(write_configs(tmp_path / "itf_configs", contacts)))
    (tmp_path / "sdc.yaml").write_text("operators:\n  emails: [ops@example.org]\n  smtp_conn_id: emm_test_smtp\n")
    monkeypatch.setenv("EMM_SITE_CONFIG", str(tmp_path / "sdc.yaml"))
    with smtp_capture() as server:
        monkeypatch.setenv("AIRFLOW_CONN_EMM_TEST_SMTP", smtp_conn_json(server))
        yield server


def _delivered(cat: Catalog, inst: str, key: str, at: datetime) -> None:
    cat.query("insert_delivery", delivery_params(inst, "archived", "0" * 32, 1, inbox_key=key, dag_id="t",
                                                  dag_run_id="r", delivery_id=key))
    with cat.conn.cursor() as cur:  # the test's clock: when the delivery was handled
        cur.execute("UPDATE deliveries SET received_at = %s WHERE delivery_id = %s", (at, key))
    cat.conn.commit()


def test_silence_fails_the_check_and_is_mailed_once(catalog_conn: Any, smtp: Any) -> None:
    cat = Catalog(catalog_conn)
    assert check_instrument("exi", NOW)["silent"] is False  # nothing ever delivered: nothing expected yet
    _delivered(cat, "exi", "inbox/exi/old.bin", NOW - timedelta(hours=9))
    _delivered(cat, "exi", "inbox/exi/last.bin", NOW - timedelta(hours=6, minutes=20))
    with pytest.raises(AirflowFailException, match=r"no EXI delivery for 6\.3 h \(limit 6 h\)"):
        check_instrument("exi", NOW)
    [mail] = smtp.mails
    assert sorted(mail["to"]) == ["exi-itf@example.org", "ops@example.org"]
    assert "inbox/exi/last.bin" in mail_text(mail)
    with pytest.raises(AirflowFailException):  # an hour later: still red, no second mail
        check_instrument("exi", NOW + timedelta(hours=1))
    assert len(smtp.mails) == 1
    _delivered(cat, "exi", "inbox/exi/new.bin", NOW + timedelta(hours=1, minutes=30))
    assert check_instrument("exi", NOW + timedelta(hours=2))["silent"] is False  # green again
    _delivered(cat, "emu", "inbox/emu/x.bin", NOW - timedelta(days=30))
    assert check_instrument("emu", NOW) == {"instrument": "emu", "limit_hours": None, "silent": False,
                                            "last_delivery": (NOW - timedelta(days=30)).isoformat()}
