"""ITF images in real containers (DockerOperator on a Docker-API engine: podman here, Docker elsewhere).

EMIRS is switched to ``runner.kind: docker`` by one YAML line. Its first image
goes through a staging check and a promotion, then the whole chain runs in
containers. Failing containers (crash, memory limit, timeout) index nothing.
Candidate images are checked against production: one with a changed
calibration constant fails the check and cannot be promoted; an equivalent
rebuild passes, is promoted, and production then refuses the old image.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_dev.moc import deliver
from tests.helpers import (
    archive_state,
    edit_configs,
    keep_world_dirs,
    make_world,
    rendered_fields,
    restore_config,
    run_dag,
)

pytestmark = pytest.mark.containers
PROD = "localhost/emm-emr-ref:1.0.0"
SAME = "localhost/emm-emr-ref:1.0.1-test"
CHANGED = "localhost/emm-emr-ref:1.1.0-test"


def to_docker(inst: str, data: dict[str, Any]) -> None:
    if inst == "emr":
        data["processing"]["runner"]["kind"] = "docker"  # the one line an operator changes


def build_candidate(tag: str, change: str) -> None:
    """A candidate image derived from production, as an ITF's new version would be."""
    import docker

    containerfile = f"FROM {PROD}\nUSER root\nRUN {change}\nUSER 10001:10001\nLABEL version=\"{tag.split(':')[1]}\"\n"
    docker.from_env().images.build(fileobj=io.BytesIO(containerfile.encode()), tag=tag, rm=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, pg_server: Any, s3_server: Any, airflow_db: None,
          container_engine: str) -> Any:
    yield from make_world(tmp_path_factory.mktemp("docker"), pg_server, s3_server, edit=to_docker)


