"""Pure logic of reprocessing: campaign identity, the levels a from_level remakes, job hashes, lanes."""

from __future__ import annotations

from emm_sdc.core.config import load_instrument
from emm_sdc.core.jobs import JobInput, JobSpec
from emm_sdc.lanes import lane_args, pool_specs
from emm_sdc.lifecycle import downstream_levels, input_hash, job_context_doc, per_input_hashes
from emm_sdc.pipeline.reprocess import campaign_identity


def test_from_level_takes_everything_made_from_it() -> None:
    exi = load_instrument("exi").processing.chain  # l1 <- l0; l2a <- l1; l1ql <- l1
    assert downstream_levels(exi, None) == ["l1", "l2a", "l1ql"]
    assert downstream_levels(exi, "l1") == ["l1", "l2a", "l1ql"]
    assert downstream_levels(exi, "l2a") == ["l2a"]
    emu = load_instrument("emu").processing.chain  # l1 <- l0; l2a <- l1; l2b <- l2a
    assert downstream_levels(emu, "l2a") == ["l2a", "l2b"]


def test_campaign_identity() -> None:
    conf = {"reason": "flat v2", "force": False}
    key, kind = campaign_identity("emm_exi_reprocess", "backfill", "backfill__2021-06-01", conf)
    same, _ = campaign_identity("emm_exi_reprocess", "backfill", "backfill__2021-06-02", dict(reversed(conf.items())))
    assert kind == "backfill" and key == same  # the runs of one backfill share its conf
    assert campaign_identity("emm_exi_reprocess", "backfill", "x", {**conf, "force": True})[0] != key
    assert campaign_identity("d", "manual", "manual__1", {"campaign": "exi-v2"}) == ("d:exi-v2", "manual")
    assert campaign_identity("d", "manual", "manual__1", {}) == ("d:manual__1", "manual")
    assert campaign_identity("d", "operator_triggered", "spice__1", {})[1] == "triggered"


def _spec(**kw: object) -> JobSpec:
    base = dict(job_id="j", instrument="exi", level="l1", work_unit="orbit-0011", workdir="/w", version=1,
                revision=0, kernel_class="p", inputs=[JobInput("a.bin", "k/a", "0" * 32, "l0"),
                                                      JobInput("b.bin", "k/b", "1" * 32, "l0")])
    base.update(kw)
    return JobSpec(**base)  # type: ignore[arg-type]


def test_hashes_cover_the_context_and_not_the_order_of_inputs() -> None:
    spec = _spec()
    ctx = job_context_doc(spec, "local:emm-exi-ref:1.0.0:abc", ["k1.bsp", "k0.tls"])
    digest, doc = input_hash(ctx, spec.inputs)
    assert input_hash(ctx, list(reversed(spec.inputs)))[0] == digest
    assert doc["kernels"] == ["k0.tls", "k1.bsp"] and doc["inputs"][0] == ["a.bin", "0" * 32]
    for changed in (job_context_doc(spec, "local:emm-exi-ref:1.1.0:abc", ["k1.bsp", "k0.tls"]),
                    job_context_doc(_spec(kernel_class="r"), "local:emm-exi-ref:1.0.0:abc", ["k1.bsp", "k0.tls"]),
                    job_context_doc(_spec(parameters={"flat": "v2"}), "local:emm-exi-ref:1.0.0:abc",
                                    ["k1.bsp", "k0.tls"]),
                    job_context_doc(_spec(version=2), "local:emm-exi-ref:1.0.0:abc", ["k1.bsp", "k0.tls"]),
                    job_context_doc(_spec(calibration=[{"file_name": "c", "md5": "2" * 32}], calibration_version=3),
                                    "local:emm-exi-ref:1.0.0:abc", ["k1.bsp", "k0.tls"]),
                    job_context_doc(spec, "local:emm-exi-ref:1.0.0:abc", ["k2.bsp", "k0.tls"])):
        assert input_hash(changed, spec.inputs)[0] != digest
    per = per_input_hashes(ctx, spec.inputs)
    assert per["a.bin"] == per_input_hashes(ctx, spec.inputs[:1])["a.bin"]  # one input's hash ignores the others
    renamed = [JobInput("a_r01.bin", "k/a", "0" * 32, "l0")]  # a remade input: new name, same bytes
    assert per_input_hashes(ctx, renamed)["a_r01.bin"] != per["a.bin"]


def test_lanes_from_the_yaml() -> None:
    exi = load_instrument("exi")
    assert lane_args(exi, "daily") == {"pool": "emm_exi_daily", "priority_weight": 100, "weight_rule": "absolute",
                                       "queue": "emm_daily"}
    assert lane_args(exi, "reprocessing")["queue"] == "emm_reprocessing"
    assert lane_args(exi, "reprocessing")["priority_weight"] < lane_args(exi, "daily")["priority_weight"]
    specs = {s["name"]: s["slots"] for s in pool_specs([exi])}
    assert specs == {"emm_exi_daily": exi.airflow.pools.daily, "emm_exi_reprocessing": exi.airflow.pools.reprocessing}


def test_reprocessing_yields_the_cpu_and_daily_does_not() -> None:
    import os
    import subprocess
    import sys

    code = "import os, sys; from emm_sdc.lanes import yield_cpu; yield_cpu(sys.argv[1]); yield_cpu(sys.argv[1]); " \
           "print(os.nice(0))"
    base = os.nice(0)
    out = {lane: int(subprocess.run([sys.executable, "-c", code, lane], capture_output=True, text=True, check=True,
                                    env={**os.environ, "PYTHONPATH": "plugins"}).stdout)
           for lane in ("daily", "reprocessing")}
    assert out == {"daily": base, "reprocessing": max(base, 10)}  # and calling it twice does not go further


def test_reprocessing_yields_while_daily_work_is_in_flight() -> None:
    import pytest
    from airflow.sdk.exceptions import AirflowRescheduleException

    from emm_sdc.lanes import MAX_YIELDS, yield_to_daily_work

    class Ti:  # the one Task SDK call the decision needs: counts of busy task instances per DAG
        def __init__(self, busy: dict[str, int]):
            self.busy, self.asked = busy, []

        def get_ti_count(self, *, dag_id: str, states: list[str]) -> int:
            self.asked.append((dag_id, tuple(states)))
            return self.busy.get(dag_id, 0)

    idle = Ti({})
    yield_to_daily_work({"ti": idle, "task_reschedule_count": 0})  # nothing in flight: goes ahead
    assert {d for d, _ in idle.asked} == {f"emm_{i}_{k}" for i in ("exi", "emu", "emr") for k in ("ingest", "process")}
    assert all(s == ("running", "queued", "scheduled") for _, s in idle.asked)
    with pytest.raises(AirflowRescheduleException):
        yield_to_daily_work({"ti": Ti({"emm_emu_ingest": 2}), "task_reschedule_count": 3})
    yield_to_daily_work({"ti": Ti({"emm_emu_ingest": 2}), "task_reschedule_count": MAX_YIELDS})  # never starves
