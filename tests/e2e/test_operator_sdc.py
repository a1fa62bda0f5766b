"""The operators' SDC on a real scheduler: event-driven ingest, quarantines at a glance, deadline alerts, lineage.

Real Airflow (api-server, scheduler, dag-processor, triggerer; ``emm_dev.airflow_local``) on the
embedded S3 + PostgreSQL, with the inbox's S3 event notifications going to SQS queues on the same local
endpoint. Nothing is triggered by hand after the SPICE seed: the MOC stand-in uploads one orbit's EXI L0
plus a corrupted file, and the test follows what Airflow does with them:

* the ingest run is created by the inbox Asset's event (``asset_triggered``), not by cron or a person;
* the corrupted file's ``handle_file`` task ends *skipped* and the run note lists it with its reason;
* the processing run, which outlives the test's 3-second ``alerts.processed_within_minutes``, misses its
  deadline and the triggerer's callback mails the ITF and the operators (SMTP on loopback);
* the UI's asset graph (``/ui/dependencies``, data view) shows l0 -> l1 -> l2a / l1ql, with the
  meta-kernel feeding the SPICE-using levels.
"""

from __future__ import annotations

from typing import Any

import pytest

from emm_dev.airflow_local import AirflowLocal
from tests.helpers import mail_text

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sdc(operator_sdc: dict[str, Any]) -> dict[str, Any]:
    return operator_sdc


def test_a_delivery_starts_ingest_by_its_s3_event_and_quarantines_show(sdc: dict[str, Any]) -> None:
    af = sdc["af"]
    runs = af.meta_sql("SELECT run_id, run_type, state FROM dag_run WHERE dag_id = 'emm_exi_ingest' "
                       "AND run_type <> 'scheduled' ORDER BY queued_at")
    assert runs and {t for _, t, _ in runs} == {"asset_triggered"}, runs  # started by the inbox event
    handled = {}
    for run_id, _, state in runs:
        assert state == "success"
        for ti in af.task_instances("emm_exi_ingest", run_id):
            if ti["task_id"] == "handle_file":
                handled[ti["rendered_map_index"]] = (ti["state"], run_id)
    assert {handled[n][0] for n in sdc["good"]} == {"success"}
    bad_state, bad_run = handled[sdc["bad"]]
    assert bad_state == "skipped"  # quarantined: stands out in the grid
    note = af.dag_run("emm_exi_ingest", bad_run)["note"]
    assert note.startswith("**1 file(s) quarantined**") and sdc["bad"] in note and "checksum" in note
    [(reason,)] = af.catalog_sql("SELECT reason_code FROM quarantine WHERE original_key LIKE %s", (f"%/{sdc['bad']}",))
    assert reason in note


def test_a_late_processing_run_is_mailed_to_the_itf_and_operators(sdc: dict[str, Any]) -> None:
    af = sdc["af"]
    missed = af.meta_sql("SELECT dr.dag_id, d.missed FROM deadline d JOIN dag_run dr ON dr.id = d.dagrun_id "
                         "WHERE dr.dag_id = 'emm_exi_process' AND dr.run_type = 'asset_triggered'")
    assert missed and all(m for _, m in missed), missed
    af.wait_for(lambda: [m for m in sdc["smtp"].mails if "processing late" in str(m["message"]["Subject"])],
                120, interval=1, what="the deadline mail")
    mail = next(m for m in sdc["smtp"].mails if "processing late" in str(m["message"]["Subject"]))
    assert sorted(mail["to"]) == ["exi-itf@example.org", "ops@example.org"]
    assert "emm_exi_process run" in mail_text(mail) and "not fully processed" in mail_text(mail)


def _data_graph(af: AirflowLocal, asset_id: int) -> set[tuple[str, str]]:
    """The edges (by label) of the asset page's data view around one asset."""
    graph = af.ui("/dependencies", params={"node_id": f"asset:{asset_id}", "dependency_type": "data"})
    label = {n["id"]: n["label"] for n in graph["nodes"]}
    return {(label[e["source_id"]], label[e["target_id"]]) for e in graph["edges"]}


def test_the_asset_graph_shows_the_processing_chain(sdc: dict[str, Any]) -> None:
    af = sdc["af"]
    ids = dict(af.meta_sql("SELECT name, id FROM asset WHERE name LIKE 'emm_%%'"))
    edges = _data_graph(af, ids["emm_exi_l0"])
    for src, task_, dst in [("emm_exi_l0", "announce_l1", "emm_exi_l1"), ("emm_exi_l1", "announce_l2a", "emm_exi_l2a"),
                            ("emm_exi_l1", "announce_l1ql", "emm_exi_l1ql")]:
        assert (src, f"emm_exi_process.{task_}") in edges, (src, task_, sorted(edges))
        assert (f"emm_exi_process.{task_}", dst) in edges
    assert ("emm_exi_ingest.announce_l0", "emm_exi_l0") in edges
    # The meta-kernel's page: the SPICE refresh makes it, and it feeds the levels that use SPICE (not l1ql).
    edges = _data_graph(af, ids["emm_spice_meta_kernel"])
    assert ("emm_spice_refresh.meta_kernel", "emm_spice_meta_kernel") in edges
    fed = {dst for src, dst in edges if src == "emm_spice_meta_kernel" and dst.startswith("emm_exi_process.")}
    assert fed == {"emm_exi_process.announce_l1", "emm_exi_process.announce_l2a"}
