"""A broken ITF YAML never stops an instrument: last-good fallback, the emm_config_check DAG, ./sdc deliver.

Real parts: the DAG folder parsed by Airflow's DagBag, emm_config_check run with ``dag.test()`` on the
test metadata DB, mail through the smtp provider to a small SMTP server on loopback, the moto S3 server.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any

import pytest

from emm_sdc.core import config_store
from emm_sdc.core.settings import get_settings
from tests.helpers import mail_text, smtp_capture, smtp_conn_json, write_configs

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "fixtures" / "bad_configs"
EXI_DAGS = {f"emm_exi_{k}" for k in ("ingest", "process", "reprocess", "staging_check")}
ITF_MAIL = "exi-lastgood@example.org"
OPS_MAIL = "ops@example.org"


@pytest.fixture
def smtp_server() -> Iterator[Any]:
    with smtp_capture() as server:
        yield server


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, smtp_server: Any) -> Path:
    """Config copies (no retries) whose EXI contacts mail through the test SMTP server; site config likewise."""

    def contacts(inst: str, data: dict[str, Any]) -> None:
        if inst == "exi":
            data["notifications"] = {"emails": [ITF_MAIL], "smtp_conn_id": "emm_test_smtp"}

    configs = write_configs(tmp_path / "include" / "itf_configs", contacts)
    (tmp_path / "include" / "sdc.yaml").write_text(
        f"operators:\n  emails: [{OPS_MAIL}]\n  smtp_conn_id: emm_test_smtp\n")
    monkeypatch.setenv("AIRFLOW_CONN_EMM_TEST_SMTP", smtp_conn_json(smtp_server))
    monkeypatch.setenv("EMM_CONFIG_DIR", str(configs))
    monkeypatch.setenv("EMM_LAST_GOOD_DIR", str(tmp_path / "last-good"))
    get_settings.cache_clear()
    return configs


def _check_run() -> tuple[str, dict[str, str]]:
    """emm_config_check run for real (dag.test); its state and each task's state."""
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from emm_sdc.pipeline.config_check import build_config_check_dag

    run = build_config_check_dag().test()
    with create_session() as session:
        rows = session.execute(select(TI.task_id, TI.state).where(TI.dag_id == "emm_config_check",
                                                                  TI.run_id == run.run_id)).all()
    return str(run.state), {r.task_id: str(r.state) for r in rows}


def _bag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"), safe_mode=False)


def _subject(mail: dict[str, Any]) -> str:
    return str(make_header(decode_header(mail["message"]["Subject"])))


def _body(mail: dict[str, Any]) -> str:
    return mail_text(mail)


