"""Maintenance DAGs: catalog migrations (include/sql/migrations) and the processing-run sweeper."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from airflow.sdk import DAG, dag, task

from emm_sdc import connections
from emm_sdc.core import catalog
from emm_sdc.core.product_writes import STALE_AFTER, sweep_stale_runs
from emm_sdc.pipeline.common import START_DATE, dag_callbacks

log = logging.getLogger(__name__)

# Task docs (doc_md): what each task does and what to do when it fails; the UI shows them on the task.
MIGRATE_DOC = """\
**What it does**: applies the catalog migrations of `include/sql/migrations` in order; applied ones are
skipped.

**If it fails**: catalog unreachable: trigger again after the outage. "changed after it was applied": a
shipped migration was edited: restore it and add a new one. An SQL error: fix the migration, trigger again.
"""
SWEEP_DOC = """\
**What it does**: closes as failed the processing runs still `running` long after any job could have ended
(their worker died), with the reason, and removes the objects they reserved but never indexed.

**If it fails**: S3 or the catalog was unreachable: the next hourly run sweeps them (or clear it).
"""


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
        @task(doc_md=MIGRATE_DOC)
        def migrate() -> list[str]:
            applied = catalog.migrate(connections.catalog().conn)
            log.info("applied migrations: %s", applied or "none (up to date)")
            return applied

        migrate()

    return migrate_dag()


def build_sweep_dag() -> DAG:
    """``emm_processing_sweep``, hourly: processing runs still 'running' long after any job could have
    ended (a worker died and its DAG run never reached its own sweep) are closed as failed, with the
    reason, and the objects they reserved but never indexed are removed."""
    @dag(
        dag_id="emm_processing_sweep",
        schedule="@hourly",
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args={"owner": "sdc-ops", "retries": 1},
        **dag_callbacks(None, "processing-run sweep"),
        tags=["emm", "maintenance"],
        doc_md=build_sweep_dag.__doc__,
    )
    def sweep_dag() -> None:
        @task(doc_md=SWEEP_DOC)
        def sweep() -> list[dict[str, Any]]:
            swept = sweep_stale_runs(connections.catalog(), connections.storage(), dag_id=None, dag_run_id=None,
                                     older_than=datetime.now(UTC) - STALE_AFTER,
                                     reason=f"still running {STALE_AFTER} after it started")
            log.info("swept %d stale processing run(s): %s", len(swept), swept)
            return swept

        sweep()

    return sweep_dag()
