"""The product write protocol: a job's products are indexed whole or leave nothing behind.

Steps of :class:`ProductWriter` (called by ``collect`` in pipeline/process.py),
and what a failure at each point leaves:

1. **reserve** — one transaction records, per product, the archive key and MD5
   this processing run is about to write (``pending_objects``, unique per key).
   Fails → nothing written. A key held by another *running* run → this job
   fails cleanly; held by a finished run (its clean-up failed) → that run is
   swept first.
2. **upload** — each object is created only if its key is new
   (``If-None-Match: *``, Content-MD5). Fails, or its reply is lost → the
   reservation names the object, so step 5 or the sweeper removes it. The key
   exists with our MD5 → an earlier attempt of this run wrote it: adopted.
3. **commit** — one transaction inserts the products (unique name, identity,
   key and (file root, version)), their lineage, closes the run as
   ``success`` and drops its reservations. An error whose commit nevertheless
   reached the server (lost acknowledgement) is recognised by re-reading the
   run's status; an unreadable status leaves everything for the retry or the
   sweeper, which decide from the catalog.
4. **retry** — a rerun of ``collect`` for a run already ``success`` returns
   its products (nothing redone); otherwise it re-reserves (its own keys),
   adopts its own uploads and commits.
5. **abandon** — on a failure before commit, only objects this run reserved,
   that hold this run's MD5 and that no catalog row names are deleted, then
   the reservations are dropped. If that fails too the run stays ``running``
   with its reservations; :func:`sweep_run` finishes it later.

No Airflow here; the catalog is the source of truth between attempts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emm_sdc.core.catalog import Catalog, CatalogError
from emm_sdc.core.storage import DestinationExists, Storage

log = logging.getLogger(__name__)
#: A processing run still 'running' this long after it started is swept by ``emm_processing_sweep``
#: (longer than any job may run: the YAML caps ``timeout_minutes`` at 24 h).
STALE_AFTER = timedelta(hours=26)


class KeyReserved(CatalogError):
    """Another processing run is writing this product right now."""


@dataclass(frozen=True)
class PlannedObject:
    path: Path
    key: str
    md5: str


class ProductWriter:
    """Writes one processing run's products under the protocol above."""

    def __init__(self, cat: Catalog, storage: Storage, bucket: str, run_id: int):
        self.cat = cat
        self.storage = storage
        self.bucket = bucket
        self.run_id = run_id

    def reserve(self, objects: Sequence[PlannedObject]) -> None:
        """Record this run's intent to write each key (step 1)."""
        for obj in objects:
            for _ in range(2):
                if self.cat.reserve_object(self.run_id, self.bucket, obj.key, obj.md5):
                    break
                holder = self.cat.reservation_of_key(self.bucket, obj.key)
                if holder is None:
                    continue  # released meanwhile: try again
                if holder["processing_run_id"] == self.run_id:
                    if holder["md5checksum"].strip() != obj.md5:
                        raise CatalogError(f"{obj.key}: an earlier attempt of this run reserved it for other "
                                           f"bytes (MD5 {holder['md5checksum']}); the job's outputs changed")
                    break
                if holder["run_status"] == "running":
                    raise KeyReserved(f"{obj.key} is being written by processing run {holder['processing_run_id']}"
                                      f" ({holder['dag_id']} / {holder['dag_run_id']}); this job leaves it alone")
                stale = self.cat.run_by_id(holder["processing_run_id"])
                if stale is None:
                    raise CatalogError(f"{obj.key}: reserved by processing run {holder['processing_run_id']}, "
                                       "which the catalog no longer has")
                sweep_run(self.cat, self.storage, stale,
                          f"its reservation of {obj.key} was left behind; cleared by run {self.run_id}")
            else:
                raise KeyReserved(f"{obj.key} could not be reserved")

    def upload(self, obj: PlannedObject) -> bool:
        """Create one reserved object if its key is new (step 2); False when an earlier attempt wrote it."""
        try:
            created = self.storage.write_once(self.bucket, obj.key, obj.md5, lambda: self.storage.upload_new(
                obj.path, self.bucket, obj.key, md5=obj.md5))
        except DestinationExists as exc:
            raise CatalogError(f"s3://{self.bucket}/{obj.key} already holds other bytes (MD5 {exc.held_md5}); "
                               "products are never overwritten") from None
        if not created:
            log.info("s3://%s/%s was uploaded by an earlier attempt of this run; adopted", self.bucket, obj.key)
        return created

    def commit(self, products: Sequence[tuple[Mapping[str, Any], Sequence[str]]], *, ended_at: datetime,
               log_uri: str | None) -> list[int]:
        """Index the products, close the run, drop the reservations, in one transaction (step 3)."""
        try:
            return self.cat.index_products(self.run_id, products, ended_at=ended_at, log_uri=log_uri)
        except Exception:
            if self.committed():
                log.warning("the index transaction of run %s committed although the client saw an error",
                            self.run_id)
                return [r["id"] for r in self.cat.products_of_run_id(self.run_id)]
            raise

    def committed(self) -> bool:
        """Whether this run's index transaction reached the server (raises if the catalog cannot tell)."""
        row = self.cat.run_by_id(self.run_id)
        return row is not None and row["status"] == "success"

    def abandon(self) -> list[str]:
        """Remove what this run wrote and did not commit, then its reservations (step 5); the keys removed."""
        return abandon_reservations(self.cat, self.storage, self.run_id)


def abandon_reservations(cat: Catalog, storage: Storage, run_id: int) -> list[str]:
    """Delete a run's uncommitted objects (only bytes it reserved, never an indexed key); drop its reservations."""
    removed: list[str] = []
    for res in cat.reservations_of_run(run_id):
        version = storage.stat(res["bucket"], res["s3_key"]) if res["file_id"] is None else None
        if version is not None and version.stored_md5 == res["md5checksum"].strip() and storage.delete_version(version):
            removed.append(res["s3_key"])
        cat.release_reservation(res["id"])
    return removed


def sweep_run(cat: Catalog, storage: Storage, run: Mapping[str, Any], reason: str) -> list[str]:
    """Finish a run that will never finish itself: remove its uncommitted objects, mark it failed."""
    removed = abandon_reservations(cat, storage, run["id"])
    cat.fail_stale_run(run["id"], ended_at=datetime.now(UTC),
                       message=f"swept: {reason}" + (f"; removed {removed}" if removed else ""))
    log.warning("processing run %s swept (%s); removed %d uncommitted object(s)", run["id"], reason, len(removed))
    return removed


def sweep_stale_runs(cat: Catalog, storage: Storage, *, dag_id: str | None, dag_run_id: str | None,
                     older_than: datetime, reason: str) -> list[dict[str, Any]]:
    """Close every processing run of one DAG run, or older than ``older_than``, that is still 'running'
    (it can no longer close itself); remove its uncommitted objects."""
    swept = []
    for run in cat.stale_runs(dag_id, dag_run_id, older_than):
        removed = sweep_run(cat, storage, run, reason)
        swept.append({"run_id": run["id"], "task": f"{run['task_id']}[{run['map_index']}]", "removed": removed})
    return swept
