"""Integrity reconciliation: its runs, partitions, findings and audited repairs (core/reconcile.py).

The merge itself streams the ``recon_rows_*`` queries through server-side cursors in a snapshot
(core/reconcile.py); everything else it asks of the catalog is here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emm_sdc.core.catalog_ops.base import CatalogBase, Row, queries, run

_LAST_KEY = "\U0010ffff"


class ReconciliationMixin(CatalogBase):
    def last_reconciliation(self, dag_id: str) -> Row | None:
        """The latest finished, unscoped run of the DAG (its deep-verification slice continues from there)."""
        return self._first("recon_last_run", {"dag_id": dag_id})

    def open_reconciliation(self, *, dag_id: str, dag_run_id: str, params_json: str, deep_start: Any,
                            deep_fraction: float | None, listing: str) -> Row:
        """Open (or reopen, for the same DAG run) a reconciliation run; ``id``, ``deep_*``, ``started_at``."""
        return self.query("recon_open_run", {"dag_id": dag_id, "dag_run_id": dag_run_id, "params": params_json,
                                             "deep_start": deep_start, "deep_fraction": deep_fraction,
                                             "listing": listing})[0]

    def reconciliation_run(self, run_id: int) -> Row:
        return self.query("recon_run", {"run_id": run_id})[0]

    def close_reconciliation(self, run_id: int, *, status: str, counts_json: str, stats_json: str,
                             report_prefix: str | None) -> None:
        self.query("recon_close_run", {"run_id": run_id, "status": status, "counts": counts_json,
                                       "stats": stats_json, "report_prefix": report_prefix})

    def clear_partition_findings(self, run_id: int, partition: str) -> None:
        """Forget a partition's findings (a retried partition reports afresh)."""
        self.query("recon_clear_partition", {"run_id": run_id, "name": partition})

    def save_partition(self, run_id: int, *, name: str, kind: str, objects: int, catalog_rows: int,
                       verified_objects: int, verified_bytes: int, findings: int, seconds: float) -> None:
        self.query("recon_save_partition", {
            "run_id": run_id, "name": name, "kind": kind, "objects": objects, "catalog_rows": catalog_rows,
            "verified_objects": verified_objects, "verified_bytes": verified_bytes, "findings": findings,
            "seconds": seconds})

    def reconciliation_partitions(self, run_id: int) -> list[Row]:
        return self.query("recon_partitions", {"run_id": run_id})

    def add_findings(self, findings: Sequence[Mapping[str, Any]]) -> None:
        """Insert findings (the parameters of ``recon_insert_finding``) in one transaction."""
        with self._transaction() as cur:
            cur.executemany(queries()["recon_insert_finding"], list(findings))

    def reconciliation_findings(self, run_id: int) -> list[Row]:
        return self.query("recon_findings", {"run_id": run_id})

    def set_repair(self, finding_id: int, *, status: str, result: str) -> None:
        """Audit a repair on its finding (``applied`` stamps the time)."""
        self.query("recon_set_repair", {"id": finding_id, "status": status, "result": result})

    def pending_keys(self, bucket: str, lo: str, hi: str | None) -> set[str]:
        """Archive keys in ``[lo, hi)`` a processing run reserved and may be writing now."""
        rows = self.query("recon_pending_keys", {"bucket": bucket, "lo": lo, "hi": hi or _LAST_KEY})
        return {r["s3_key"] for r in rows}

    def missing_marks(self, bucket: str, lo: str, hi: str | None) -> dict[str, int]:
        """Keys in ``[lo, hi)`` a repair marked missing (key -> mark id)."""
        rows = self.query("recon_missing_marks", {"bucket": bucket, "lo": lo, "hi": hi or _LAST_KEY})
        return {r["s3_key"]: r["id"] for r in rows}

    def clear_missing_mark(self, mark_id: int) -> None:
        self.query("recon_clear_missing_mark", {"id": mark_id})

    def mark_missing(self, *, bucket: str, s3_key: str, catalog_table: str, catalog_id: int, run_id: int,
                     finding_id: int) -> None:
        self.query("recon_mark_missing", {"bucket": bucket, "s3_key": s3_key, "catalog_table": catalog_table,
                                          "catalog_id": catalog_id, "run_id": run_id, "finding_id": finding_id})

    def key_indexed(self, bucket: str, key: str) -> bool:
        """Whether any catalog row names the key now (outside a run's snapshot)."""
        return bool(self.query("recon_key_indexed", {"bucket": bucket, "key": key}))

    def duplicate_latest_groups(self, instruments: Sequence[str]) -> list[Row]:
        return self.query("recon_duplicate_latest", {"instruments": list(instruments)})

    def lineage_missing_rows(self, instruments: Sequence[str]) -> list[Row]:
        return self.query("recon_lineage_missing_rows", {"instruments": list(instruments)})

    def kernel_class_mismatches(self, instruments: Sequence[str]) -> list[Row]:
        return self.query("recon_kernel_class_mismatch", {"instruments": list(instruments)})

    def inbox_deliveries(self, keys: Sequence[str]) -> list[Row]:
        """Deliveries logged for the given inbox keys, oldest first."""
        return self.query("recon_inbox_handled", {"keys": list(keys)})

    def known_delivery(self, file_name: str, md5: str, size: int) -> Row | None:
        """A logged archived/duplicate delivery of this file (any case) with these bytes."""
        return self._first("recon_known_delivery", {"file_name": file_name, "md5": md5, "size": size})

    def reindex_delivered_file(self, record: Mapping[str, Any], delivery_id: int) -> int | None:
        """Index an orphan again and point its logged delivery at the row, atomically; the new id, or None
        (nothing written) when its name, identity or key is indexed already."""
        with self._transaction() as cur:
            inserted = run(cur, "insert_file_if_new", record)
            if not inserted:
                return None
            run(cur, "recon_link_delivery", {"file_id": inserted[0]["id"], "delivery_id": delivery_id})
            return int(inserted[0]["id"])

    def quarantine_row(self, quarantine_id: int) -> Row | None:
        return self._first("recon_quarantine_row", {"id": quarantine_id})

    def rows_of_roots(self, ids: Sequence[int]) -> list[Row]:
        """``id``, ``file_name``, ``file_root``, ``absolute_version`` of the given science files."""
        return self.query("recon_rows_of_root", {"ids": list(ids)})

    def set_file_roots(self, changes: Sequence[tuple[int, str]]) -> None:
        """Set ``file_root`` of each (id, root), in one transaction."""
        with self._transaction() as cur:
            for file_id, root in changes:
                run(cur, "recon_set_file_root", {"id": file_id, "file_root": root})

    def add_quarantine_row(self, *, instrument: str, original_key: str, quarantine_key: str, reason_code: str,
                           reason: str, details_json: str, md5: str | None, size: int | None, dag_id: str | None,
                           dag_run_id: str | None, delivery_id: str | None = None) -> int:
        """A quarantine row without a delivery (e.g. an orphan moved aside); its id (once per key)."""
        return self._new_id("insert_quarantine", {
            "instrument_id": instrument, "original_key": original_key, "quarantine_key": quarantine_key,
            "reason_code": reason_code, "reason": reason, "details": details_json, "md5checksum": md5,
            "file_size": size, "dag_id": dag_id, "dag_run_id": dag_run_id, "delivery_id": delivery_id})
