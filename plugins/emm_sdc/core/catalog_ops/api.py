"""The science-files API's queries (plugins/emm_sdc/api), over any :class:`QueryRunner`.

The API mixes this into its own connection pool (statements sent unprepared, so PostgreSQL plans each
with the actual values). ``visibility`` is the caller's ``see_all`` / ``own_instruments``
(:func:`emm_sdc.api.auth.visibility`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from emm_sdc.core.catalog_ops.base import QueryRunner, Row


class ApiQueriesMixin(QueryRunner):
    def api_science_files(self, filters: Mapping[str, Any], visibility: Mapping[str, Any], limit: int) -> list[Row]:
        """``/science-files-metadata``: records matching the filters the caller may see, newest first."""
        return self.query("api_science_files", {**filters, **visibility, "limit": limit})

    def api_versions_of(self, file_name: str, visibility: Mapping[str, Any]) -> list[Row]:
        return self.query("api_versions_of", {"file_name": file_name, **visibility})

    def api_lineage_of(self, file_id: int, visibility: Mapping[str, Any]) -> list[Row]:
        return self.query("api_lineage_of", {"id": file_id, **visibility})

    def api_run_of(self, file_id: int) -> list[Row]:
        return self.query("api_run_of", {"id": file_id})

    def api_quicklooks_of(self, file_names: Sequence[str], visibility: Mapping[str, Any]) -> list[Row]:
        return self.query("api_quicklooks_of", {"file_names": list(file_names), **visibility})

    def api_file_indexed(self, file_name: str) -> bool:
        """Whether the name (whatever the case of its time separator) is indexed."""
        return bool(self.query("file_by_identity", {"file_name": file_name}))

    def api_processing_runs(self, instruments: Sequence[str], run_id: int | None, limit: int) -> list[Row]:
        return self.query("api_processing_runs", {"instrument_ids": list(instruments), "run_id": run_id,
                                                  "limit": limit})
