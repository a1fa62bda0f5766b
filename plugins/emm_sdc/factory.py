"""DAG factory: one instrument's YAML in, that instrument's DAGs out.

A DAG file per instrument calls :func:`instrument_dags`. When the YAML is broken, the DAGs are built
from its last-good copy (kept by the ``emm_config_check`` DAG, see :mod:`emm_sdc.core.config_store`) and
carry the tag ``config-fallback`` and a banner naming the problems, so the instrument keeps running while
the check DAG fails and notifies. With no usable copy, :class:`~emm_sdc.core.config.ConfigError` is raised
here, so Airflow shows one import error naming the file, field and rule (and why no copy could stand in),
and the other instruments load.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from emm_sdc.core.config_store import FALLBACK_TAG, Fallback, load_instrument_or_last_good
from emm_sdc.pipeline.ingest import build_ingest_dag
from emm_sdc.pipeline.process import build_process_dag
from emm_sdc.pipeline.reprocess import build_reprocess_dag
from emm_sdc.pipeline.staging import build_staging_dag


def instrument_dags(instrument: str, *, now: datetime | None = None) -> dict[str, DAG]:
    """Every DAG of one instrument (``exi``, ``emu``, ``emr``), keyed by dag_id."""
    cfg, fallback = load_instrument_or_last_good(instrument)
    dags = [build_ingest_dag(cfg), build_process_dag(cfg), build_reprocess_dag(cfg), build_staging_dag(cfg)]
    if fallback is not None:
        for d in dags:
            mark_fallback(d, fallback, now=now)
    return {d.dag_id: d for d in dags}


def mark_fallback(dag: DAG, fallback: Fallback, *, now: datetime | None = None) -> None:
    """Tag ``dag`` ``config-fallback`` and put the fallback banner at the top of its ``doc_md``."""
    dag.tags.add(FALLBACK_TAG)
    dag.doc_md = fallback.banner(now) + ("\n\n" + dag.doc_md if dag.doc_md else "")
