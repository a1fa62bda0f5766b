"""Public releases: candidates, manifests and withdrawals (publishing's transaction is in core/release.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class ReleasesMixin(CatalogBase):
    def release_by_name(self, name: str) -> Row | None:
        return self._first("release_by_name", {"name": name})

    def release_candidates(self, *, instrument: str, levels: Sequence[str], kernel_classes: Sequence[str],
                           start: datetime, end: datetime, carry_over: bool) -> list[Row]:
        """The latest, unreleased, never withdrawn products one instrument's rules release in a window."""
        return self.query("release_candidates", {
            "instrument_id": instrument, "levels": list(levels), "pred_rec": list(kernel_classes), "start": start,
            "end": end, "carry_over": carry_over})

    def release_manifest(self, release_id: int) -> list[Row]:
        return self.query("release_manifest", {"release_id": release_id})

    def release_state_of_files(self, file_names: Sequence[str]) -> list[Row]:
        """Files by name with the release that released them (if any)."""
        return self.query("release_state_of_files", {"file_names": list(file_names)})

    def files_to_verify(self, ids: Sequence[int]) -> list[Row]:
        return self.query("files_to_verify", {"ids": list(ids)})

    def release_preview(self, ids: Sequence[int], start: datetime) -> list[Row]:
        """A dry run's would-be manifest rows."""
        return self.query("release_preview", {"ids": list(ids), "start": start})

    def withdrawals_of_run(self, dag_id: str, dag_run_id: str) -> list[Row]:
        return self.query("withdrawals_of_run", {"dag_id": dag_id, "dag_run_id": dag_run_id})
