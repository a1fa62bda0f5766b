"""Calibration files and sets (versioned write-once; archiving itself is in core/calibration.py)."""

from __future__ import annotations

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class CalibrationMixin(CatalogBase):
    def latest_calibration_set_version(self, instrument: str) -> int | None:
        return self.query("latest_calibration_set_version", {"instrument_id": instrument})[0]["set_version"]

    def calibration_set_files(self, instrument: str, set_version: int) -> list[Row]:
        """Set N: the latest version of every file name with ``set_version`` <= N."""
        return self.query("calibration_set_files", {"instrument_id": instrument, "set_version": set_version})

    def calibration_files_of(self, instrument: str) -> list[Row]:
        """Every version of every calibration file of an instrument, in set order."""
        return self.query("calibration_files_of", {"instrument_id": instrument})

    def calibration_archived_in_run(self, dag_id: str, dag_run_id: str) -> list[Row]:
        return self.query("calibration_archived_in_run", {"dag_id": dag_id, "dag_run_id": dag_run_id})
