"""Processing under hostile processors, lost replies, races, crashes and outages (issue 9's defects and more).

Each case ingests an EMIRS L0 for real, prepares a job with the SDC's own
``prepare_job``, runs the reference processor with the local runner, then
plays one fault around ``collect_job`` (core/product_writes.py's protocol).
World.check_products asserts: every archived data object has exactly one row
with its MD5, every row its object, products have lineage, one file per
(root, version), every run terminal and truthful, no reservation left behind.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException

from emm_dev import synthetic
from emm_sdc.core.archiving import Archiver, RunContext
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import load_instrument
from emm_sdc.core.jobs import JobSpec
from emm_sdc.core.product_writes import sweep_stale_runs
from emm_sdc.core.settings import project_root
from emm_sdc.core.storage import Storage
from emm_sdc.lifecycle import Skipped, collect_job, fail_run, prepare_job
from emm_sdc.runners.local import JobFailed, run_local
from tests.faults.conftest import ingest
from tests.faults.harness import Actor, World, kill_this_process

PREFIX = "inbox/emr/"


@pytest.fixture(scope="session")
def emr(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("emr")
    files = synthetic.generate(out / "moc", orbits=(11,), instruments=("emr",))
    l0 = next(f for f in files if f.level == "l0")
    return {"l0": l0, "data": l0.path.read_bytes(), "fixed": synthetic.conflicting(out / "fixed", l0)}


@pytest.fixture
def cfg() -> Any:
    return load_instrument("emr")


@pytest.fixture
def sdc(world: World, actors: Any, cfg: Any, emr: dict[str, Any], s3_server: Any) -> dict[str, Any]:
    """The EMIRS L0 ingested for real; handles for making jobs."""
    world.deliver(PREFIX + emr["l0"].file_name, emr["data"])
    archiver = Archiver(Storage(s3_server.client()), Catalog(world.conn), cfg, inbox_bucket=world.inbox,
                        archive_bucket=world.archive, ctx=RunContext("ingest", "i1"))
    assert [o.outcome for o in ingest(archiver, PREFIX)] == ["archived"]
    return {"name": emr["l0"].file_name}


def worker(actors: Any) -> tuple[Catalog, Storage, Any, Any]:
    """A catalog session and S3 client of one worker, with their fault hooks."""
    handler, s3f, dbf = actors()
    return handler.catalog, handler.storage, s3f, dbf


def make_job(actors: Any, cfg: Any, inputs: list[str], *, run_id: str = "r1", reprocess: bool = False,
             force: bool = False, run: bool = True) -> JobSpec:
    """prepare (real catalog, real staging) and run the reference processor with the local runner."""
    cat, storage, _, _ = worker(actors)
    step = cfg.processing.chain[0]
    unit = {"unit": "orbit-0011", "inputs": inputs, "kernel_class": "n", "reprocess": reprocess, "force": force,
            "reason": "fault test"}
    spec = prepare_job(cat, storage, cfg, step, unit, dag_id="emm_emr_process", run_id=run_id,
                       task_id=f"unit.{step.level}.prepare", map_index=0, try_number=1)
    if run:
        spec.output_dir.mkdir(parents=True, exist_ok=True)
        run_local(spec, cfg.processing.runner.command, cwd=project_root(), memory_mb=2048, timeout_s=120)
    return spec


def sweep(actors: Any) -> list[dict[str, Any]]:
    cat, storage, _, _ = worker(actors)
    from datetime import UTC, datetime

    return sweep_stale_runs(cat, storage, dag_id="emm_emr_process", dag_run_id="r1", older_than=datetime.now(UTC),
                            reason="test sweep")


# --- hostile processors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["symlink out of the job", "symlinked manifest", "FIFO", "sub-directory"])
def test_outputs_that_are_not_regular_files_are_refused(world: World, actors: Any, cfg: Any, sdc: dict[str, Any],
                                                       tmp_path: Path, kind: str) -> None:
    """Defect 1: nothing outside the job's directory is ever read, uploaded or indexed."""
    spec = make_job(actors, cfg, [sdc["name"]])
    secret = tmp_path / "worker_secret.txt"
    secret.write_text("the worker's own file")
    out = spec.output_dir
    product = next(p for p in out.iterdir() if p.suffix == ".fits")
    if kind == "symlink out of the job":
        product.unlink()
        product.symlink_to(secret)
    elif kind == "symlinked manifest":
        manifest = out / "output_manifest.json"
        (tmp_path / "m.json").write_bytes(manifest.read_bytes())
        manifest.unlink()
        manifest.symlink_to(tmp_path / "m.json")
    elif kind == "FIFO":
        os.mkfifo(out / "pipe.log")
    else:
        (out / "nested").mkdir()
    cat, storage, _, _ = worker(actors)
    with pytest.raises(AirflowFailException, match=r"regular file|symbolic link"):
        collect_job(cat, storage, spec)
    assert world.keys(world.archive, "emm/data/emr/l1/") == []
    world.check_products()


