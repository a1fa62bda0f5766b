"""Airflow DAGs for EMUS: ingest and processing, built from include/itf_configs/emus.yaml."""

from emm_sdc.factory import instrument_dags

globals().update(instrument_dags("emu"))
