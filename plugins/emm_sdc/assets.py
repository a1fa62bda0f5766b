"""Airflow Assets for archived data: one per instrument and level, and the SPICE meta-kernel.

Producers (ingest, processing) and consumers (processing of the next stage)
share these definitions, so the Airflow UI draws the data lineage. Their
identity (``emm://archive/<inst>/<level>``) does not depend on the bucket a
deployment uses, so moving the archive does not orphan the Assets; events
carry the bucket and the file names in their ``extra``.

The task that announces a level (``announce_<level>``) declares the level's
inputs as inlets (:func:`level_inlets`): the asset graph's *data* view then
shows l0 → l1 → l2 per instrument, with the meta-kernel feeding the levels
that use SPICE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import Asset

if TYPE_CHECKING:
    from emm_sdc.core.config import ChainStep

#: The SPICE refresh's meta-kernel (emm_spice_refresh announces each new one).
META_KERNEL = Asset(name="emm_spice_meta_kernel", uri="emm://archive/spice/meta-kernel", group="emm-data")


def level_asset(instrument: str, level: str) -> Asset:
    """The Asset of an instrument's archived files of one level."""
    return Asset(name=f"emm_{instrument}_{level}", uri=f"emm://archive/{instrument}/{level}", group="emm-data")


def level_inlets(instrument: str, step: ChainStep) -> list[Asset]:
    """What a chain level is made from: its input levels' Assets and, if it uses SPICE, the meta-kernel."""
    return [level_asset(instrument, src) for src in step.inputs] + ([META_KERNEL] if step.uses_spice else [])
