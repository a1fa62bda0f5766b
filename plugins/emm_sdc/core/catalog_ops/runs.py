"""Processing runs: their records, job hashes ("nothing changed") and archive-key reservations."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class RunsMixin(CatalogBase):
    def run_by_id(self, run_id: int) -> Row | None:
        return self._first("run_by_id", {"run_id": run_id})

    def products_of_run_id(self, run_id: int) -> list[Row]:
        """The products a processing run indexed, by name."""
        return self.query("products_of_run_id", {"run_id": run_id})

    def set_run_identity(self, run_id: int, *, input_hash: str | None, hash_inputs: str | None, forced: bool,
                         lane: str, calibration_version: int | None, campaign_run_id: int | None) -> None:
        """Record a job's hash (and the document hashed), lane, calibration set and campaign run."""
        self.query("set_run_identity", {
            "run_id": run_id, "input_hash": input_hash, "hash_inputs": hash_inputs, "forced": forced, "lane": lane,
            "calibration_version": calibration_version, "campaign_run_id": campaign_run_id})

    def record_run_inputs(self, run_id: int, hashes: Mapping[str, str]) -> None:
        """The per-input hashes (input file name -> hash) of a run's job."""
        self.query("record_run_inputs", {"run_id": run_id, "hashes": list(hashes.values()), "names": list(hashes)})

    def record_skipped_job(self, **fields: Any) -> int:
        """A ``skipped`` processing run (a job not remade); the fields of ``record_skipped_job``."""
        return self._new_id("record_skipped_job", fields)

    def set_run_meta_kernel(self, run_id: int, meta_kernel_id: int) -> None:
        self.query("set_run_meta_kernel", {"run_id": run_id, "meta_kernel_id": meta_kernel_id})

    def set_run_processor(self, run_id: int, name: str, version: str) -> None:
        """What actually ran, as the processor reports it."""
        self.query("set_run_processor", {"run_id": run_id, "processor_name": name, "processor_version": version})

    def successful_run_with_hash(self, input_hash: str | None) -> Row | None:
        return self._first("successful_run_with_hash", {"input_hash": input_hash})

    def active_run_with_hash(self, input_hash: str, *, other_than: int | None) -> Row | None:
        """Another run of the same job hash that is running or succeeded."""
        return self._first("active_run_with_hash", {"input_hash": input_hash, "run_id": other_than})

    def inputs_already_made(self, hashes: list[str]) -> dict[str, int]:
        """Which of the per-input hashes a successful run made: hash -> the latest such run id."""
        return {r["input_hash"]: r["run_id"] for r in self.query("inputs_already_made", {"hashes": hashes})}

    def skip_run(self, run_id: int, message: str) -> None:
        """Close a running run as skipped (a closed run stays as it is)."""
        self.query("skip_run", {"run_id": run_id, "message": message})

    def fail_stale_run(self, run_id: int, *, ended_at: datetime, message: str) -> None:
        """Close a run that will never close itself as failed (one that finished meanwhile stays)."""
        self.query("fail_stale_run", {"run_id": run_id, "ended_at": ended_at, "message": message})

    def stale_runs(self, dag_id: str, dag_run_id: str, older_than: datetime) -> list[Row]:
        """Runs still ``running`` of one DAG run, or of any DAG run started before ``older_than``."""
        return self.query("stale_runs", {"dag_id": dag_id, "dag_run_id": dag_run_id, "older_than": older_than})

    def runs_of_level(self, instrument: str, data_level: str) -> list[Row]:
        return self.query("runs_of_level", {"instrument_id": instrument, "data_level": data_level})

    # --- reservations of archive keys (core/product_writes.py) ---

    def reserve_object(self, run_id: int, bucket: str, s3_key: str, md5: str) -> bool:
        """Reserve an archive key for a run's upload; False when another reservation holds it."""
        return bool(self.query("reserve_object", {"run_id": run_id, "bucket": bucket, "s3_key": s3_key,
                                                  "md5checksum": md5}))

    def reservation_of_key(self, bucket: str, s3_key: str) -> Row | None:
        """The reservation holding a key, with its run's status and DAG run."""
        return self._first("reservation_of_key", {"bucket": bucket, "s3_key": s3_key})

    def reservations_of_run(self, run_id: int) -> list[Row]:
        """A run's reservations, each with the ``file_id`` indexed at its key (None if none)."""
        return self.query("reservations_of_run", {"run_id": run_id})

    def release_reservation(self, reservation_id: int) -> None:
        self.query("release_reservation", {"id": reservation_id})
