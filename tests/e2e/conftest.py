"""Real Airflow shared by the end-to-end modules that drive it as operators do (one start-up per session)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.airflow_local import INBOX_BUCKET, AirflowLocal
from emm_dev.moc import deliver
from tests.helpers import smtp_capture, smtp_conn_json, write_configs

ORBIT = 11
DEADLINE_MINUTES = 0.05  # 3 s: every processing run is "late"


@pytest.fixture(scope="session")
def operator_sdc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Real Airflow with inbox events (tests/e2e/test_operator_sdc.py, test_trigger_form_e2e.py): the ITF YAMLs
    with a 3-second ``alerts.processed_within_minutes`` and mail to a loopback SMTP server; one EXI orbit
    delivered with a corrupted file, its products made, every run finished."""
    from emm_dev.cli import _deliver_kernels

    tmp = tmp_path_factory.mktemp("operator-sdc")

    def edit(inst: str, data: dict[str, Any]) -> None:
        data["notifications"] = {"emails": [f"{inst}-itf@example.org"], "smtp_conn_id": "emm_test_smtp"}
        data["alerts"] = {"processed_within_minutes": DEADLINE_MINUTES}

    configs = write_configs(tmp / "include" / "itf_configs", edit)
    site = tmp / "include" / "sdc.yaml"
    site.write_text("operators:\n  emails: [ops@example.org]\n  smtp_conn_id: emm_test_smtp\n")
    with smtp_capture() as smtp:
        dags = ("emm_spice_refresh", "emm_exi_ingest", "emm_exi_process", "emm_exi_reprocess")
        af = AirflowLocal(tmp / "af", parallelism=4, dags=dags,
                          env={"EMM_CONFIG_DIR": str(configs), "EMM_SITE_CONFIG": str(site),
                               "AIRFLOW_CONN_EMM_TEST_SMTP": smtp_conn_json(smtp)})
        try:
            af.start_services()
            assert af.env["EMM_INBOX_QUEUE_URL_PREFIX"]  # inbox events on the local endpoint (AirflowLocal default)
            _deliver_kernels(af.s3, tmp / "moc" / "kernels", ORBIT - 1, ORBIT + 3, "p", generic=True)
            af.start_airflow()
            af.trigger("emm_spice_refresh", note="seed kernels")
            af.wait_for(lambda: af.catalog_sql("SELECT 1 FROM meta_kernels"), 300, interval=1, what="a meta-kernel")

            files = [f for f in synthetic.generate(tmp / "moc" / "l0", orbits=[ORBIT], instruments=("exi",))
                     if f.level == "l0"]
            bad = synthetic.corrupt(tmp / "moc" / "bad", files[0])
            deliver(af.s3, INBOX_BUCKET, "inbox/exi/", [*files, bad])
            levels = ("l1", "l2a", "l1ql")
            af.wait_for(lambda: {lvl for (lvl,) in af.catalog_sql(
                "SELECT DISTINCT data_level FROM science_files WHERE orbit_number = %s", (ORBIT,))} >= set(levels),
                600, interval=1, what=f"orbit {ORBIT}'s products")
            af.wait_for(lambda: not af.meta_sql(
                "SELECT 1 FROM dag_run WHERE dag_id IN ('emm_exi_ingest', 'emm_exi_process') "
                "AND state IN ('queued', 'running')"), 300, interval=1, what="the runs to finish")
            yield {"af": af, "smtp": smtp, "good": [f.file_name for f in files], "bad": bad.file_name}
        finally:
            af.stop()
