"""Staging checks of candidate ITF images and their promotions to production."""

from __future__ import annotations

import json
from collections.abc import Sequence

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class ImagesMixin(CatalogBase):
    def start_staging_check(self, *, instrument: str, candidate_image: str, production_image: str | None,
                            dag_id: str, dag_run_id: str, reference_inputs: Sequence[str]) -> int:
        """Open (or, for the same DAG run, reopen) a staging check; its id."""
        return self._new_id("start_staging_check", {
            "instrument_id": instrument, "candidate_image": candidate_image, "production_image": production_image,
            "dag_id": dag_id, "dag_run_id": dag_run_id, "reference_inputs": json.dumps(list(reference_inputs))})

    def finish_staging_check(self, check_id: int, *, status: str, summary: str, report_uri: str | None) -> None:
        self.query("finish_staging_check", {"check_id": check_id, "status": status, "summary": summary,
                                            "report_uri": report_uri})

    def staging_checks_of(self, instrument: str) -> list[Row]:
        return self.query("staging_checks_of", {"instrument_id": instrument})

    def runs_of_staging_check(self, check_id: int) -> list[Row]:
        """The processing runs of a staging check's jobs (linked by ``processing_runs.staging_check_id``)."""
        return self.query("runs_of_staging_check", {"check_id": check_id})

    def latest_passed_check(self, instrument: str, image: str) -> Row | None:
        return self._first("latest_passed_check", {"instrument_id": instrument, "image": image})

    def production_image_row(self, instrument: str) -> Row | None:
        """The instrument's most recent promotion (None before the first)."""
        return self._first("production_image", {"instrument_id": instrument})

    def record_promotion(self, *, instrument: str, image: str, previous_image: str | None, staging_check_id: int,
                         promoted_by: str, reason: str | None) -> int:
        return self._new_id("record_promotion", {
            "instrument_id": instrument, "image": image, "previous_image": previous_image,
            "staging_check_id": staging_check_id, "promoted_by": promoted_by, "reason": reason})
