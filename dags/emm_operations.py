"""Airflow DAGs for SDC operators: emm_config_check, emm_catalog_migrate, emm_processing_sweep and emm_image_promote."""

from emm_sdc.pipeline.config_check import build_config_check_dag
from emm_sdc.pipeline.maintenance import build_migrate_dag, build_sweep_dag
from emm_sdc.pipeline.staging import build_promote_dag

emm_config_check = build_config_check_dag()
emm_catalog_migrate = build_migrate_dag()
emm_processing_sweep = build_sweep_dag()
emm_image_promote = build_promote_dag()
