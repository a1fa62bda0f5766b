"""The catalog's typed operations: pipeline code runs no query by name, and staging runs point at their check
through a foreign key (migration 0014, which links the runs of earlier checks from their old reason text)."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emm_sdc.core import catalog
from emm_sdc.core.catalog import Catalog

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "plugins" / "emm_sdc"
#: Where a query may be run by its name: the catalog class and its mixins.
CATALOG_CODE = {PACKAGE / "core" / "catalog.py", *(PACKAGE / "core" / "catalog_ops").glob("*.py")}


def test_pipeline_code_calls_typed_catalog_methods() -> None:
    named = re.compile(r"""\.query\(\s*["'][a-z_0-9]+["']""")
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sorted(PACKAGE.rglob("*.py")) if p not in CATALOG_CODE
                 for n, line in enumerate(p.read_text().splitlines(), 1) if named.search(line)]
    assert offenders == [], "run named queries through a Catalog method (core/catalog_ops), not .query(name)"


def _run_fields(**kw: Any) -> dict[str, Any]:
    return {"dag_id": "emm_emr_staging_check", "dag_run_id": "manual__1", "task_id": "image.l1.prepare",
            "map_index": 0, "try_number": 1, "instrument_id": "emr", "data_level": "l1", "work_unit": "w",
            "runner": "docker", "processor_name": "p", "processor_version": "1", "image": "img:1",
            "environment": "staging", "meta_kernel": None, "reason": None, "started_at": datetime.now(UTC), **kw}


@pytest.fixture
def fresh_db(pg_server: Any) -> Any:
    db = f"emm_ops_{datetime.now(UTC):%H%M%S%f}"
    pg_server._server.psql(f'CREATE DATABASE "{db}";')
    conn = pg_server.connect(db)
    yield conn
    conn.close()
    pg_server._server.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);')


def test_migration_0014_links_earlier_staging_runs_once(fresh_db: Any, tmp_path: Path) -> None:
    before = tmp_path / "before"
    before.mkdir()
    for mig in sorted((catalog.sql_dir() / "migrations").glob("*.sql")):
        if int(mig.name[:4]) < 14:
            shutil.copy(mig, before / mig.name)
    catalog.migrate(fresh_db, before)
    cat = Catalog(fresh_db)
    checks = [cat.query("start_staging_check", {
        "instrument_id": "emr", "candidate_image": f"img:{i}", "production_image": None,
        "dag_id": "emm_emr_staging_check", "dag_run_id": f"manual__{i}", "reference_inputs": "[]"})[0]["id"]
        for i in range(12)]
    one, twelve = checks[0], checks[11]
    assert (one, twelve) == (1, 12)
    old_start = ("INSERT INTO processing_runs (dag_id, dag_run_id, task_id, map_index, try_number, instrument_id, "
                 "data_level, work_unit, runner, processor_name, processor_version, environment, reason, started_at, "
                 "status) VALUES ('d', 'r', 't', 0, 1, 'emr', 'l1', 'w', 'docker', 'p', '1', %s, %s, now(), 'failed') "
                 "RETURNING id")
    rows = {}
    with catalog.transaction(fresh_db) as cur:
        for key, env, reason in [
            ("check1", "staging", "staging check 1 (candidate image img:0)"),
            ("check12", "staging", "staging check 12 (production image img:11)"),
            ("operator", "production", "staging check 1 follow-up, asked by the ITF"),  # free text: not a link
            ("none", "production", None),
        ]:
            cur.execute(old_start, (env, reason))
            rows[key] = cur.fetchone()[0]
    assert next(m.split("_", 1)[0] for m in catalog.migrate(fresh_db)) == "0014"  # then any later ones
    linked = {r["id"]: r["staging_check_id"] for r in cat.query("runs_of_level", {"instrument_id": "emr",
                                                                                   "data_level": "l1"})}
    assert linked == {rows["check1"]: one, rows["check12"]: twelve, rows["operator"]: None, rows["none"]: None}
    assert [r["id"] for r in cat.runs_of_staging_check(one)] == [rows["check1"]]
    # Idempotent: the whole file again changes nothing and fails on nothing.
    with catalog.transaction(fresh_db) as cur:
        cur.execute((catalog.sql_dir() / "migrations" / "0014_staging_run_link.sql").read_text())
    assert {r["id"]: r["staging_check_id"] for r in cat.query("runs_of_level", {"instrument_id": "emr",
                                                                                 "data_level": "l1"})} == linked
    # New runs are linked when they are opened, whatever their reason says; a link must name a real check.
    new = cat.start_run(**_run_fields(reason="anything"), staging_check_id=twelve)
    assert [r["id"] for r in cat.runs_of_staging_check(twelve)] == [rows["check12"], new]
    with pytest.raises(Exception, match="staging_check_id"):
        cat.start_run(**_run_fields(), staging_check_id=999)


def test_kernel_indexing_is_one_catalog_transaction(catalog_conn: Any) -> None:
    """A kernel, its coverage, its delivery and the superseding of its series commit together, once."""
    from types import SimpleNamespace

    cat = Catalog(catalog_conn)
    t0, t1 = datetime(2021, 2, 1, tzinfo=UTC), datetime(2021, 3, 1, tzinfo=UTC)

    def record(version: int) -> dict[str, Any]:
        name = f"emm_spk_r_20210201_20210301_v{version:02d}.bsp"
        return {"file_name": name, "kernel_type": "spk", "kernel_class": "r", "version": version,
                "coverage_start": t0, "coverage_end": t1, "md5checksum": "0" * 32, "file_size": 1, "bucket": "b",
                "s3_key": f"emm/spice/spk/{name}", "series": "spk/r", "kind": "SPK", "dag_run_id": "r1"}

    def delivery(n: int) -> dict[str, Any]:
        return catalog.delivery_params("spice", "archived", "0" * 32, 1, inbox_key=f"inbox/spice/k{n}",
                                       dag_id="emm_spice_refresh", dag_run_id="r1", delivery_id=f"d{n}")

    coverage = {-62: [SimpleNamespace(start=t0, end=t1)]}
    first = cat.index_kernel(record(1), coverage, delivery(1))
    assert first is not None and cat.index_kernel(record(1), coverage, delivery(2)) is None
    second = cat.index_kernel(record(2), coverage, delivery(3))
    assert cat.kernel_by_name(record(1)["file_name"])["superseded_by"] == second
    assert [k["id"] for k in cat.active_kernels()] == [second]
    assert [(c["kernel_class"], c["file_name"]) for c in cat.hope_coverage()] == [("r", record(2)["file_name"])]
    assert [d["inbox_key"] for d in cat.run_deliveries("emm_spice_refresh", "r1")] == ["inbox/spice/k1",
                                                                                       "inbox/spice/k3"]
