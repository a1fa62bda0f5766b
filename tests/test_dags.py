"""DAG folder: every DAG imports cleanly and cheaply; a broken ITF YAML breaks only its own DAGs."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest
import yaml
from airflow.dag_processing.dagbag import DagBag

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("ingest", "process", "reprocess", "staging_check")
EXPECTED = {f"emm_{inst}_{kind}" for inst in ("exi", "emu", "emr") for kind in KINDS} | {
    "emm_catalog_migrate", "emm_image_promote", "emm_spice_refresh", "emm_processing_sweep",
    "emm_public_release", "emm_release_withdraw", "emm_delivery_watch", "emm_config_check", "emm_integrity_reconcile"}


def _bag() -> DagBag:
    return DagBag(dag_folder=str(ROOT / "dags"), safe_mode=False)


@pytest.fixture(scope="module")
def bag() -> DagBag:
    return _bag()


def test_no_import_errors_and_every_dag_present(bag: DagBag) -> None:
    assert bag.import_errors == {}
    assert set(bag.dag_ids) == EXPECTED


def test_tags_owners_and_retries(bag: DagBag) -> None:
    for dag in bag.dags.values():
        assert "emm" in dag.tags, dag.dag_id
        assert dag.doc_md, dag.dag_id
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag.dag_id}.{t.task_id} has no owner"
            assert t.retries is not None
    ingest = bag.dags["emm_exi_ingest"]
    assert ingest.get_task("handle_file").retries == 2  # from exi.yaml
    assert ingest.get_task("wait_for_delivery").deferrable is True


def test_failures_are_reported_once_per_run(bag: DagBag) -> None:
    """A DAG-level failure callback everywhere (ITF + operators, or operators only); none per task."""
    from emm_sdc.core.config import load_instrument
    from emm_sdc.core.site_config import operators
    from emm_sdc.notify import DagFailureNotifier

    ops = operators()
    assert ops.emails == ["sdc-ops@example.org"]  # include/sdc.yaml
    for dag in bag.dags.values():
        # These notify themselves, once per change (tests/e2e/test_config_check.py, tests/e2e/test_alerts.py).
        if dag.dag_id in ("emm_config_check", "emm_delivery_watch"):
            assert not dag.on_failure_callback
            continue
        callback = dag.on_failure_callback
        assert isinstance(callback, DagFailureNotifier), f"{dag.dag_id} has no DAG-level failure callback"
        inst = dag.dag_id.split("_")[1]
        itf = [load_instrument(inst).notifications] if inst in ("exi", "emu", "emr") else []
        assert callback.contacts == [*itf, ops], dag.dag_id
        for t in dag.tasks:
            assert not t.on_failure_callback, f"{dag.dag_id}.{t.task_id} has a per-task failure callback"


def test_processing_chain_follows_the_yaml(bag: DagBag) -> None:
    cfg = yaml.safe_load((ROOT / "include/itf_configs/exi.yaml").read_text())
    dag = bag.dags["emm_exi_process"]
    for step in cfg["processing"]["chain"]:
        for part in ("prepare", "run", "collect"):
            assert f"unit.{step['level']}.{part}" in dag.task_ids
    l2a_prepare = dag.get_task("unit.l2a.prepare")
    assert "unit.l1.collect" in l2a_prepare.upstream_task_ids
    assert dag.get_task("unit.l1.prepare").upstream_task_ids == {"plan_units"}


def test_parsing_does_no_network_io(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("DAG files must not open network connections at parse time")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    assert _bag().import_errors == {}


def test_broken_yaml_breaks_only_its_instrument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for f in (ROOT / "include/itf_configs").glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    exi = yaml.safe_load((tmp_path / "exi.yaml").read_text())
    exi["processing"]["runner"]["timeout_minutes"] = 0
    (tmp_path / "exi.yaml").write_text(yaml.safe_dump(exi))
    monkeypatch.setenv("EMM_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv("EMM_LAST_GOOD_DIR", str(tmp_path / "last-good"))  # none kept: no fallback
    bag = _bag()
    assert list(bag.import_errors) == [str(ROOT / "dags" / "emm_exi.py")]
    message = next(iter(bag.import_errors.values()))
    assert str(tmp_path / "exi.yaml") in message
    assert "processing.runner.timeout_minutes: Input should be greater than or equal to 1" in message
    assert f"no last-good copy to fall back on (none kept in {tmp_path / 'last-good'})" in message
    assert set(bag.dag_ids) == EXPECTED - {f"emm_exi_{k}" for k in ("ingest", "process", "reprocess", "staging_check")}


def test_airflow_plugin_loader_leaves_the_package_alone() -> None:
    """Airflow imports every plugins/ file as a top-level module named after it unless ignored: only the
    plugin module itself (emm_plugin.py) is loaded that way; the emm_sdc package is imported as a package."""
    from airflow._shared.module_loading import find_path_from_directory

    loaded = list(find_path_from_directory(str(ROOT / "plugins"), ".airflowignore", "glob"))
    assert [Path(p).name for p in loaded if p.endswith(".py")] == ["emm_plugin.py"]


def test_reprocess_dag_is_backfillable_and_in_its_lane(bag: DagBag) -> None:
    """A periodic (daily, from orbit insertion) timetable so Airflow allows backfills; active at creation so
    backfill runs are scheduled; every chain task in the reprocessing pool at low priority, daily's at high."""
    from datetime import UTC, datetime

    from airflow.serialization.encoders import coerce_to_core_timetable

    dag = bag.dags["emm_exi_reprocess"]
    timetable = coerce_to_core_timetable(dag.timetable)  # what the scheduler and the backfill API see
    assert timetable.periodic and timetable.summary == "0 0 * * *"
    assert dag.start_date == datetime(2021, 2, 9, tzinfo=UTC) and dag.catchup is False
    assert dag.is_paused_upon_creation is False and dag.max_active_runs == 2
    assert set(dag.params) == {"reason", "from_level", "force", "dry_run", "files", "campaign"}
    assert dag.params.get_param("from_level").schema["enum"] == [None, "l1", "l2a", "l1ql"]
    assert len([t for t in dag.tasks if t.task_id.startswith("unit.")]) == 9
    assert {(t.pool, t.priority_weight) for t in dag.tasks} == {("emm_exi_reprocessing", 1)}
    assert {(t.pool, t.priority_weight) for t in bag.dags["emm_exi_process"].tasks} == {("emm_exi_daily", 100)}
    assert "reprocess" not in bag.dags["emm_exi_process"].params  # remaking is the reprocess DAG's job


