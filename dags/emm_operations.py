"""Airflow DAGs for SDC operators: emm_catalog_migrate (catalog schema) and emm_image_promote (ITF images)."""

from emm_sdc.pipeline.maintenance import build_migrate_dag
from emm_sdc.pipeline.staging import build_promote_dag

emm_catalog_migrate = build_migrate_dag()
emm_image_promote = build_promote_dag()
