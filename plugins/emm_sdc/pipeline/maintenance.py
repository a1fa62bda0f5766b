"""Catalog maintenance DAG: apply the ordered SQL migrations in include/sql/migrations."""

from __future__ import annotations

import logging

from airflow.sdk import DAG, dag, task

from emm_sdc import connections
from emm_sdc.core import catalog
from emm_sdc.pipeline.common import START_DATE, dag_callbacks

log = logging.getLogger(__name__)


def build_migrate_dag() -> DAG:
    """``emm_catalog_migrate``: run by an operator (or at deploy) to bring the catalog schema up to date."""

    @dag(
        dag_id="emm_catalog_migrate",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        default_args={"owner": "sdc-ops", "retries": 1},
        **dag_callbacks(None, "catalog migration"),
        tags=["emm", "maintenance"],
        doc_md=__doc__,
    )
    def migrate_dag() -> None:
        @task
        def migrate() -> list[str]:
            applied = catalog.migrate(connections.catalog().conn)
            log.info("applied migrations: %s", applied or "none (up to date)")
            return applied

        migrate()

    return migrate_dag()
