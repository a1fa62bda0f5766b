"""Airflow Assets for archived data: one per instrument and level.

Producers (ingest, processing) and consumers (processing of the next stage)
share these definitions, so the Airflow UI draws the data lineage. Their
identity (``emm://archive/<inst>/<level>``) does not depend on the bucket a
deployment uses, so moving the archive does not orphan the Assets; events
carry the bucket and the file names in their ``extra``.
"""

from __future__ import annotations

from airflow.sdk import Asset


def level_asset(instrument: str, level: str) -> Asset:
    """The Asset of an instrument's archived files of one level."""
    return Asset(name=f"emm_{instrument}_{level}", uri=f"emm://archive/{instrument}/{level}", group="emm-data")
