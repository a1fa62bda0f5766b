"""DAG factory: one instrument's YAML in, that instrument's DAGs out.

A DAG file per instrument calls :func:`instrument_dags`; a broken YAML raises
:class:`~emm_sdc.core.config.ConfigError` there, so Airflow shows one import
error naming the file, field and rule, and the other instruments load.
"""

from __future__ import annotations

from airflow.sdk import DAG

from emm_sdc.core.config import load_instrument
from emm_sdc.pipeline.ingest import build_ingest_dag
from emm_sdc.pipeline.process import build_process_dag
from emm_sdc.pipeline.reprocess import build_reprocess_dag
from emm_sdc.pipeline.staging import build_staging_dag


def instrument_dags(instrument: str) -> dict[str, DAG]:
    """Every DAG of one instrument (``exi``, ``emu``, ``emr``), keyed by dag_id."""
    cfg = load_instrument(instrument)
    dags = [build_ingest_dag(cfg), build_process_dag(cfg), build_reprocess_dag(cfg), build_staging_dag(cfg)]
    return {d.dag_id: d for d in dags}
