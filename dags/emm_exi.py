"""Airflow DAGs for EXI: ingest and processing, built from include/itf_configs/exi.yaml."""

from emm_sdc.factory import instrument_dags

globals().update(instrument_dags("exi"))
