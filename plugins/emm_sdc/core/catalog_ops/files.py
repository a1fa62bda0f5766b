"""Science files, deliveries and lineage: what the pipeline asks of ``science_files``."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class FilesMixin(CatalogBase):
    def run_deliveries(self, dag_id: str, dag_run_id: str) -> list[Row]:
        """Every delivery one DAG run handled, with its quarantine reason when it was quarantined."""
        return self.query("run_deliveries", {"dag_id": dag_id, "dag_run_id": dag_run_id})

    def files_archived_in_run(self, dag_id: str, dag_run_id: str, data_level: str) -> list[Row]:
        """The files of a level that one ingest run archived (``file_name``, ``s3_key``, ``data_level``)."""
        return self.query("files_of_run", {"dag_id": dag_id, "dag_run_id": dag_run_id, "data_level": data_level})

    def products_made_in_run(self, dag_id: str, dag_run_id: str, data_level: str) -> list[Row]:
        """The products of a level that one processing run indexed."""
        return self.query("products_of_run", {"dag_id": dag_id, "dag_run_id": dag_run_id, "data_level": data_level})

    def science_l0_of_orbits(self, instrument: str, orbits: Sequence[int]) -> list[Row]:
        """The latest L0 files of the given orbits, in time order."""
        return self.query("science_l0_by_orbit", {"instrument_id": instrument, "orbits": list(orbits)})

    def science_l0_between(self, instrument: str, start: datetime, end: datetime) -> list[Row]:
        """The latest L0 files observed in ``[start, end)``, in time order."""
        return self.query("science_l0_by_time", {"instrument_id": instrument, "start": start, "end": end})

    def l0_of_latest_orbit(self, instrument: str) -> list[Row]:
        """The L0 files of the instrument's most recent archived orbit."""
        return self.query("latest_science_l0", {"instrument_id": instrument})

    def unprocessed_inputs(self, instrument: str, input_level: str, target_level: str) -> list[Row]:
        """Latest files of ``input_level`` that no ``target_level`` product lists as an input."""
        return self.query("unprocessed_inputs", {"instrument_id": instrument, "input_level": input_level,
                                                 "target_level": target_level})

    def descendants_at_level(self, root_ids: Sequence[int], data_level: str) -> list[Row]:
        """Every file (all versions) of a level that descends from the given files."""
        return self.query("descendants_at_level", {"root_ids": list(root_ids), "data_level": data_level})

    def children_at_level(self, input_ids: Sequence[int], data_level: str) -> list[Row]:
        """Direct products of a level made from the given files, each with the ``input_id`` it came from."""
        return self.query("children_at_level", {"input_ids": list(input_ids), "data_level": data_level})

    def versions_of_roots(self, ids: Sequence[int]) -> list[int]:
        """Ids of every version of the given files' roots."""
        return [r["id"] for r in self.query("versions_of_roots", {"ids": list(ids)})]

    def l0_roots(self, product_ids: Sequence[int]) -> list[str]:
        """Names of the L0 files the given products descend from."""
        return [r["file_name"] for r in self.query("l0_roots", {"product_ids": list(product_ids)})]