@pytest.mark.parametrize("key", ["out/../escape.fits", "out/sub/x.fits", "out/.hidden"])
def test_batch_outputs_with_unsafe_keys_are_refused(world: World, actors: Any, cfg: Any, sdc: dict[str, Any],
                                                    key: str) -> None:
    """Batch staging follows the same rules: only plain names directly in out/ come back to the worker."""
    spec = make_job(actors, cfg, [sdc["name"]], run=False)
    spec.runner = "batch"
    spec.s3_prefix = f"s3://{world.archive}/emm/batch/fault/"
    world.client.put_object(Bucket=world.archive, Key="emm/batch/fault/" + key, Body=b"x")
    cat, storage, _, _ = worker(actors)
    with pytest.raises(AirflowFailException, match="plain file names"):
        collect_job(cat, storage, spec)
    assert not (Path(spec.workdir) / "escape.fits").exists()
    world.check_products()


def test_processor_logs_are_archived_with_the_job_log(world: World, actors: Any, cfg: Any,
                                                      sdc: dict[str, Any]) -> None:
    """Defect 7: out/*.log travels with job.log into the archived log."""
    spec = make_job(actors, cfg, [sdc["name"]])
    (spec.output_dir / "calibration.log").write_text("dark frame 42 applied\n")
    cat, storage, _, _ = worker(actors)
    collect_job(cat, storage, spec)
    [run] = world.rows("SELECT log_uri FROM processing_runs")
    text = world.read(world.archive, run["log_uri"].split("/", 3)[3]) or b""
    assert b"processor log out/calibration.log" in text and b"dark frame 42 applied" in text
    world.check_products()


# --- lost replies ------------------------------------------------------------------------------------------


def test_lost_upload_reply_leaves_nothing_unnamed(world: World, actors: Any, cfg: Any, sdc: dict[str, Any]) -> None:
    """Defect 2: the upload succeeded but its reply was lost: the object is removed (it was reserved), the run is
    failed with the reason; the retry succeeds."""
    spec = make_job(actors, cfg, [sdc["name"]])
    cat, storage, s3f, _ = worker(actors)

    def lost(_params: Any) -> None:
        raise ConnectionResetError("reply lost")
    s3f.at("PutObject", lost, after=True, when=lambda p: p.get("Key", "").startswith("emm/data/"))
    with pytest.raises(ConnectionResetError):
        collect_job(cat, storage, spec)
    world.check_products()
    [run] = world.rows("SELECT status, message FROM processing_runs")
    assert run["status"] == "failed" and "reply lost" in run["message"]
    cat2, storage2, _, _ = worker(actors)
    assert collect_job(cat2, storage2, spec)  # Airflow's retry of collect
    world.check_products()


@pytest.mark.parametrize("how", ["error after commit", "session killed after commit"])
def test_lost_commit_acknowledgement(world: World, actors: Any, cfg: Any, sdc: dict[str, Any], how: str) -> None:
    """Defect 3: the index committed but the client saw an error: the objects stay, the run is a success."""
    spec = make_job(actors, cfg, [sdc["name"]])
    cat, storage, _, dbf = worker(actors)
    armed = {"on": False}
    dbf.at("release_reservations", lambda: armed.update(on=True))  # the index transaction's last statement

    def after_commit() -> None:
        if not armed["on"]:
            return
        armed["on"] = False
        if how == "session killed after commit":
            dbf.kill_backend()
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    dbf.after_commit(after_commit, times=99)
    if how == "error after commit":
        names = collect_job(cat, storage, spec)  # it re-reads the run's status and sees the commit
    else:
        with pytest.raises(psycopg.OperationalError):
            collect_job(cat, storage, spec)  # cannot tell: leaves everything for the retry
        cat2, storage2, _, _ = worker(actors)
        names = collect_job(cat2, storage2, spec)  # the retry finds the committed run
    assert names
    world.check_products()
    assert world.rows("SELECT status FROM processing_runs") == [{"status": "success"}]


