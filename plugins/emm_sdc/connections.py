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


#: Airflow connection to Airflow's own REST API (HTTP: host = base URL, login/password of an account that may
#: edit DAG runs), used to write run notes from tasks; optional.
AIRFLOW_API_CONN_ID = "emm_airflow_api"


def set_run_note(dag_id: str, run_id: str, note: str) -> bool:
    """Write a DAG run's note through Airflow's REST API (tasks cannot write the metadata DB in Airflow 3).

    Needs the ``emm_airflow_api`` connection; without it, or when the API refuses, the note is logged as
    not set and False returned: a note is a convenience, the catalog keeps the record.
    """
    import logging
    from urllib.parse import quote

    import httpx
    from airflow.sdk import BaseHook

    log = logging.getLogger(__name__)
    try:
        conn = BaseHook.get_connection(AIRFLOW_API_CONN_ID)
    except Exception:
        log.info("no %s connection: the run note is not set (the record is in the catalog)", AIRFLOW_API_CONN_ID)
        return False
    base = (conn.host or "").rstrip("/")
    if "://" not in base:
        base = f"{conn.schema or 'http'}://{base}" + (f":{conn.port}" if conn.port else "")
    try:
        with httpx.Client(base_url=base, timeout=20) as client:
            token = client.post("/auth/token", json={"username": conn.login, "password": conn.password})
            token.raise_for_status()
            r = client.patch(f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
                             params={"update_mask": "note"}, json={"note": note[:1000]},
                             headers={"Authorization": f"Bearer {token.json()['access_token']}"})
            r.raise_for_status()
    except Exception as exc:
        log.warning("the run note of %s %s was not set: %s", dag_id, run_id, exc)
        return False
    return True
