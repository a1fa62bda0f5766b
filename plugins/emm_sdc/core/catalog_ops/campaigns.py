"""Reprocessing campaigns, their runs, and what a file's change affects."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class CampaignsMixin(CatalogBase):
    def upsert_campaign(self, **fields: Any) -> int:
        """The campaign of ``campaign_key`` (created on first use); its id. Fields as ``upsert_campaign``."""
        return self._new_id("upsert_campaign", fields)

    def open_campaign_run(self, *, campaign_id: int, dag_id: str, dag_run_id: str, clear_number: int,
                          interval_start: datetime | None, interval_end: datetime | None, inputs: int) -> int:
        """Open (or reopen, after a clear of the same number) one DAG run of a campaign; its id."""
        return self._new_id("open_campaign_run", {
            "campaign_id": campaign_id, "dag_id": dag_id, "dag_run_id": dag_run_id, "clear_number": clear_number,
            "interval_start": interval_start, "interval_end": interval_end, "inputs": inputs})

    def close_campaign_run(self, campaign_run_id: int, *, status: str, inputs: int, remade: int, skipped: int,
                           failed: int, planned: str | None) -> None:
        self.query("close_campaign_run", {
            "campaign_run_id": campaign_run_id, "status": status, "inputs": inputs, "remade": remade,
            "skipped": skipped, "failed": failed, "planned": planned})

    def campaign_run_of_dag_run(self, dag_id: str, dag_run_id: str) -> Row | None:
        """The latest campaign run (highest clear number) of a DAG run, with its campaign's key and reason."""
        return self._first("campaign_run_by_dag_run", {"dag_id": dag_id, "dag_run_id": dag_run_id})

    def job_counts_of_campaign_run(self, campaign_run_id: int) -> dict[str, int]:
        """``remade``, ``skipped`` and ``failed`` over the last attempt of each job of a campaign run."""
        row = self.query("job_counts_of_campaign_run", {"campaign_run_id": campaign_run_id})[0]
        return {k: int(row[k]) for k in ("remade", "skipped", "failed")}

    def campaigns_summary(self, instrument: str | None, limit: int) -> list[Row]:
        return self.query("campaigns_summary", {"instrument_id": instrument, "limit": limit})

    def observation_range(self, instrument: str) -> Row:
        """``first``, ``last`` L0 observation time and the number of L0 ``files``."""
        return self.query("observation_range", {"instrument_id": instrument})[0]

    def product_versions_in_use(self, instrument: str) -> list[Row]:
        """Per level: the highest product version among the latest products."""
        return self.query("product_versions_in_use", {"instrument_id": instrument})

    def impact_of_file(self, file_name: str) -> list[Row]:
        """Everything made from a file, transitively, with ``depth``, ``superseded`` and ``stale``."""
        return self.query("impact_of_file", {"file_name": file_name})
