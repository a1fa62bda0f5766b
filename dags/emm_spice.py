"""Airflow DAG emm_spice_refresh: SPICE kernel deliveries, versioned meta-kernels, reprocessing."""

from emm_sdc.pipeline.spice import build_spice_refresh_dag

emm_spice_refresh = build_spice_refresh_dag()