# --- races ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("forced", "loser"), [(False, "skipped"), (True, "failed")])
def test_race_after_upload_never_deletes_the_winners_objects(world: World, actors: Any, cfg: Any,
                                                             sdc: dict[str, Any], forced: bool, loser: str) -> None:
    """Defect 4: two runs make the same products; the one that reserved first indexes them; the other deletes
    nothing of the winner's. An identical job (same input hash) ends as skipped ("nothing changed"); a forced
    one, which meant to make new products, fails cleanly."""
    a_spec = make_job(actors, cfg, [sdc["name"]], run_id="r1")
    b_spec = make_job(actors, cfg, [sdc["name"]], run_id="r2", force=forced)
    assert a_spec.revision == b_spec.revision  # prepared before either indexed: the same names
    assert a_spec.input_hash == b_spec.input_hash
    a_cat, a_st, _, a_db = worker(actors)
    a = Actor("A", lambda: collect_job(a_cat, a_st, a_spec))
    a_db.at("insert_file_if_new", a.pause_hook)  # A has uploaded and is about to index
    a.start_and_wait_paused()
    b_cat, b_st, _, _ = worker(actors)
    expected = (pytest.raises(Skipped, match="made the same job at the same time") if loser == "skipped"
                else pytest.raises(AirflowFailException, match="being written by processing run"))
    with expected:
        collect_job(b_cat, b_st, b_spec)
    world.check_products(settled=False)
    assert a.release() and a.error is None
    world.check_products()
    statuses = sorted(r["status"] for r in world.rows("SELECT status FROM processing_runs"))
    assert statuses == sorted([loser, "success"])


def test_identical_jobs_with_different_names_cannot_both_index(world: World, actors: Any, cfg: Any,
                                                               sdc: dict[str, Any]) -> None:
    """The catalog's one-success-per-hash index, the last line behind the reservations: A and B are the same
    job (same input hash) but B makes other names (its revision moved, as a planner bug or a hand-made run
    could), so no reservation separates them. B is paused after its checks while A indexes; B's commit is
    refused, its objects are removed, and it ends as skipped."""
    a_spec = make_job(actors, cfg, [sdc["name"]], run_id="r1")
    b_spec = make_job(actors, cfg, [sdc["name"]], run_id="r2", run=False)
    b_spec.revision += 1
    b_spec.write_manifest()
    run_local(b_spec, cfg.processing.runner.command, cwd=project_root(), memory_mb=2048, timeout_s=120)
    assert a_spec.input_hash == b_spec.input_hash
    b_cat, b_st, _, b_db = worker(actors)
    b = Actor("B", lambda: collect_job(b_cat, b_st, b_spec))
    b_db.at("files_by_names", b.pause_hook)  # B passed the "an identical job succeeded" check
    b.start_and_wait_paused()
    a_cat, a_st, _, _ = worker(actors)
    assert collect_job(a_cat, a_st, a_spec)
    b.release()
    assert isinstance(b.error, Skipped), b.error
    world.check_products()
    rows = world.rows("SELECT dag_run_id, status FROM processing_runs ORDER BY dag_run_id")
    assert [(r["dag_run_id"], r["status"]) for r in rows] == [("r1", "success"), ("r2", "skipped")]
    assert not [k for k in world.keys(world.archive) if f"_{b_spec.revision:02d}." in k]  # B's uploads removed


def test_two_reprocessing_runs_in_a_row_get_their_own_revisions(world: World, actors: Any, cfg: Any,
                                                                sdc: dict[str, Any]) -> None:
    cat, storage, _, _ = worker(actors)
    first = make_job(actors, cfg, [sdc["name"]], run_id="r1")
    collect_job(cat, storage, first)
    second = make_job(actors, cfg, [sdc["name"]], run_id="r2", reprocess=True, force=True)
    assert second.revision == first.revision + 1
    collect_job(cat, storage, second)
    world.check_products()


# --- runs that cannot close themselves -------------------------------------------------------------------


