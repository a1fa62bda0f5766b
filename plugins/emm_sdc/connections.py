"""Storage and catalog handles built from Airflow connections (the only place secrets enter)."""

from __future__ import annotations

from emm_sdc.core.catalog import Catalog
from emm_sdc.core.settings import get_settings
from emm_sdc.core.storage import Storage


def storage() -> Storage:
    """S3 through the amazon provider's hook and the ``emm_s3`` (``EMM_AWS_CONN_ID``) connection."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return Storage(S3Hook(aws_conn_id=get_settings().aws_conn_id).get_conn())


def catalog() -> Catalog:
    """The product catalog through the postgres provider's hook (``emm_catalog`` connection)."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    return Catalog(PostgresHook(postgres_conn_id=get_settings().catalog_conn_id).get_conn())
