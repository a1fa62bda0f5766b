"""Product catalog in PostgreSQL: migrations and the :class:`Catalog` of typed operations.

Works on any DB-API 2 connection with pyformat parameters (psycopg 3 or psycopg2, as the postgres
provider's hook returns). SQL lives in ``include/sql``: ``migrations/NNNN_<name>.sql`` (ordered,
idempotent) and ``queries/*.sql`` (blocks headed ``-- name: <query name>``). Pipeline code calls the
catalog's methods, which run those queries by name; the methods are grouped by area in
:mod:`emm_sdc.core.catalog_ops` (files, runs, kernels, images, campaigns, ...).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emm_sdc.core import naming
from emm_sdc.core.catalog_ops.base import (  # noqa: F401 - re-exported: the catalog's SQL machinery
    CatalogBase,
    CatalogError,
    Row,
    _rows,
    queries,
    run,
    sql_dir,
    transaction,
)
from emm_sdc.core.catalog_ops.calibration import CalibrationMixin
from emm_sdc.core.catalog_ops.campaigns import CampaignsMixin
from emm_sdc.core.catalog_ops.files import FilesMixin
from emm_sdc.core.catalog_ops.images import ImagesMixin
from emm_sdc.core.catalog_ops.kernels import KernelsMixin
from emm_sdc.core.catalog_ops.packets import PacketsMixin
from emm_sdc.core.catalog_ops.reconciliation import ReconciliationMixin
from emm_sdc.core.catalog_ops.releases import ReleasesMixin
from emm_sdc.core.catalog_ops.reports import ReportsMixin
from emm_sdc.core.catalog_ops.runs import RunsMixin

_MIGRATION = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

GEOMETRY_FIELDS = (
    "mars_ls", "spacecraft_lst", "subsolar_lat", "subsolar_lon",
    "spacecraft_lat", "spacecraft_lon", "spacecraft_alt",
)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(directory: Path | None = None) -> list[Migration]:
    """The ordered migrations; file names must be ``NNNN_<name>.sql`` with unique numbers."""
    found: list[Migration] = []
    for path in sorted((directory or sql_dir() / "migrations").glob("*.sql")):
        m = _MIGRATION.match(path.name)
        if not m:
            raise CatalogError(f"{path}: migration files are named NNNN_<lowercase_name>.sql")
        found.append(Migration(int(m["version"]), m["name"], path.read_text(encoding="utf-8")))
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise CatalogError(f"duplicate migration numbers in {directory or sql_dir() / 'migrations'}")
    return found


def migrate(conn: Any, directory: Path | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied.

    An applied migration whose file changed afterwards is an error: migrations
    are append-only.
    """
    applied_now: list[str] = []
    with transaction(conn) as cur:
        cur.execute(queries()["schema_migrations_table"])
    for mig in migrations(directory):
        with transaction(conn) as cur:
            run(cur, "migration_lock")
            done = {r["version"]: r for r in run(cur, "applied_migrations")}
            if mig.version in done:
                if done[mig.version]["checksum"] != mig.checksum:
                    raise CatalogError(
                        f"migration {mig.version:04d}_{mig.name}.sql changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            cur.execute(mig.sql)
            run(cur, "record_migration", {"version": mig.version, "name": mig.name, "checksum": mig.checksum})
            applied_now.append(f"{mig.version:04d}_{mig.name}")
    return applied_now


def file_record(
    name: naming.EmmName,
    *,
    size: int,
    md5: str,
    bucket: str,
    processing_run_id: int | None = None,
    geometry: Mapping[str, float | None] | None = None,
    meta_kernel_id: int | None = None,
) -> dict[str, Any]:
    """The ``science_files`` row for an archived file (EMM API record fields)."""
    key = name.archive_key
    geometry = geometry or {}
    return {
        "file_name": name.file_name,
        "directory_path": key.rsplit("/", 1)[0],
        "file_size": size,
        "instrument_id": name.instrument,
        "data_level": name.level,
        "timetag": name.start,
        "descriptor": name.descriptor,
        "mode": name.mode,
        "orbit_number": name.orbit,
        "pred_rec": name.kernel,
        "version": name.version,
        "revision": name.revision,
        "file_root": name.file_root,
        "absolute_version": name.absolute_version,
        "md5checksum": md5,
        "product_type": name.product_type,
        "bucket": bucket,
        "s3_key": key,
        "processing_run_id": processing_run_id,
        "meta_kernel_id": meta_kernel_id,
        **{f: geometry.get(f) for f in GEOMETRY_FIELDS},
    }


def delivery_params(
    instrument: str, outcome: str, md5: str | None, size: int | None, *, inbox_key: str, dag_id: str | None,
    dag_run_id: str | None, delivery_id: str | None = None, inbox_version: str | None = None,
    file_id: int | None = None, kernel_id: int | None = None, quarantine_id: int | None = None,
) -> dict[str, Any]:
    """The parameters of ``insert_delivery``: one delivery and what became of it (one row per delivery id)."""
    return {"instrument_id": instrument, "inbox_key": inbox_key, "md5checksum": md5, "file_size": size,
            "outcome": outcome, "file_id": file_id, "kernel_id": kernel_id, "quarantine_id": quarantine_id,
            "dag_id": dag_id, "dag_run_id": dag_run_id, "delivery_id": delivery_id, "inbox_version": inbox_version}


class Catalog(
    FilesMixin, RunsMixin, KernelsMixin, ImagesMixin, CampaignsMixin, CalibrationMixin, ReleasesMixin,
    ReconciliationMixin, ReportsMixin, PacketsMixin, CatalogBase,
):
    """Catalog operations over one DB-API connection (the ingest's own below, the rest by area in the mixins)."""

    def get_file(self, file_name: str) -> dict[str, Any] | None:
        rows = self.query("file_by_name", {"file_name": file_name})
        return rows[0] if rows else None

    def last_delivery(self, instrument: str) -> dict[str, Any] | None:
        """The instrument's most recently handled delivery (``received_at``, ``inbox_key``, ``outcome``)."""
        rows = self.query("last_delivery", {"instrument_id": instrument})
        return rows[0] if rows else None

    def files(self, file_names: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self.query("files_by_names", {"file_names": list(file_names)})
        return {r["file_name"]: r for r in rows}

    def file_by_identity(self, file_name: str) -> dict[str, Any] | None:
        """The indexed file a name denotes, whatever the case of its time separator."""
        rows = self.query("file_by_identity", {"file_name": file_name})
        return rows[0] if rows else None

    def delivery(self, delivery_id: str) -> dict[str, Any] | None:
        """The logged outcome of one delivery, if it was handled."""
        rows = self.query("delivery_by_id", {"delivery_id": delivery_id})
        return rows[0] if rows else None

    def archive_delivery(
        self, record: Mapping[str, Any], *, inbox_key: str, delivery_id: str | None = None,
        inbox_version: str | None = None, dag_id: str | None, dag_run_id: str | None,
    ) -> tuple[str, dict[str, Any]]:
        """Index one archived delivery and log it, atomically.

        Returns ``("archived", row)``, or ``("exists", row)`` without logging when
        the name (or its identity) is already indexed, by an earlier attempt or a
        concurrent run: the caller decides between duplicate and conflict.
        """
        with transaction(self.conn) as cur:
            inserted = run(cur, "insert_file_if_new", record)
            if not inserted:
                existing = run(cur, "file_by_identity", {"file_name": record["file_name"]})
                if not existing:
                    raise CatalogError(f"{record['file_name']}: its archive key {record['s3_key']} is indexed "
                                       "under another name")
                return "exists", existing[0]
            run(cur, "insert_delivery", delivery_params(
                record["instrument_id"], "archived", record["md5checksum"], record["file_size"],
                file_id=inserted[0]["id"], inbox_key=inbox_key, delivery_id=delivery_id, inbox_version=inbox_version,
                dag_id=dag_id, dag_run_id=dag_run_id))
            return "archived", {**record, "id": inserted[0]["id"]}

    def log_delivery(
        self, outcome: str, file_row: Mapping[str, Any], *, inbox_key: str, delivery_id: str | None = None,
        inbox_version: str | None = None, dag_id: str | None, dag_run_id: str | None,
    ) -> None:
        """Log a delivery of an indexed file (e.g. a duplicate); once per delivery."""
        self.query("insert_delivery", delivery_params(
            file_row["instrument_id"], outcome, file_row["md5checksum"], file_row["file_size"], file_id=file_row["id"],
            inbox_key=inbox_key, delivery_id=delivery_id, inbox_version=inbox_version, dag_id=dag_id,
            dag_run_id=dag_run_id))

    def quarantine(
        self,
        *,
        instrument: str,
        original_key: str,
        quarantine_key: str,
        reason_code: str,
        reason: str,
        details: Mapping[str, Any],
        md5: str | None,
        size: int | None,
        dag_id: str | None,
        dag_run_id: str | None,
        delivery_id: str | None = None,
        inbox_version: str | None = None,
    ) -> int:
        """Record a quarantined delivery and log it, atomically; return the quarantine id (once per key)."""
        with transaction(self.conn) as cur:
            qid = run(cur, "insert_quarantine", {
                "instrument_id": instrument, "original_key": original_key, "quarantine_key": quarantine_key,
                "reason_code": reason_code, "reason": reason, "details": json.dumps(details, default=str),
                "md5checksum": md5, "file_size": size, "dag_id": dag_id, "dag_run_id": dag_run_id,
                "delivery_id": delivery_id,
            })[0]["id"]
            run(cur, "insert_delivery", delivery_params(
                instrument, "quarantined", md5, size, quarantine_id=qid, inbox_key=original_key,
                delivery_id=delivery_id, inbox_version=inbox_version, dag_id=dag_id, dag_run_id=dag_run_id))
            return qid

    def start_run(self, *, try_number: int, staging_check_id: int | None = None, **fields: Any) -> int:
        """Open a processing run (``running``); its id. ``try_number`` is the task instance's real try."""
        return self._new_id("start_run", {**fields, "try_number": try_number, "staging_check_id": staging_check_id})

    def finish_run(
        self, run_id: int, *, status: str, ended_at: datetime, exit_status: int | None,
        message: str | None = None, log_uri: str | None = None,
    ) -> None:
        self.query("finish_run", {
            "run_id": run_id, "status": status, "ended_at": ended_at, "exit_status": exit_status,
            "message": message, "log_uri": log_uri,
        })

    def index_products(
        self,
        run_id: int,
        products: Sequence[tuple[Mapping[str, Any], Sequence[str]]],
        *,
        ended_at: datetime,
        log_uri: str | None,
    ) -> list[int]:
        """Index a job's products with lineage and close its run, all in one transaction.

        ``products`` pairs each file record with the names of its inputs. Any
        error (a missing input, a name already indexed with other content)
        rolls everything back: a job is indexed whole or not at all.
        """
        ids: list[int] = []
        with transaction(self.conn) as cur:
            for record, inputs in products:
                inserted = run(cur, "insert_file_if_new", {**record, "processing_run_id": run_id})
                if not inserted:
                    existing = run(cur, "file_by_identity", {"file_name": record["file_name"]})
                    by = f" (by processing run {existing[0]['processing_run_id']})" if existing else ""
                    raise CatalogError(f"{record['file_name']} is already indexed{by}; a new product needs a "
                                       "new version or revision")
                product_id = inserted[0]["id"]
                found = {r["file_name"]: r["id"] for r in run(cur, "files_by_names", {"file_names": list(inputs)})}
                missing = sorted(set(inputs) - set(found))
                if missing:
                    raise CatalogError(f"{record['file_name']}: inputs not in the catalog: {missing}")
                for input_id in found.values():
                    run(cur, "insert_lineage", {"product_id": product_id, "input_id": input_id})
                ids.append(product_id)
            run(cur, "finish_run", {
                "run_id": run_id, "status": "success", "ended_at": ended_at, "exit_status": 0,
                "message": f"indexed {len(ids)} product(s)", "log_uri": log_uri,
            })
            run(cur, "release_reservations", {"run_id": run_id})
        return ids