def test_failed_cleanup_is_finished_by_the_sweeper(world: World, actors: Any, cfg: Any, sdc: dict[str, Any]) -> None:
    """Defect 5: indexing fails and so does the clean-up delete: the run stays 'running' with its reservation;
    the sweeper closes it as failed and removes the uncommitted object."""
    spec = make_job(actors, cfg, [sdc["name"]])
    cat, storage, s3f, dbf = worker(actors)

    def refuse() -> None:
        raise psycopg.errors.CheckViolation("injected: the catalog refused the product")
    dbf.at("insert_file_if_new", refuse)
    s3f.fail("DeleteObject", times=99)
    with pytest.raises(psycopg.errors.CheckViolation):
        collect_job(cat, storage, spec)
    world.check_products(settled=False)
    assert world.rows("SELECT status FROM processing_runs") == [{"status": "running"}]
    assert len(world.keys(world.archive, "emm/data/emr/l1/")) == 1  # uncommitted, but named by its reservation
    [swept] = sweep(actors)
    assert swept["removed"]
    world.check_products()
    [run] = world.rows("SELECT status, message FROM processing_runs")
    assert run["status"] == "failed" and "swept" in run["message"]


def test_catalog_gone_when_the_failure_is_recorded(world: World, actors: Any, cfg: Any, sdc: dict[str, Any]) -> None:
    """Defect 5: PostgreSQL goes away mid-index; nothing can be recorded; the sweeper finishes the run later."""
    spec = make_job(actors, cfg, [sdc["name"]])
    cat, storage, _, dbf = worker(actors)
    dbf.kill_backend_at("insert_file_if_new")
    with pytest.raises(psycopg.OperationalError):
        collect_job(cat, storage, spec)
    world.check_products(settled=False)
    sweep(actors)
    world.check_products()


def test_worker_killed_mid_collect_then_retried(world: World, actors: Any, cfg: Any, sdc: dict[str, Any]) -> None:
    """The worker dies right after uploading; the retry adopts its own upload and indexes once."""
    spec = make_job(actors, cfg, [sdc["name"]])

    def die() -> None:
        cat, storage, s3f, _ = worker(actors)
        s3f.at("PutObject", kill_this_process, after=True, when=lambda p: p.get("Key", "").startswith("emm/data/"))
        collect_job(cat, storage, spec)

    proc = multiprocessing.get_context("fork").Process(target=die)
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    world.check_products(settled=False)
    cat, storage, _, _ = worker(actors)
    assert collect_job(cat, storage, spec)
    world.check_products()


def test_timed_out_processor_indexes_nothing(world: World, actors: Any, cfg: Any, sdc: dict[str, Any]) -> None:
    spec = make_job(actors, cfg, [sdc["name"]], run=False)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(JobFailed, match="timed out"):
        run_local(spec, ["python", "-c", "import time; time.sleep(60)"], cwd=project_root(), memory_mb=512,
                  timeout_s=1)
    cat, storage, _, _ = worker(actors)
    fail_run(cat, storage, spec, None, "timed out")
    world.check_products()


# --- corrected inputs ----------------------------------------------------------------------------------------


def test_a_corrected_l0_gets_a_fresh_revision(world: World, actors: Any, cfg: Any, sdc: dict[str, Any],
                                              emr: dict[str, Any]) -> None:
    """Defect 6: the MOC re-delivers the L0 as v01-01; its products take the next revision, never a used one."""
    cat, storage, _, _ = worker(actors)
    collect_job(cat, storage, make_job(actors, cfg, [sdc["name"]], run_id="r1"))
    fixed_name = sdc["name"].replace("_v01-00.bin", "_v01-01.bin")
    world.deliver(PREFIX + fixed_name, emr["fixed"].path.read_bytes())
    archiver = Archiver(storage, cat, cfg, inbox_bucket=world.inbox, archive_bucket=world.archive,
                        ctx=RunContext("ingest", "i2"))
    assert [o.outcome for o in ingest(archiver, PREFIX)] == ["archived"]
    spec = make_job(actors, cfg, [fixed_name], run_id="r2")
    assert spec.revision == 1
    assert collect_job(cat, storage, spec)
    world.check_products()
    revisions = sorted(r["revision"] for r in world.rows("SELECT revision FROM science_files WHERE data_level='l1'"))
    assert revisions == [0, 1]
