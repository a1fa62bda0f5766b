"""SPICE kernel archiving under the same faults as ingest: re-uploads, two runs, crashes, S3 and catalog outages.

Kernels are written here with spiceypy (synthetic_spice); the LSK is used as
the delivered kernel since its checks need no other kernel. Invariants as in
harness.World.check, plus: the kernel directory holds the archived bytes.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic_spice
from tests.faults.conftest import SPICE_PREFIX, ingest
from tests.faults.harness import Actor, World, kill_this_process, md5


@pytest.fixture(scope="session")
def lsk(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("lsk")
    name = next(iter(synthetic_spice.GENERIC_NAMES.values()))
    path = synthetic_spice.write_lsk(out / name)
    data = path.read_bytes()
    assert name.startswith("emm_lsk_")
    # still a valid LSK: text after \begintext is commentary
    return {"name": name, "data": data, "other": data + b"\n\\begintext\n\nRe-delivered with another comment.\n"}


@pytest.fixture
def kernel_dir(tmp_path: Path) -> Path:
    return tmp_path / "kernels"


def _kernel_file(kernel_dir: Path, name: str) -> bytes | None:
    found = list(kernel_dir.rglob(name))
    return found[0].read_bytes() if found else None


def _run(actors: Any, kernel_dir: Path, **kw: Any) -> Any:
    handler, s3f, dbf = actors("spice", kernel_dir, **kw)
    return handler, s3f, dbf


def test_kernel_reupload_before_the_inbox_delete(world: World, actors: Any, lsk: dict[str, Any], kernel_dir: Path,
                                                 mode: str) -> None:
    """The MOC re-sends the kernel name with other bytes just before the SDC clears the inbox: the archived
    kernel keeps its bytes, the re-upload stays and is quarantined as a conflict by the next run."""
    key = SPICE_PREFIX + lsk["name"]
    world.deliver(key, lsk["data"])
    handler, s3f, _ = _run(actors, kernel_dir)
    s3f.at("DeleteObject", world.deliver_later(key, lsk["other"]), when=lambda p: p.get("Key") == key)
    [o] = ingest(handler, SPICE_PREFIX)
    assert o.outcome == "archived"
    [later] = ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    assert (later.outcome, later.reason_code) == ("quarantined", "conflict")
    world.check()
    assert _kernel_file(kernel_dir, lsk["name"]) == lsk["data"]


def test_two_runs_archive_one_kernel(world: World, actors: Any, lsk: dict[str, Any], kernel_dir: Path) -> None:
    """Run 1 pauses before its archive copy completes; run 2 archives the kernel; run 1 ends as a duplicate."""
    world.deliver(SPICE_PREFIX + lsk["name"], lsk["data"])
    run1, s3f, _ = _run(actors, kernel_dir, run_id="run1")
    a = Actor("run1", lambda: ingest(run1, SPICE_PREFIX))
    s3f.at("CompleteMultipartUpload", a.pause_hook)
    a.start_and_wait_paused()
    assert [o.outcome for o in ingest(_run(actors, kernel_dir, run_id="run2")[0], SPICE_PREFIX)] == ["archived"]
    [late] = a.release()
    assert a.error is None and late.outcome in ("duplicate", "gone")
    world.check()
    assert len(world.rows("SELECT * FROM spice_kernels")) == 1 and len(world.rows("SELECT * FROM deliveries")) == 1


def test_stale_kernel_run_never_overwrites(world: World, actors: Any, lsk: dict[str, Any], kernel_dir: Path,
                                           mode: str) -> None:
    """Run 1 has checked the kernel and pauses; run 2 archives it; the MOC re-sends other bytes; run 1 resumes
    and changes nothing: archive, kernel directory and catalog keep the first bytes."""
    key = SPICE_PREFIX + lsk["name"]
    world.deliver(key, lsk["data"])
    run1, s3f, _ = _run(actors, kernel_dir, run_id="run1")
    a = Actor("run1", lambda: ingest(run1, SPICE_PREFIX))
    s3f.at("CreateMultipartUpload", a.pause_hook)
    a.start_and_wait_paused()
    ingest(_run(actors, kernel_dir, run_id="run2")[0], SPICE_PREFIX)
    world.snapshot_archive()
    world.deliver(key, lsk["other"])
    [stale] = a.release()
    # Versioned: its version is gone, nothing copied. Unversioned: S3 copied exactly the checked bytes (the
    # re-upload starts with them) to a key that exists: a duplicate; the re-upload stays in the inbox.
    assert a.error is None and stale.outcome in ("waiting", "duplicate")
    assert _kernel_file(kernel_dir, lsk["name"]) == lsk["data"]
    ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    world.check()
    [row] = world.rows("SELECT * FROM spice_kernels")
    assert row["md5checksum"] == md5(lsk["data"])


@pytest.mark.parametrize("point", ["CompleteMultipartUpload", "DeleteObject"])
def test_kernel_worker_killed_then_rerun(world: World, actors: Any, lsk: dict[str, Any], kernel_dir: Path,
                                        point: str) -> None:
    """The worker dies right after the archive copy (or right before the inbox delete); the rerun completes."""
    world.deliver(SPICE_PREFIX + lsk["name"], lsk["data"])

    def worker() -> None:
        handler, s3f, _ = _run(actors, kernel_dir)
        s3f.at(point, kill_this_process, after=point == "CompleteMultipartUpload")
        ingest(handler, SPICE_PREFIX)

    proc = multiprocessing.get_context("fork").Process(target=worker)
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9
    world.check(settled=False)
    [o] = ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    assert o.outcome in ("archived", "gone")
    world.check()
    assert len(world.rows("SELECT * FROM spice_kernels")) == 1
    assert _kernel_file(kernel_dir, lsk["name"]) == lsk["data"]


@pytest.mark.parametrize("query", ["insert_kernel", "insert_delivery", "supersede_series"])
def test_catalog_outage_while_indexing_a_kernel(world: World, actors: Any, lsk: dict[str, Any], kernel_dir: Path,
                                                query: str) -> None:
    """PostgreSQL goes away mid-transaction; nothing is half-indexed; the retry indexes the kernel once."""
    world.deliver(SPICE_PREFIX + lsk["name"], lsk["data"])
    handler, _, dbf = _run(actors, kernel_dir)
    dbf.kill_backend_at(query)
    with pytest.raises(Exception, match=r"(?i)terminat|connection|closed"):
        ingest(handler, SPICE_PREFIX)
    world.check(settled=False)
    assert world.rows("SELECT * FROM spice_kernels") == []
    [o] = ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    assert o.outcome == "archived"
    world.check()


@pytest.mark.parametrize("op", ["UploadPartCopy", "CompleteMultipartUpload", "DeleteObject"])
def test_kernel_s3_failure_once(world: World, actors: Any, lsk: dict[str, Any], kernel_dir: Path, op: str) -> None:
    world.deliver(SPICE_PREFIX + lsk["name"], lsk["data"])
    handler, s3f, _ = _run(actors, kernel_dir)
    s3f.fail(op)
    with pytest.raises(Exception, match="InternalError"):
        ingest(handler, SPICE_PREFIX, final_attempt=False)
    [o] = ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    assert o.outcome in (("gone",) if op == "DeleteObject" else ("archived",))
    world.check()


def test_kernel_with_a_huge_sidecar_is_quarantined(world: World, actors: Any, lsk: dict[str, Any],
                                                   kernel_dir: Path) -> None:
    world.deliver(SPICE_PREFIX + lsk["name"], lsk["data"], b"x" * (10 * 1024 * 1024))
    [o] = ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    assert o.reason_code == "bad-sidecar" and "10485760 bytes" in o.reason
    world.check()


def test_hope_kernel_before_its_lsk_waits(world: World, actors: Any, kernel_dir: Path, tmp_path: Path) -> None:
    """A Hope SPK cannot be checked before an LSK is archived: it waits in the inbox (never quarantined)."""
    from emm_dev import synthetic

    [spk] = synthetic_spice.kernel_delivery(tmp_path / "k", start=synthetic.orbit_start(10),
                                            end=synthetic.orbit_start(11), generic=False)
    world.deliver(SPICE_PREFIX + spk.file_name, spk.path.read_bytes())
    [o] = ingest(_run(actors, kernel_dir)[0], SPICE_PREFIX)
    assert o.outcome == "waiting" and "LSK" in o.reason
    world.check(settled=False)
    assert len(world.keys(world.inbox)) == 2
