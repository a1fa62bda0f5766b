"""SPICE end to end: kernel deliveries, meta-kernels, geometry in the catalog, reprocessing on better kernels.

Kernels are written here with spiceypy (synthetic_spice): an LSK, a Mars PCK,
an SCLK, a planetary SPK and Hope SPKs for an EMM-like orbit. A predicted SPK
makes the first products ``p``; a reconstructed SPK over orbit 11 queues
reprocessing of exactly orbit 11's SPICE-using products, which come back as
new ``r`` revisions; an identical re-delivery triggers nothing; a longer
reconstructed SPK triggers only on its new part.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic, synthetic_spice
from emm_dev.moc import deliver
from emm_sdc.core.catalog import Catalog
from tests.helpers import keep_world_dirs, make_world, run_dag

pytestmark = pytest.mark.e2e
SPICE_LEVELS = ("l1", "l2")  # EMIRS levels whose YAML step uses SPICE (l2ql does not)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None) -> Any:
    yield from make_world(tmp_path_factory.mktemp("spice"), pg_server, s3_server)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


def deliver_kernels(world: Any, out: Path, **kw: Any) -> list[Any]:
    files = synthetic_spice.kernel_delivery(out, **kw)
    deliver(world["client"], world["buckets"]["inbox"], "inbox/spice/", files)
    return files


def triggered(dag_id: str) -> list[Any]:
    """Runs the refresh queued for a processing DAG (what the scheduler would start)."""
    from emm_sdc.pipeline.spice import reprocessing_runs

    return [(r["run_id"], r["conf"], r["note"]) for r in reprocessing_runs(dag_id)]


def emr_products(cat: Catalog) -> list[dict[str, Any]]:
    """The latest EMIRS products of every level."""
    return [r for lvl in ("l1", "l2", "l2ql")
            for r in cat.query("latest_of_level", {"instrument_id": "emr", "data_level": lvl})]


@pytest.fixture(scope="module")
def predicted(world: Any) -> dict[str, Any]:
    """Generic kernels + a predicted Hope SPK over orbits 10-13; EMIRS orbits 11-12 processed with them."""
    kernels = deliver_kernels(world, world["tmp"] / "k1", start=synthetic.orbit_start(10),
                              end=synthetic.orbit_start(14), spk_class="p")
    refresh = run_dag("emm_spice_refresh")
    science = synthetic.generate(world["tmp"] / "moc", orbits=(11, 12), instruments=("emr",))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/emr/", science)
    states = [refresh, run_dag("emm_emr_ingest"), run_dag("emm_emr_process")]
    return {"kernels": kernels, "states": states}


def test_kernels_archived_indexed_and_meta_kernel_written(world: Any, predicted: dict[str, Any]) -> None:
    assert predicted["states"] == ["success"] * 3
    cat = world["cat"]
    active = {r["file_name"]: r for r in cat.query("active_kernels")}
    assert set(active) == {k.file_name for k in predicted["kernels"]}
    spk = next(r for r in active.values() if r["kernel_type"] == "spk")
    assert spk["kernel_class"] == "p" and spk["kind"] == "SPK"
    assert abs((spk["coverage_start"] - synthetic.orbit_start(10)).total_seconds()) < 1
    [mk] = cat.query("latest_meta_kernel")
    assert mk["version"] == 1 and any("spk/emm_spk_p_" in k for k in mk["kernels"])
    assert (world["tmp"] / "kernels" / "mk" / mk["file_name"]).exists()
    for r in active.values():
        assert (world["tmp"] / "kernels" / r["kernel_type"] / r["file_name"]).exists()


def test_products_carry_kernel_class_meta_kernel_and_geometry(world: Any, predicted: dict[str, Any]) -> None:
    products = emr_products(world["cat"])
    assert len(products) == 12  # 2 orbits x 2 L0 files x 3 levels
    for p in products:
        assert p["pred_rec"] == ("p" if p["data_level"] in SPICE_LEVELS else "n"), p["file_name"]
        assert 0 <= p["mars_ls"] < 360 and 0 <= p["spacecraft_lst"] < 24
        assert -25.5 <= p["spacecraft_lat"] <= 25.5 and 0 <= p["spacecraft_lon"] < 360
        assert 19_000 <= p["spacecraft_alt"] <= 44_000
        assert -26 <= p["subsolar_lat"] <= 26 and 0 <= p["subsolar_lon"] < 360
        if p["data_level"] in SPICE_LEVELS:
            assert p["meta_kernel_id"] is not None
    runs = world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": "l1"})
    assert {r["meta_kernel"] for r in runs} == {"emm_meta_v0001.tm"}


@pytest.fixture(scope="module")
def reconstructed(world: Any, predicted: dict[str, Any]) -> dict[str, Any]:
    """A reconstructed SPK over orbit 11 is refreshed, and the processing run it queued is run."""
    before = {p["file_name"]: p for p in emr_products(world["cat"])}
    deliver_kernels(world, world["tmp"] / "k2", start=synthetic.orbit_start(11), end=synthetic.orbit_start(12),
                    spk_class="r", generic=False)
    refresh = run_dag("emm_spice_refresh")
    queued = triggered("emm_emr_reprocess")
    others = triggered("emm_exi_reprocess") + triggered("emm_emu_reprocess")
    # what the scheduler runs for the queued run
    process = run_dag("emm_emr_reprocess", queued[0][1]) if len(queued) == 1 else "not run"
    after = {p["file_name"]: p for p in emr_products(world["cat"])}
    return {"before": before, "after": after, "queued": queued, "others": others,
            "states": [refresh, process]}


def test_reconstructed_kernel_reprocesses_exactly_the_newly_covered_products(world: Any,
                                                                           reconstructed: dict[str, Any]) -> None:
    cat = world["cat"]
    before, after = reconstructed["before"], reconstructed["after"]
    orbit11 = {n for n, p in before.items() if p["orbit_number"] == 11 and p["data_level"] in SPICE_LEVELS}
    assert reconstructed["states"] == ["success", "success"]
    [(_run_id, conf, note)] = reconstructed["queued"]
    assert conf["from_level"] == SPICE_LEVELS[0] and conf["campaign"].startswith("spice-refresh ")
    assert sorted(conf["files"]) == sorted(r["file_name"] for r in cat.query("science_l0_by_orbit", {
        "instrument_id": "emr", "orbits": [11]}))
    assert "emm_spk_r_" in conf["reason"] and note == conf["reason"][:1000]
    assert reconstructed["others"] == []  # only EMIRS has data here

    new = set(after) - set(before)
    assert {(after[n]["orbit_number"], after[n]["pred_rec"], after[n]["revision"]) for n in new
            if after[n]["data_level"] in SPICE_LEVELS} == {(11, "r", 1)}
    # the cascade: orbit 11's quicklooks are remade from the new l2, so none points at a superseded input
    assert {(after[n]["orbit_number"], after[n]["data_level"], after[n]["revision"]) for n in new
            if after[n]["data_level"] not in SPICE_LEVELS} == {(11, "l2ql", 1)}
    assert cat.query("stale_latest_products", {"instrument_id": "emr"}) == []
    assert {before[n]["file_root"] for n in orbit11} == {after[n]["file_root"] for n in new
                                                         if after[n]["data_level"] in SPICE_LEVELS}
    for name in orbit11:  # old versions stay indexed, no longer latest
        assert cat.get_file(name) is not None and name not in after
    assert {n for n in before if before[n]["orbit_number"] != 11} <= set(after)  # orbit 12 untouched
    [mk] = cat.query("latest_meta_kernel")
    assert mk["version"] == 2
    runs = cat.query("runs_of_level", {"instrument_id": "emr", "data_level": "l1"})
    assert runs[-1]["reason"].startswith(conf["reason"]) and runs[-1]["meta_kernel"] == "emm_meta_v0002.tm"


def test_identical_redelivery_triggers_nothing_and_growth_only_its_new_part(world: Any,
                                                                           reconstructed: dict[str, Any]) -> None:
    cat = world["cat"]
    assert len(triggered("emm_emr_reprocess")) == 1
    k2 = world["tmp"] / "k2"
    again = [synthetic.Delivered(p.name, p, p.with_name(p.name + ".md5"), "", 0, "spice", "spk")
             for p in sorted(k2.glob("emm_spk_r_*.bsp"))]
    def duplicates() -> int:
        return sum(r["files"] for r in cat.query("delivery_outcomes_total") if r["outcome"] == "duplicate")

    before = duplicates()
    deliver(world["client"], world["buckets"]["inbox"], "inbox/spice/", again)
    assert run_dag("emm_spice_refresh") == "success"
    assert duplicates() == before + len(again) == before + 1
    assert len(triggered("emm_emr_reprocess")) == 1
    assert cat.query("latest_meta_kernel")[0]["version"] == 2

    deliver_kernels(world, world["tmp"] / "k3", start=synthetic.orbit_start(11),
                    end=synthetic.orbit_start(13) - timedelta(hours=1), spk_class="r", version=2, generic=False)
    assert run_dag("emm_spice_refresh") == "success"
    runs = triggered("emm_emr_reprocess")
    assert len(runs) == 2
    conf = runs[-1][1]
    assert sorted(conf["files"]) == sorted(r["file_name"] for r in cat.query("science_l0_by_orbit", {
        "instrument_id": "emr", "orbits": [12]}))


def test_bad_kernels_are_quarantined(world: Any, predicted: dict[str, Any], tmp_path: Path) -> None:
    from emm_sdc.core.checksums import format_sidecar, md5_file

    junk = tmp_path / "emm_spk_r_20210601_20210602_v09.bsp"
    junk.write_bytes(b"DAF/SPK " + b"\0" * 2000)
    wrong = tmp_path / "emm_spk_f_20210101_20210102_v01.bsp"  # its coverage is orbit 11, not these days
    synthetic_spice.write_hope_spk(wrong, synthetic.orbit_start(11), synthetic.orbit_start(11) + timedelta(hours=5))
    files = []
    for path in (junk, wrong):
        side = path.with_name(path.name + ".md5")
        side.write_text(format_sidecar(md5_file(path), path.name))
        files.append(synthetic.Delivered(path.name, path, side, md5_file(path), path.stat().st_size, "spice", "spk"))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/spice/", files)
    assert run_dag("emm_spice_refresh") == "success"
    reasons = {r["original_key"].rsplit("/", 1)[-1]: r["reason_code"] for r in world["cat"].query("quarantine_list")}
    assert reasons[junk.name] == "kernel-load-failed"
    assert reasons[wrong.name] == "coverage-mismatch"
    assert world["cat"].query("kernel_by_name", {"file_name": wrong.name}) == []
