"""Airflow DAG emm_delivery_watch: hourly, tells the ITF and the operators when an instrument goes silent."""

from emm_sdc.pipeline.delivery_watch import build_delivery_watch_dag

emm_delivery_watch = build_delivery_watch_dag()
