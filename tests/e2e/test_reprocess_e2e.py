"""Reprocessing campaigns end to end: Airflow's own backfill of ``emm_exi_reprocess`` over real runs.

EXI orbits 11 and 12 are delivered, ingested and processed by the daily lane
(L0 observed on 2021-06-17, -18, -19 and -20). The ITF then ships processor
1.1.0; a backfill over 2021-06-18..20 must remake exactly those days' products
(and their descendants), not the 17th's; an identical second backfill, a dry
run and an unchanged manual run write nothing; ``force`` remakes; the
campaign records, the impact query and ``./sdc impact`` / ``./sdc campaigns``
tell the operator what happened.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from emm_sdc.core.catalog import Catalog
from tests.helpers import archive_state, edit_configs, keep_world_dirs, make_world, run_backfill
from tests.helpers import run_dag as run

pytestmark = pytest.mark.e2e
DAY_OF = {"20210617": "06-17", "20210618": "06-18", "20210619": "06-19", "20210620": "06-20"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    yield from make_world(tmp_path_factory.mktemp("reprocess"), pg_server, s3_server)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def products(cat: Catalog) -> dict[str, dict[str, Any]]:
    return {r["file_name"]: r for r in cat.query("all_files_brief") if r["data_level"] not in ("l0", "hk")}


def day(name: str) -> str:
    return DAY_OF[name.split("_")[3][:8]]


def data_objects(world: Any) -> dict[str, str]:
    return {k: v for k, v in archive_state(world["client"], world["buckets"]["archive"]).items()
            if k.startswith("emm/data/")}


@pytest.fixture(scope="module")
def daily(world: Any) -> dict[str, Any]:
    """The daily lane made every product once; then the ITF ships a new processor version."""
    files = synthetic.generate(world["tmp"] / "moc", orbits=(11, 12), instruments=("exi",))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/exi/", files)
    states = [run("emm_exi_ingest"), run("emm_exi_process")]
    made = products(world["cat"])
    edit_configs(world["configs"], "exi", lambda d: d["processing"]["processor"].update(version="1.1.0"))
    return {"states": states, "products": made}


@pytest.fixture(scope="module")
def dry(world: Any, daily: dict[str, Any]) -> dict[str, Any]:
    before = (products(world["cat"]), data_objects(world))
    states = run_backfill("emm_exi_reprocess", "2021-06-18", "2021-06-20",
                          {"reason": "EXI processor 1.1.0 (dry run)", "dry_run": True})
    return {"states": states, "before": before, "after": (products(world["cat"]), data_objects(world))}


@pytest.fixture(scope="module")
def first(world: Any, dry: dict[str, Any]) -> dict[str, Any]:
    before = products(world["cat"])
    # the dry run's days have runs already: Airflow re-runs them only with a reprocess behaviour
    states = run_backfill("emm_exi_reprocess", "2021-06-18", "2021-06-20",
                          {"reason": "EXI processor 1.1.0", "campaign": "exi-1.1.0"}, reprocess_behavior="completed")
    return {"states": states, "before": before, "after": products(world["cat"])}


@pytest.fixture(scope="module")
def second(world: Any, first: dict[str, Any]) -> dict[str, Any]:
    before = (products(world["cat"]), data_objects(world))
    states = run_backfill("emm_exi_reprocess", "2021-06-18", "2021-06-20",
                          {"reason": "EXI processor 1.1.0", "campaign": "exi-1.1.0"}, reprocess_behavior="completed")
    return {"states": states, "before": before, "after": (products(world["cat"]), data_objects(world))}


def test_daily_lane_made_every_level_for_four_days(daily: dict[str, Any]) -> None:
    assert daily["states"] == ["success", "success"]
    assert {day(n) for n in daily["products"]} == set(DAY_OF.values())
    assert {n.split("_")[2] for n in daily["products"]} == {"l1", "l2a", "l1ql"}


def test_dry_run_reports_what_it_would_remake_and_writes_nothing(world: Any, dry: dict[str, Any]) -> None:
    assert set(dry["states"].values()) == {"success"} and len(dry["states"]) == 3
    assert dry["after"] == dry["before"]
    runs = world["cat"].query("campaign_runs_of", {"dag_id": "emm_exi_reprocess"})
    planned = [p for r in runs if r["planned"] is not None for p in r["planned"]]
    assert {p["action"] for p in planned} == {"remake"}
    assert {(p["unit"], p["level"]) for p in planned} == {(u, lvl) for u in ("orbit-0011", "orbit-0012")
                                                          for lvl in ("l1", "l2a", "l1ql")}


def test_backfill_remakes_exactly_its_days_and_their_descendants(world: Any, first: dict[str, Any]) -> None:
    assert first["states"] == {"2021-06-18": "success", "2021-06-19": "success", "2021-06-20": "success"}
    new = set(first["after"]) - set(first["before"])
    assert {day(n) for n in new} == {"06-18", "06-19", "06-20"}
    assert {(day(n), n.split("_")[2]) for n in new} == {(d, lvl) for d in ("06-18", "06-19", "06-20")
                                                        for lvl in ("l1", "l2a", "l1ql")}
    assert all(first["after"][n]["revision"] == 1 for n in new)
    assert all(p["revision"] == 0 for n, p in first["after"].items() if day(n) == "06-17")
    assert world["cat"].query("stale_latest_products", {"instrument_id": "exi"}) == []
    runs = [r for r in world["cat"].query("runs_of_level", {"instrument_id": "exi", "data_level": "l1"})
            if (r["reason"] or "").startswith("EXI processor 1.1.0 [campaign emm_exi_reprocess:exi-1.1.0]")]
    assert runs and all(r["status"] == "success" for r in runs)


def test_second_identical_backfill_changes_nothing(world: Any, second: dict[str, Any]) -> None:
    assert set(second["states"].values()) == {"success"} and len(second["states"]) == 3
    assert second["after"] == second["before"]
    [campaign] = [c for c in world["cat"].query("campaigns_summary", {"instrument_id": "exi", "limit": 20})
                  if c["campaign_key"] == "emm_exi_reprocess:exi-1.1.0"]
    # 3 days x 3 levels, each day's orbit one unit: remade once, skipped once ("nothing changed")
    assert (campaign["remade"], campaign["skipped"], campaign["failed"]) == (9, 9, 0)
    assert campaign["status"] == "done" and campaign["runs"] == 6 and campaign["kind"] == "backfill"
    assert campaign["requested_by"] == "test-operator" and campaign["reason"] == "EXI processor 1.1.0"
    assert str(campaign["range_start"])[:10] == "2021-06-18" and str(campaign["range_end"])[:10] == "2021-06-21"


def test_force_remakes_what_did_not_change(world: Any, second: dict[str, Any]) -> None:
    cat = world["cat"]
    before = products(cat)
    # orbit 12 (the 19th and 20th) was remade by the backfill with processor 1.1.0: nothing changed since
    files = [r["file_name"] for r in cat.query("science_l0_by_orbit", {"instrument_id": "exi", "orbits": [12]})]
    assert run("emm_exi_reprocess", {"files": files, "from_level": "l2a", "reason": "unchanged"}) == "success"
    assert products(cat) == before
    assert run("emm_exi_reprocess", {"files": files, "from_level": "l2a", "force": True,
                                     "reason": "forced"}) == "success"
    new = set(products(cat)) - set(before)
    assert {n.split("_")[2] for n in new} == {"l2a"}  # from l2a: l1 and its quicklook are not touched
    assert len(new) == 6 and {products(cat)[n]["revision"] for n in new} == {2}  # 2 L0 x 3 filters


def test_impact_lists_descendants_and_stale_latest_products(world: Any, first: dict[str, Any]) -> None:
    cat = world["cat"]
    l0 = next(r["file_name"] for r in cat.query("all_files_brief") if "_l0_20210618" in r["file_name"])
    rows = cat.query("impact_of_file", {"file_name": l0})
    levels = {(r["data_level"], r["superseded"]) for r in rows}
    assert ("l1", True) in levels and ("l1", False) in levels and ("l2a", False) in levels
    assert all(not r["stale"] for r in rows if not r["superseded"])


def test_cli_campaigns_and_impact_print_for_operators(world: Any, second: dict[str, Any],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from emm_dev.cli import main

    assert main(["campaigns", "--instrument", "exi"]) == 0
    out = capsys.readouterr().out
    assert "emm_exi_reprocess:exi-1.1.0" in out and "remade 9" in out and "skipped 9" in out
    l0 = next(r["file_name"] for r in world["cat"].query("all_files_brief") if "_l0_20210619" in r["file_name"])
    assert main(["impact", l0, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["file"] == l0 and report["descendants"] and report["stale_latest"] == []


def test_a_scheduled_run_never_reprocesses(world: Any, second: dict[str, Any]) -> None:
    """The DAG is active (so backfills run) and daily-scheduled; the scheduler's own runs are no-ops."""
    from tests.helpers import run_scheduled

    cat = world["cat"]
    before = (products(cat), data_objects(world), cat.query("campaigns_summary", {"instrument_id": None,
                                                                                   "limit": 100}))
    state, tasks = run_scheduled("emm_exi_reprocess", "2021-06-17")  # a day with data, not backfilled
    assert state == "success"
    assert dict(tasks)["plan"] == "skipped"
    assert {s for _t, s in tasks} == {"skipped"}
    assert (products(cat), data_objects(world),
            cat.query("campaigns_summary", {"instrument_id": None, "limit": 100})) == before


def test_a_product_version_bump_suggests_its_backfill(world: Any, second: dict[str, Any],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from emm_dev.cli import main
    from emm_sdc.campaigns import suggestions
    from emm_sdc.core.config import load_instrument
    from tests.helpers import restore_config

    cat = world["cat"]
    assert suggestions(cat, load_instrument("exi")) == []
    old = edit_configs(world["configs"], "exi", lambda d: d["processing"].update(product_version=2))
    try:
        found = suggestions(cat, load_instrument("exi"))
        assert main(["campaigns", "--instrument", "exi", "--suggest"]) == 0
    finally:
        restore_config(world["configs"], old)
    [line] = found  # one backfill from the first level; the cascade remakes the rest
    assert "airflow backfill create --dag-id emm_exi_reprocess --from-date 2021-06-17 --to-date 2021-06-20" in line
    assert '"from_level": "l1"' in line
    assert "product_version 01 -> 02" in capsys.readouterr().out
