"""Airflow DAG emm_catalog_migrate: applies the product catalog's SQL migrations."""

from emm_sdc.pipeline.maintenance import build_migrate_dag

emm_catalog_migrate = build_migrate_dag()