@pytest.fixture(autouse=True)
def _module_env(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    keep_world_dirs(monkeypatch, world)


@pytest.fixture(scope="module")
def promoted(world: Any) -> dict[str, Any]:
    """EMIRS orbit 11 ingested; the first image checked (validation only) and promoted."""
    files = synthetic.generate(world["tmp"] / "moc", orbits=(11,), instruments=("emr",))
    deliver(world["client"], world["buckets"]["inbox"], "inbox/emr/", files)
    states = {"ingest": run_dag("emm_emr_ingest"),
              "check": run_dag("emm_emr_staging_check", {"candidate_image": PROD}),
              "promote": run_dag("emm_image_promote", {"instrument": "emr", "image": PROD, "reason": "first"})}
    return {"files": files, "states": states}


@pytest.fixture(scope="module")
def processed(world: Any, promoted: dict[str, Any]) -> str:
    return run_dag("emm_emr_process")


def test_first_image_is_checked_and_promoted(world: Any, promoted: dict[str, Any]) -> None:
    assert promoted["states"] == {"ingest": "success", "check": "success", "promote": "success"}
    [check] = world["cat"].query("staging_checks_of", {"instrument_id": "emr"})
    assert (check["status"], check["production_image"]) == ("passed", None)
    report = json.loads(world["client"].get_object(
        Bucket=world["buckets"]["archive"], Key=check["report_uri"].split("/", 3)[3])["Body"].read())
    assert report["verdict"] == "passed" and report["levels"]["l1"]["validated"]
    # The check's jobs point at it (processing_runs.staging_check_id): one candidate run per level, all passed.
    linked = world["cat"].runs_of_staging_check(check["id"])
    assert sorted(r["data_level"] for r in linked) == ["l1", "l2", "l2ql"]
    assert {(r["environment"], r["image"], r["status"]) for r in linked} == {("staging", PROD, "success")}
    [promotion] = world["cat"].query("production_image", {"instrument_id": "emr"})
    assert promotion["image"] == PROD and promotion["staging_check_id"] == check["id"]
    assert world["cat"].get_file(promoted["files"][0].file_name) is not None  # ingest indexed L0
    staged = archive_state(world["client"], world["buckets"]["archive"], "emm/staging/emr/")
    assert any("/candidate/l2/" in k for k in staged)
    assert world["cat"].query("counts_by_level") and not [
        r for r in world["cat"].query("counts_by_level") if r["data_level"] in ("l1", "l2", "l2ql")]


def test_whole_chain_runs_in_containers(world: Any, processed: str) -> None:
    assert processed == "success"
    counts = {r["data_level"]: r["files"] for r in world["cat"].query("counts_by_level")}
    assert counts["l1"] == counts["l2"] == counts["l2ql"] == 2
    runs = [r for lvl in ("l1", "l2", "l2ql")
            for r in world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": lvl})
            if r["environment"] == "production"]
    assert {(r["runner"], r["image"], r["status"], r["processor_name"]) for r in runs} == {
        ("docker", PROD, "success", "emm-emr-ref")}
    log_key = runs[0]["log_uri"].split("/", 3)[3]
    log = world["client"].get_object(Bucket=world["buckets"]["archive"], Key=log_key)["Body"].read().decode()
    assert "emm-emr-ref 1.0.0: emr l1" in log and "wrote output_manifest.json" in log
    assert world["cat"].query("products_without_lineage_or_run") == []


def test_run_tasks_render_the_containers_they_ran(world: Any, processed: str) -> None:
    """The UI's Rendered Templates of a run task: the job's image, environment and mounts, not placeholders."""
    fields, _ = rendered_fields("emm_emr_process", "unit.l2.run")
    assert fields["image"] == PROD and fields["job"]["image"] == PROD
    assert fields["environment"]["EMM_TARGET_LEVEL"] == "l2" and fields["environment"]["EMM_INSTRUMENT"] == "emr"
    assert "/emm/work" in {m["Target"] for m in fields["mounts"]}
    [run] = [r for r in _emr_l2_runs(world) if r["environment"] == "production"]
    assert fields["job"]["processing_run_id"] == run["id"]


def _emr_l2_runs(world: Any) -> list[dict[str, Any]]:
    return world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": "l2"})


@pytest.mark.parametrize(("hook", "memory_mb", "phrase", "exit_status"), [
    ("crash", 2048, "processor exited with status 1", 1),
    ("oom", 256, "exceeded its memory limit of 256 MB", 137),
])
def test_failing_container_indexes_nothing(world: Any, processed: str, hook: str, memory_mb: int, phrase: str,
                                           exit_status: int) -> None:
    def fail_l2(d: dict[str, Any]) -> None:
        d["processing"]["chain"][1]["parameters"] = {"ref_fail": hook}
        d["processing"]["runner"]["memory_mb"] = memory_mb

    before_files = {r["file_name"] for r in world["cat"].query("all_files_brief")}
    old = edit_configs(world["configs"], "emr", fail_l2)
    try:
        state = run_dag("emm_emr_reprocess", {"files": orbit_l0(world, 11), "force": True, "reason": f"test {hook}"})
    finally:
        restore_config(world["configs"], old)
    assert state == "failed"
    new = {r["file_name"] for r in world["cat"].query("all_files_brief")} - before_files
    assert new and not [n for n in new if "_l2_" in n or "_l2ql_" in n]  # l1 ran; nothing of l2 indexed
    [failed] = [r for r in _emr_l2_runs(world) if (r["reason"] or "").startswith(f"test {hook}")]
    assert failed["status"] == "failed" and failed["exit_status"] == exit_status
    assert phrase in failed["message"] and failed["log_uri"]
    data = {k for k in archive_state(world["client"], world["buckets"]["archive"], "emm/data/emr/l2/")}
    indexed = {r["s3_key"] for r in world["cat"].query("all_files_brief") if r["data_level"] == "l2"}
    assert data == indexed


def test_timeout_kills_the_container(world: Any, processed: str, tmp_path: Path, container_engine: str) -> None:
    import docker

    from emm_sdc.core.jobs import JobInput, JobSpec
    from emm_sdc.runners.docker import SdcDockerOperator
    from emm_sdc.runners.local import JobFailed

    l0 = next(r for r in world["cat"].query("all_files_brief") if r["data_level"] == "l0"
              and r["file_name"].startswith("emm_emr_l0"))
    spec = JobSpec(job_id="timeout-test", instrument="emr", level="l1", work_unit="orbit-0011",
                   workdir=str(tmp_path / "job"), version=1, revision=9, kernel_class="n",
                   inputs=[JobInput(l0["file_name"], l0["s3_key"], l0["md5checksum"], "l0")], image=PROD,
                   parameters={"ref_fail": "hang"}, runner="docker")
    spec.input_dir.mkdir(parents=True)
    world["client"].download_file(world["buckets"]["archive"], l0["s3_key"], str(spec.input_dir / l0["file_name"]))
    op = SdcDockerOperator(task_id="t", job=spec.to_dict(), memory_mb=512, timeout_s=4)
    op.render_template_fields({})
    with pytest.raises(JobFailed, match="timed out after 4 s and was killed"):
        op.execute({})
    assert not docker.from_env().containers.list(all=True, filters={"label": "emm.job=timeout-test"})


def test_unpromoted_image_is_refused(world: Any, processed: str, capfd: pytest.CaptureFixture[str]) -> None:
    runs_before = len(world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": "l1"}))
    old = edit_configs(world["configs"], "emr", lambda d: d["processing"]["runner"].update(image=SAME))
    try:
        assert run_dag("emm_emr_reprocess", {"files": orbit_l0(world, 11), "force": True,
                                             "reason": "unpromoted"}) == "failed"
    finally:
        restore_config(world["configs"], old)
    assert f"processing.runner.image {SAME!r} is not the production image of emr ({PROD!r})" in capfd.readouterr().out
    assert len(world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": "l1"})) == runs_before


def test_staging_check_catches_a_changed_candidate_and_gates_promotion(world: Any, processed: str,
                                                                      capfd: pytest.CaptureFixture[str]) -> None:
    build_candidate(CHANGED, "sed -i 's/^DN_OFFSET = 2000.0/DN_OFFSET = 2040.0/' /opt/emm/processor.py")
    build_candidate(SAME, "true")
    cat = world["cat"]

    assert run_dag("emm_emr_staging_check", {"candidate_image": CHANGED}) == "failed"
    changed = cat.query("staging_checks_of", {"instrument_id": "emr"})[-1]
    assert (changed["candidate_image"], changed["production_image"], changed["status"]) == (CHANGED, PROD, "failed")
    report = json.loads(world["client"].get_object(
        Bucket=world["buckets"]["archive"], Key=changed["report_uri"].split("/", 3)[3])["Body"].read())
    assert report["levels"]["l1"]["passed"] is True  # DN spectra do not use the offset
    l2 = report["levels"]["l2"]
    assert l2["passed"] is False
    whats = json.dumps(l2["files"])
    assert "CALOFFS" in whats and "differ beyond tolerance" in whats
    assert run_dag("emm_image_promote", {"instrument": "emr", "image": CHANGED}) == "failed"
    assert cat.query("production_image", {"instrument_id": "emr"})[0]["image"] == PROD

    assert run_dag("emm_emr_staging_check", {"candidate_image": SAME}) == "success"
    assert cat.query("staging_checks_of", {"instrument_id": "emr"})[-1]["status"] == "passed"
    assert run_dag("emm_image_promote", {"instrument": "emr", "image": SAME, "reason": "rebuild"}) == "success"
    promotion = cat.query("production_image", {"instrument_id": "emr"})[0]
    assert (promotion["image"], promotion["previous_image"], promotion["reason"]) == (SAME, PROD, "rebuild")

    # Production now refuses the retired image until the YAML names the promoted one.
    remake = {"files": orbit_l0(world, 11), "from_level": "l2ql", "reason": "promoted rebuild"}
    before = {r["id"] for r in _production_runs(world, "l2ql")}
    capfd.readouterr()
    assert run_dag("emm_emr_reprocess", remake) == "failed"
    assert f"processing.runner.image {PROD!r} is not the production image of emr ({SAME!r})" in capfd.readouterr().out
    assert {r["id"] for r in _production_runs(world, "l2ql")} == before  # refused before any job was opened
    old = edit_configs(world["configs"], "emr", lambda d: d["processing"]["runner"].update(image=SAME))
    try:
        assert run_dag("emm_emr_reprocess", remake) == "success"
    finally:
        restore_config(world["configs"], old)
    # The image is part of a job's identity, so the promoted image remakes the products (not "nothing changed").
    [new] = [r for r in _production_runs(world, "l2ql") if r["id"] not in before]
    assert (new["image"], new["status"]) == (SAME, "success") and new["reason"].startswith("promoted rebuild")


def _production_runs(world: Any, level: str) -> list[dict[str, Any]]:
    return [r for r in world["cat"].query("runs_of_level", {"instrument_id": "emr", "data_level": level})
            if r["environment"] == "production"]


def orbit_l0(world: Any, orbit: int) -> list[str]:
    """The EMIRS L0 of an orbit (what a reprocessing run is given)."""
    return [r["file_name"] for r in world["cat"].query("science_l0_by_orbit", {"instrument_id": "emr",
                                                                                  "orbits": [orbit]})]
