"""SPICE kernels, their coverage and meta-kernels; kernel indexing is one transaction here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from emm_sdc.core.catalog_ops.base import CatalogBase, Row, run


class KernelsMixin(CatalogBase):
    def kernel_by_name(self, file_name: str) -> Row | None:
        return self._first("kernel_by_name", {"file_name": file_name})

    def active_kernels(self) -> list[Row]:
        """Kernels no newer version of their series supersedes, by type and name."""
        return self.query("active_kernels")

    def kernels_archived_in_run(self, dag_run_id: str) -> list[Row]:
        return self.query("kernels_of_run", {"dag_run_id": dag_run_id})

    def hope_coverage(self) -> list[Row]:
        """Coverage of Hope's trajectory by the active SPKs (``kernel_class``, ``start_time``, ``end_time``)."""
        return self.query("hope_coverage")

    def hope_coverage_history(self) -> list[Row]:
        """Every Hope SPK coverage interval with the run that archived its kernel and its ``superseded_by``."""
        return self.query("hope_coverage_history")

    def latest_meta_kernel(self) -> Row | None:
        return self._first("latest_meta_kernel")

    def meta_kernels(self) -> list[Row]:
        return self.query("meta_kernels")

    def add_meta_kernel(self, *, version: int, file_name: str, s3_key: str, kernels_json: str, dag_run_id: str) -> int:
        """Record a written meta-kernel; its id."""
        return self._new_id("insert_meta_kernel", {"version": version, "file_name": file_name, "s3_key": s3_key,
                                                   "kernels": kernels_json, "dag_run_id": dag_run_id})

    def products_to_upgrade(self, instrument: str, levels: Sequence[str], worse: Sequence[str], start: datetime,
                            end: datetime) -> list[Row]:
        """Latest products of the levels observed in ``[start, end]`` made with a kernel class in ``worse``."""
        return self.query("products_to_upgrade", {"instrument_id": instrument, "levels": list(levels),
                                                  "worse": list(worse), "start": start, "end": end})

    def log_kernel_delivery(self, delivery: Mapping[str, Any]) -> None:
        """Log a delivery of an indexed kernel (a duplicate): ``insert_delivery``'s parameters, once per delivery."""
        self.query("insert_delivery", delivery)

    def index_kernel(self, record: Mapping[str, Any], coverage: Mapping[int, Iterable[Any]],
                     delivery: Mapping[str, Any]) -> int | None:
        """Index a kernel with its coverage and its delivery, superseding older versions of its series, atomically.

        ``record`` is the ``spice_kernels`` row, ``coverage`` maps body (or frame) to intervals with ``start``
        and ``end``, ``delivery`` the parameters of ``insert_delivery`` (its ``kernel_id`` is filled in).
        None, and nothing written, when the kernel is already indexed (an earlier attempt, a concurrent run).
        """
        with self._transaction() as cur:
            inserted = run(cur, "insert_kernel", record)
            if not inserted:
                return None
            kernel_id = int(inserted[0]["id"])
            run(cur, "insert_delivery", {**delivery, "kernel_id": kernel_id})
            for body, intervals in coverage.items():
                for iv in intervals:
                    run(cur, "insert_kernel_coverage", {"kernel_id": kernel_id, "body_or_frame": body,
                                                        "start_time": iv.start, "end_time": iv.end})
            run(cur, "supersede_series", {"kernel_id": kernel_id, "series": record["series"],
                                          "version": record["version"]})
        return kernel_id
