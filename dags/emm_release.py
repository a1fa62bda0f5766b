"""Airflow DAGs for the public releases: emm_public_release (quarterly) and emm_release_withdraw (by hand)."""

from emm_sdc.pipeline.release import build_release_dag, build_withdraw_dag

emm_public_release = build_release_dag()
emm_release_withdraw = build_withdraw_dag()
