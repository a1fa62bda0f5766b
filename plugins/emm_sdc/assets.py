"""Airflow Assets for archived data: one per instrument and level.

Producers (ingest, processing) and consumers (processing of the next stage)
share these definitions, so the Airflow UI draws the data lineage.
"""

from __future__ import annotations

from airflow.sdk import Asset

from emm_sdc.core.naming import ARCHIVE_ROOT
from emm_sdc.core.settings import get_settings


def level_asset(instrument: str, level: str) -> Asset:
    """The Asset of an instrument's archived files of one level."""
    bucket = get_settings().archive_bucket
    return Asset(
        name=f"emm_{instrument}_{level}",
        uri=f"s3://{bucket}/{ARCHIVE_ROOT}/{instrument}/{level}/",
        group="emm-data",
    )