def test_broken_yaml_runs_on_its_last_good_copy_and_the_check_fails_loudly(
        site: Path, airflow_db: None, smtp_server: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from emm_sdc.pipeline.config_check import run_check

    # 1. Valid configs: every check green, a last-good copy of each kept.
    state, tasks = _check_run()
    assert (state, tasks) == ("success", {f"check_{n}": "success" for n in ("exi", "emu", "emr", "site")})
    assert sorted(p.name for p in get_settings().last_good_dir.iterdir()) == [
        "emirs.yaml", "emus.yaml", "exi.yaml", "sdc.yaml"]
    assert smtp_server.mails == []

    # 2. The ITF pushes a broken exi.yaml (other contacts, retries 2): the DAGs stay, from the kept copy.
    shutil.copy(BAD / "bad_schedule.yaml", site / "exi.yaml")
    bag = _bag()
    assert bag.import_errors == {}
    assert set(bag.dag_ids) >= EXI_DAGS
    for dag_id in EXI_DAGS:
        dag = bag.dags[dag_id]
        assert config_store.FALLBACK_TAG in dag.tags, dag_id
        assert dag.doc_md.startswith(f"> **Running on the last-good config.** `{site / 'exi.yaml'}` is invalid "
                                     "(1 problem(s)), so this DAG is built from its last valid copy, kept less than "
                                     "an hour ago"), dag_id
        assert "> - `ingest.schedule`: must be a cron expression" in dag.doc_md
    assert bag.dags["emm_exi_ingest"].get_task("handle_file").retries == 0  # the copy's, not the broken file's 2
    assert all(config_store.FALLBACK_TAG not in d.tags for d in bag.dags.values() if d.dag_id not in EXI_DAGS)

    # 3. The check fails for exi only and tells the ITF (contacts of the copy) and the operators, once.
    state, tasks = _check_run()
    assert state == "failed"
    assert tasks == {"check_exi": "failed", "check_emu": "success", "check_emr": "success", "check_site": "success"}
    [mail] = smtp_server.mails
    assert mail["to"] == [ITF_MAIL, OPS_MAIL]
    assert _subject(mail) == "[EMM SDC] invalid exi ITF config: exi.yaml"
    body = _body(mail)
    assert f"{site / 'exi.yaml'} (exi ITF config) is invalid: 1 problem(s)" in body
    assert "  - ingest.schedule: must be a cron expression or one of" in body
    assert "The SDC keeps running on its last-good copy, kept less than an hour ago" in body
    with pytest.raises(AirflowFailException, match=r"- ingest\.schedule: must be a cron expression") as err:
        run_check("exi", {})  # what the failed task raised (its log): file, field, rule
    assert str(site / "exi.yaml") in str(err.value)
    state, _ = _check_run()
    assert state == "failed" and len(smtp_server.mails) == 1  # same problems: not told again within 24 h

    # 4. Fixed: the check is green again, says so once, and the DAGs lose the fallback marks.
    shutil.copy(config_store.copy_path(config_store.instrument_file("exi")), site / "exi.yaml")
    state, tasks = _check_run()
    assert state == "success" and set(tasks.values()) == {"success"}
    [_, fixed] = smtp_server.mails
    assert _subject(fixed) == "[EMM SDC] exi ITF config valid again: exi.yaml" and fixed["to"] == [ITF_MAIL, OPS_MAIL]
    bag = _bag()
    assert bag.import_errors == {}
    assert all(config_store.FALLBACK_TAG not in bag.dags[d].tags for d in EXI_DAGS)
    assert not bag.dags["emm_exi_ingest"].doc_md.startswith("> **Running on the last-good config.**")


def test_fresh_install_with_a_broken_yaml_is_an_import_error_saying_no_copy_exists(
        site: Path, smtp_server: Any) -> None:
    from emm_sdc.pipeline.config_check import run_check

    shutil.copy(BAD / "level_twice.yaml", site / "exi.yaml")
    bag = _bag()
    assert list(bag.import_errors) == [str(ROOT / "dags" / "emm_exi.py")]
    message = next(iter(bag.import_errors.values()))
    assert str(site / "exi.yaml") in message and "processing.chain.2.level" in message
    assert f"no last-good copy to fall back on (none kept in {get_settings().last_good_dir})" in message
    assert not EXI_DAGS & set(bag.dag_ids) and "emm_emu_ingest" in bag.dag_ids
    with pytest.raises(Exception, match="There is no last-good copy to run on"):
        run_check("exi", {})
    [mail] = smtp_server.mails
    assert mail["to"] == [OPS_MAIL]  # no valid copy names the ITF's contacts


def test_broken_site_config_fails_check_site_and_tells_the_copys_operators(site: Path, smtp_server: Any) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    from emm_sdc.pipeline.config_check import run_check

    assert run_check("site", {})["kept"] is True
    (site.parent / "sdc.yaml").write_text("operators:\n  emails: [ops@example.org]\n  smtp_conn_id: 'smtp server'\n")
    with pytest.raises(AirflowFailException, match=r"operators\.smtp_conn_id: an Airflow connection id uses"):
        run_check("site", {})
    [mail] = smtp_server.mails
    assert mail["to"] == [OPS_MAIL] and _subject(mail) == "[EMM SDC] invalid site config: sdc.yaml"


def test_deliver_refuses_to_upload_on_a_broken_config(site: Path, tmp_path: Path, s3_server: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from emm_dev import cli

    client = s3_server.client()
    if "emm-sdc-inbox" not in [b["Name"] for b in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket="emm-sdc-inbox")

    def inbox() -> list[str]:
        return sorted(o["Key"] for p in client.get_paginator("list_objects_v2").paginate(Bucket="emm-sdc-inbox")
                      for o in p.get("Contents", []))

    state = tmp_path / "standalone"
    state.mkdir()
    (state / "services.json").write_text(json.dumps({"s3_endpoint": s3_server.endpoint}))
    before = inbox()
    shutil.copy(BAD / "bad_prefix.yaml", site / "emus.yaml")
    assert cli.main(["deliver", "--state-dir", str(state), "--orbits", "13"]) == 1
    out = capsys.readouterr().out
    assert "refusing to deliver" in out and "nothing was uploaded" in out
    assert f"{site / 'emus.yaml'}: " in out
    assert inbox() == before and not (state / "moc").exists()
    # The same delivery with valid configs uploads (so the refusal above is the check's doing).
    shutil.copy(ROOT / "include" / "itf_configs" / "emus.yaml", site / "emus.yaml")
    try:
        assert cli.main(["deliver", "--state-dir", str(state), "--orbits", "13"]) == 0
        new = sorted(set(inbox()) - set(before))
        assert {k.split("/")[1] for k in new} == {"exi", "emu", "emr"}
    finally:
        for key in sorted(set(inbox()) - set(before)):
            client.delete_object(Bucket="emm-sdc-inbox", Key=key)
