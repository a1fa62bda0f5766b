"""CCSDS sequence-count checks of delivered L0/HK files (migration 0013)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emm_sdc.core.catalog_ops.base import CatalogBase, Row, run, transaction


class PacketsMixin(CatalogBase):
    def record_packet_sequence(
        self, report: Mapping[str, Any], *, delivery_id: str, instrument: str, file_name: str, rule: str,
        verdict: str, summary: str, dag_id: str | None, dag_run_id: str | None,
    ) -> bool:
        """Record one delivery's CCSDS sequence-count check (``packets.SequenceReport.to_dict()``) with its
        APIDs, atomically; once per delivery (a retry keeps the first). True when it was new."""
        with transaction(self.conn) as cur:
            new = run(cur, "insert_packet_sequence_check", {
                "delivery_id": delivery_id, "instrument_id": instrument, "file_name": file_name, "rule": rule,
                "verdict": verdict, "summary": summary, "dag_id": dag_id, "dag_run_id": dag_run_id,
                **{k: report[k] for k in ("packets", "gaps", "missing", "repeats", "out_of_order")},
            })
            for apid in report["apids"] if new else ():
                run(cur, "insert_packet_sequence_apid", {"delivery_id": delivery_id, **apid})
        return bool(new)

    def packet_sequence_anomalies(self, dag_id: str | None, dag_run_id: str | None) -> list[Row]:
        """Deliveries of one ingest run with sequence-count gaps, repeats or out-of-order packets."""
        return self.query("run_packet_sequence_anomalies", {"dag_id": dag_id, "dag_run_id": dag_run_id})

    def packet_sequence_of_file(self, file_name: str) -> Row | None:
        """The sequence-count check (with per-APID ``apids``) of the delivery that archived ``file_name``."""
        return self._first("packet_sequence_of_file", {"file_name": file_name})
