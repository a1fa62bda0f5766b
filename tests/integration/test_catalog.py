"""Catalog on a real PostgreSQL: idempotent migrations, all-or-nothing indexing, latest selection."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emm_sdc.core import catalog, naming
from emm_sdc.core.catalog import Catalog, CatalogError, file_record

L0 = "emm_emr_l0_20210617T082144_0011_n_v01-00.bin"


def _run(cat: Catalog) -> int:
    return cat.start_run(
        dag_id="d", dag_run_id="r", task_id="t", map_index=0, try_number=1, instrument_id="emr",
        data_level="l1", work_unit="orbit-0011", runner="local", processor_name="p", processor_version="1",
        image=None, environment="production", meta_kernel=None, reason=None, started_at=datetime.now(UTC))


def _record(name: str, md5: str = "0" * 32) -> dict[str, Any]:
    return file_record(naming.parse(name), size=10, md5=md5, bucket="b")


def test_migrate_is_idempotent_and_detects_edited_migrations(catalog_conn: Any, tmp_path: Path) -> None:
    assert catalog.migrate(catalog_conn) == []
    edited = tmp_path / "migrations"
    shutil.copytree(catalog.sql_dir() / "migrations", edited)
    first = sorted(edited.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(CatalogError, match="changed after it was applied"):
        catalog.migrate(catalog_conn, edited)


def test_index_products_is_all_or_nothing(catalog_conn: Any) -> None:
    cat = Catalog(catalog_conn)
    cat.archive_delivery(_record(L0), inbox_key="inbox/emr/" + L0, dag_id="d", dag_run_id="r")
    run_id = _run(cat)
    good = (_record("emm_emr_l1_20210617t082144_0011_n_v01-00.fits"), [L0])
    bad = (_record("emm_emr_l1_20210618t000000_0011_n_v01-00.fits"), ["emm_emr_l0_missing.bin"])
    with pytest.raises(CatalogError, match="inputs not in the catalog"):
        cat.index_products(run_id, [good, bad], ended_at=datetime.now(UTC), log_uri=None)
    assert cat.get_file(good[0]["file_name"]) is None
    [run] = cat.query("runs_of_level", {"instrument_id": "emr", "data_level": "l1"})
    assert run["status"] == "running"
    ids = cat.index_products(run_id, [good], ended_at=datetime.now(UTC), log_uri="s3://b/log")
    assert len(ids) == 1
    with pytest.raises(CatalogError, match="already indexed"):
        cat.index_products(_run(cat), [good], ended_at=datetime.now(UTC), log_uri=None)


def test_latest_view_picks_the_highest_absolute_version(catalog_conn: Any) -> None:
    cat = Catalog(catalog_conn)
    for name in ("emm_emr_l0_20210617T082144_0011_n_v01-00.bin", "emm_emr_l0_20210617T082144_0011_n_v01-02.bin",
                 "emm_emr_l0_20210617T082144_0011_n_v00-09.bin"):
        cat.archive_delivery(_record(name), inbox_key=name, dag_id="d", dag_run_id="r")
    [latest] = cat.query("latest_of_level", {"instrument_id": "emr", "data_level": "l0"})
    assert latest["file_name"].endswith("v01-02.bin") and latest["absolute_version"] == 102


def test_same_name_other_checksum_is_never_indexed_twice(catalog_conn: Any) -> None:
    cat = Catalog(catalog_conn)
    assert cat.archive_delivery(_record(L0), inbox_key=L0, dag_id="d", dag_run_id="r")[0] == "archived"
    outcome, row = cat.archive_delivery(_record(L0, "1" * 32), inbox_key=L0, dag_id="d", dag_run_id="r")
    assert outcome == "exists" and row["md5checksum"] != "1" * 32
    assert len(cat.query("delivery_outcomes")) == 1


def test_one_identity_per_name_whatever_the_separator_case(catalog_conn: Any) -> None:
    """The unique index, not only the code, refuses a second spelling of an indexed name."""
    cat = Catalog(catalog_conn)
    cat.archive_delivery(_record(L0), inbox_key=L0, dag_id="d", dag_run_id="r")
    other = L0.replace("T", "t")
    record = {**_record(L0), "file_name": other, "s3_key": "emm/elsewhere/" + other}
    with catalog.transaction(catalog_conn) as cur:
        assert catalog.run(cur, "insert_file_if_new", record) == []  # refused by the unique index
        cur.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'science_files_identity'")
        assert "UNIQUE" in cur.fetchone()[0]
    assert cat.file_by_identity(other)["file_name"] == L0