def test_each_kind_of_work_runs_on_its_celery_queue(bag: DagBag, monkeypatch: pytest.MonkeyPatch) -> None:
    """Deliveries on emm_ingest, daily processing on emm_daily, reprocessing and staging checks on
    emm_reprocessing, the platform DAGs on the default queue; with EMM_LANE_QUEUES=off (MWAA) all on the default."""
    from emm_sdc.core.settings import get_settings
    from emm_sdc.lanes import QUEUES

    def queues(b: DagBag) -> dict[str, set[str]]:
        return {dag_id: {t.queue for t in dag.tasks} for dag_id, dag in b.dags.items()}

    want = {}
    for dag_id in EXPECTED:
        kind = dag_id.removeprefix("emm_").split("_", 1)[-1]
        work = {"ingest": "ingest", "process": "daily", "reprocess": "reprocessing",
                "staging_check": "reprocessing"}.get(kind)
        want[dag_id] = {QUEUES[work] if work else "default"}
    want["emm_spice_refresh"] = {QUEUES["ingest"]}
    assert queues(bag) == want
    monkeypatch.setenv("EMM_LANE_QUEUES", "off")
    get_settings.cache_clear()
    try:
        assert set().union(*queues(_bag()).values()) == {"default"}
        monkeypatch.setenv("EMM_LANE_QUEUES", "sometimes")
        get_settings.cache_clear()
        with pytest.raises(ValueError, match="EMM_LANE_QUEUES='sometimes' must be 'on' or 'off'"):
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_every_task_says_what_it_does_and_what_to_do_when_it_fails(bag: DagBag) -> None:
    """Task Documentation (doc_md) on every task an operator may open (issue 13)."""
    missing = [(dag_id, t.task_id) for dag_id, dag in sorted(bag.dags.items()) for t in dag.tasks
               if "**What it does**" not in (t.doc_md or "") or "**If it fails**" not in (t.doc_md or "")]
    assert missing == []
