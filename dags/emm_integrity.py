"""Airflow DAG for the integrity reconciliation: emm_integrity_reconcile (daily; by hand with Params)."""

from emm_sdc.pipeline.reconcile import build_reconcile_dag

emm_integrity_reconcile = build_reconcile_dag()
