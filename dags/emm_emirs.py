"""Airflow DAGs for EMIRS: ingest and processing, built from include/itf_configs/emirs.yaml."""

from emm_sdc.factory import instrument_dags

globals().update(instrument_dags("emr"))
