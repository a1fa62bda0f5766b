"""Summaries of the catalog for the command line (``./sdc demo``, ``./sdc status``)."""

from __future__ import annotations

from emm_sdc.core.catalog_ops.base import CatalogBase, Row


class ReportsMixin(CatalogBase):
    def delivery_outcomes(self) -> list[Row]:
        """Deliveries counted per instrument and outcome."""
        return self.query("delivery_outcomes")

    def quarantine_list(self) -> list[Row]:
        return self.query("quarantine_list")

    def counts_by_level(self) -> list[Row]:
        """Files and bytes per instrument, level and product type."""
        return self.query("counts_by_level")

    def runs_by_runner(self) -> list[Row]:
        return self.query("runs_by_runner")

    def table_counts(self) -> list[Row]:
        return self.query("table_counts")

    def latest_by_kernel_class(self) -> list[Row]:
        return self.query("latest_by_kernel_class")

    def sample_geometry(self) -> Row | None:
        """One latest product with geometry (reconstructed kernels first)."""
        return self._first("sample_geometry")

    def sample_lineage(self) -> list[Row]:
        """A few product <- input pairs, highest level first."""
        return self.query("sample_lineage")

    def first_product(self) -> Row | None:
        """The first processed product (``s3_key``, ``file_size``): the demo's reconciliation victim."""
        return self._first("recon_demo_victim")
