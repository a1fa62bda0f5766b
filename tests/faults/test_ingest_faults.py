"""Ingest against a hostile or clumsy MOC, racing runs, S3 and PostgreSQL faults, and dying workers.

Each case plays one fault at a chosen point, then lets the next run settle,
and checks the invariants (harness.World.check): every delivered object is in
the inbox, archived (row + object with its MD5) or quarantined with its own
reason; archived bytes never change; one row per file; one row per delivery.
"""

from __future__ import annotations

import json
import multiprocessing
from typing import Any

import pytest

from emm_sdc.core import checksums
from tests.faults.conftest import PREFIX, ingest
from tests.faults.harness import Actor, World, kill_this_process, md5

#: Where the MOC re-uploads the same name: S3 operations of the SDC's handling, before or after them
#: (CopyObject: how a copy was made before the pinned multipart copy, so these cases also ran on that code).
WINDOWS = {
    "before-checksum": (("GetObject",), False),
    "between-checksum-and-copy": (("CreateMultipartUpload", "CopyObject"), False),
    "between-copy-and-index": (("CompleteMultipartUpload", "CopyObject"), True),
    "between-index-and-delete": (("DeleteObject",), False),
}
COPY_STARTS = ("CreateMultipartUpload", "CopyObject")


def _key(name: str) -> str:
    return PREFIX + name


def _only(key: str) -> Any:
    return lambda p: p.get("Key") == key


@pytest.mark.parametrize("bytes_kind", ["other-bytes", "identical"])
@pytest.mark.parametrize("window", list(WINDOWS))
def test_reupload_in_every_window(world: World, actors: Any, l0: dict[str, Any], mode: str, window: str,
                                  bytes_kind: str) -> None:
    """The MOC re-sends a name while the SDC handles it: the first upload is archived, the second is
    handled by the next run (a conflict is quarantined, an identical copy is a duplicate), nothing hidden."""
    key = _key(l0["name"])
    first = world.deliver(key, l0["data"])
    again = l0["other"] if bytes_kind == "other-bytes" else l0["data"]
    ops, after = WINDOWS[window]
    handler, s3f, _ = actors()
    moc = world.deliver_later(key, again)
    fired: list[bool] = []

    def once(params: Any) -> None:
        if not fired:
            fired.append(True)
            moc(params)
    for op in ops:
        s3f.at(op, once, when=_only(key) if op in ("GetObject", "DeleteObject") else None, after=after)
    ingest(handler)
    world.snapshot_archive()
    if not world.versioned and bytes_kind == "other-bytes" and window in ("before-checksum",
                                                                          "between-checksum-and-copy"):
        # Unversioned inbox: the MOC's own upload replaced the first bytes before the SDC could copy them.
        first.must_hold = False
    ingest(actors()[0])  # the next run
    where = world.check()
    [row] = world.rows_named(l0["name"])
    archived = world.read(world.archive, row["s3_key"])
    if first.must_hold:
        assert archived == l0["data"]
        if bytes_kind == "other-bytes":
            assert list(where.values())[-1] == "quarantined"
            [q] = world.rows("SELECT reason_code FROM quarantine")
            assert q["reason_code"] == "conflict"
    else:  # the SDC never saw the first bytes whole; the replacement is the delivery it archives
        assert archived == again and world.rows("SELECT * FROM quarantine") == []


def test_stale_run_never_overwrites_the_archive(world: World, actors: Any, l0: dict[str, Any], mode: str) -> None:
    """Defect 1: run 1 checksums B1 and pauses; run 2 archives B1 and empties the inbox; the MOC re-delivers
    other bytes B2; run 1 resumes: the archive keeps B1 and B2 waits for the next run."""
    key = _key(l0["name"])
    world.deliver(key, l0["data"])
    run1, s3f, _ = actors(run_id="run1")
    a = Actor("run1", lambda: ingest(run1))
    for op in COPY_STARTS:
        s3f.at(op, a.pause_hook)
    a.start_and_wait_paused()
    [done] = ingest(actors(run_id="run2")[0])
    assert done.outcome == "archived"
    world.snapshot_archive()
    world.deliver(key, l0["other"])
    a.release()
    assert a.error is None, f"run 1 failed: {a.error!r}"
    [stale] = a.result
    assert stale.outcome == "waiting"
    world.snapshot_archive()  # unchanged bytes (asserted inside)
    [row] = world.rows_named(l0["name"])
    assert world.read(world.archive, row["s3_key"]) == l0["data"] and row["md5checksum"] == md5(l0["data"])
    [later] = ingest(actors(run_id="run3")[0])
    assert (later.outcome, later.reason_code) == ("quarantined", "conflict")
    world.check()


def test_two_runs_handle_one_delivery(world: World, actors: Any, l0: dict[str, Any], mode: str) -> None:
    """Run 1 pauses just before its copy becomes visible; run 2 handles the same delivery completely."""
    key = _key(l0["name"])
    world.deliver(key, l0["data"])
    run1, s3f, _ = actors(run_id="run1")
    a = Actor("run1", lambda: ingest(run1))
    s3f.at("CompleteMultipartUpload", a.pause_hook)
    a.start_and_wait_paused()
    assert [o.outcome for o in ingest(actors(run_id="run2")[0])] == ["archived"]
    [late] = a.release()
    assert a.error is None and late.outcome in ("duplicate", "gone")
    world.check()
    assert len(world.rows("SELECT * FROM deliveries")) == 1


def test_two_spellings_racing_make_one_file(world: World, actors: Any, l0: dict[str, Any]) -> None:
    """Defect 6 under a race: 'T' and 't' spellings of one file handled at once end as one row, one object."""
    upper = l0["name"]
    lower = upper.replace("T", "t", 1)
    world.deliver(_key(upper), l0["data"])
    world.deliver(_key(lower), l0["data"])
    run1, _, dbf = actors(run_id="run1")
    a = Actor("run1", lambda: [run1.handle(i) for i in _items(run1) if i.key == _key(upper)])
    dbf.at("insert_file_if_new", a.pause_hook)
    a.start_and_wait_paused()
    run2 = actors(run_id="run2")[0]
    [b] = [run2.handle(i) for i in _items(run2) if i.key == _key(lower)]
    [late] = a.release()
    assert a.error is None and sorted([b.outcome, late.outcome]) == ["archived", "duplicate"]
    world.check()
    assert len(world.rows_named(upper)) == 1
    assert len(world.keys(world.archive, "emm/data/")) == 1


def _items(handler: Any) -> list[Any]:
    from datetime import UTC, datetime, timedelta

    from emm_sdc.core import delivery

    objects = handler.storage.list(handler.inbox_bucket, PREFIX)
    return delivery.plan(objects, PREFIX, now=datetime.now(UTC), grace=timedelta(0)).actionable


@pytest.mark.parametrize("same_bytes", [True, False])
def test_other_spelling_later_is_one_identity(world: World, actors: Any, l0: dict[str, Any],
                                             same_bytes: bool) -> None:
    """Defect 6: an archived L0 re-delivered with the other separator case is a duplicate (or a conflict),
    never a second row or object."""
    world.deliver(_key(l0["name"]), l0["data"])
    ingest(actors()[0])
    world.deliver(_key(l0["name"].replace("T", "t", 1)), l0["data"] if same_bytes else l0["other"])
    [o] = ingest(actors()[0])
    assert o.outcome == ("duplicate" if same_bytes else "quarantined")
    world.check()
    assert len(world.rows_named(l0["name"])) == 1 and len(world.keys(world.archive, "emm/data/")) == 1


def test_quarantine_is_per_delivery(world: World, actors: Any, l0: dict[str, Any], mode: str) -> None:
    """Defect 3: two deliveries of one name and bytes with different wrong sidecars keep their own sidecar,
    reason object and row."""
    key = _key(l0["name"])
    sidecars = [checksums.format_sidecar("1" * 32, l0["name"]).encode(),
                checksums.format_sidecar("2" * 32, l0["name"]).encode()]
    for side in sidecars:
        world.deliver(key, l0["data"], side)
        [o] = ingest(actors()[0])
        assert o.reason_code == "checksum-mismatch"
    world.check()
    rows = world.rows("SELECT * FROM quarantine ORDER BY id")
    assert len(rows) == 2 and rows[0]["quarantine_key"] != rows[1]["quarantine_key"]
    for row, side in zip(rows, sidecars, strict=True):
        assert world.read(world.archive, row["quarantine_key"] + ".md5") == side
        reason = json.loads(world.read(world.archive, row["quarantine_key"] + ".reason.json") or b"{}")
        assert reason["details"]["declared_md5"] == side.split()[0].decode() == row["details"]["declared_md5"]
        assert reason["reason"] == row["reason"]


def test_invalid_names_that_sanitise_alike_keep_their_own_quarantine(world: World, actors: Any) -> None:
    """Defect 3: 'bad name.bin' and 'bad_name.bin' both quarantine, neither overwrites the other."""
    for name, data in (("bad name.bin", b"same"), ("bad_name.bin", b"same")):
        world.deliver(_key(name), data)
    outcomes = ingest(actors()[0])
    assert {o.reason_code for o in outcomes} == {"invalid-name"}
    assert len({o.quarantine_key for o in outcomes}) == 2
    world.check()


SIDECARS = {
    "10 MB of garbage": b"\x00garbage" * (10 * 1024 * 1024 // 8),
    "not UTF-8": b"\xff\xfe\xfa" * 20,
    "two lines": b"0" * 32 + b"  a.bin\n" + b"1" * 32 + b"  b.bin\n",
    "another file's name": None,  # filled in below
    "empty": b"",
}


@pytest.mark.parametrize("kind", list(SIDECARS))
def test_malformed_sidecars_quarantine_and_never_block(world: World, actors: Any, l0: dict[str, Any],
                                                      kind: str) -> None:
    """Defect 4: a sidecar that can never be read is 'bad-sidecar'; the other file of the run is archived."""
    side = SIDECARS[kind] if SIDECARS[kind] is not None else checksums.format_sidecar(
        md5(l0["data"]), "emm_exi_l0_other.bin").encode()
    world.deliver(_key(l0["name"]), l0["data"], side)
    world.deliver(_key(l0["name2"]), l0["data2"])
    outcomes = {o.file_name: o for o in ingest(actors()[0])}
    assert outcomes[l0["name"]].reason_code == "bad-sidecar"
    assert outcomes[l0["name2"]].outcome == "archived"
    assert ingest(actors()[0]) == []  # the next run has nothing left to trip over
    world.check()


def test_a_file_failing_the_same_way_every_try_is_quarantined_on_the_last(world: World, actors: Any,
                                                                         l0: dict[str, Any]) -> None:
    """Poison: reading this one file is refused every time (not an outage). Earlier tries fail and keep
    it; the last try quarantines it with the error; the other file is archived."""
    key = _key(l0["name"])
    world.deliver(key, l0["data"])
    world.deliver(_key(l0["name2"]), l0["data2"])
    for final in (False, True):
        handler, s3f, _ = actors()
        s3f.fail("GetObject", times=99, code="AccessDenied", status=403, when=_only(key))
        if not final:
            with pytest.raises(Exception, match="AccessDenied"):
                ingest(handler, final_attempt=False)
            world.check(settled=False)
        else:
            outcomes = {o.file_name: o for o in ingest(handler, final_attempt=True)}
    assert outcomes[l0["name"]].reason_code == "handling-failed" and "AccessDenied" in outcomes[l0["name"]].reason
    assert outcomes[l0["name2"]].outcome == "archived"
    world.check()


def test_an_outage_on_every_try_leaves_the_file_in_the_inbox(world: World, actors: Any, l0: dict[str, Any]) -> None:
    """Transient errors never quarantine: on the last try the task fails and the file waits in the inbox."""
    key = _key(l0["name"])
    world.deliver(key, l0["data"])
    handler, s3f, _ = actors()
    s3f.fail("GetObject", times=99, when=_only(key))
    with pytest.raises(Exception, match="InternalError"):
        ingest(handler, final_attempt=True)
    world.check(settled=False)
    assert world.keys(world.inbox) == [key, key + ".md5"]
    assert world.rows("SELECT * FROM quarantine") == []


ARCHIVE_OPS = ["HeadObject", "GetObject", "CreateMultipartUpload", "UploadPartCopy", "CompleteMultipartUpload",
               "DeleteObject"]
QUARANTINE_OPS = ["UploadPartCopy", "PutObject", "DeleteObject"]


@pytest.mark.parametrize(("path", "op"), [("archive", op) for op in ARCHIVE_OPS]
                         + [("quarantine", op) for op in QUARANTINE_OPS])
@pytest.mark.parametrize("failures", [1, 3])
def test_s3_failing_then_recovering(world: World, actors: Any, l0: dict[str, Any], path: str, op: str,
                                    failures: int) -> None:
    """An S3 call fails (once, or on three tries in a row); each try fails cleanly; the next one converges."""
    sidecar = "auto" if path == "archive" else checksums.format_sidecar("1" * 32, l0["name"]).encode()
    world.deliver(_key(l0["name"]), l0["data"], sidecar)
    for _ in range(failures):
        handler, s3f, _ = actors()
        s3f.fail(op)
        with pytest.raises(Exception, match="InternalError"):
            ingest(handler, final_attempt=False)
        world.check(settled=False)
    [o] = ingest(actors()[0])
    # a failed delete leaves only the clean-up to the retry (the outcome was committed)
    assert o.outcome == ("gone" if op == "DeleteObject" else "archived" if path == "archive" else "quarantined")
    world.check()
    if path == "quarantine":
        [row] = world.rows("SELECT quarantine_key FROM quarantine")
        assert world.keys(world.archive, "emm/quarantine/") == sorted(
            [row["quarantine_key"], row["quarantine_key"] + ".md5", row["quarantine_key"] + ".reason.json"])
    assert (world.keys(world.archive, "emm/quarantine/") == []) == (path == "archive")


@pytest.mark.parametrize(("path", "query"), [("archive", "file_by_identity"), ("archive", "insert_file_if_new"),
                                             ("archive", "insert_delivery"), ("quarantine", "insert_quarantine"),
                                             ("quarantine", "insert_delivery")])
def test_postgres_going_away_mid_transaction(world: World, actors: Any, l0: dict[str, Any], path: str,
                                             query: str) -> None:
    """PostgreSQL ends the session just before a statement of the indexing transaction; the retry converges."""
    sidecar = "auto" if path == "archive" else checksums.format_sidecar("1" * 32, l0["name"]).encode()
    world.deliver(_key(l0["name"]), l0["data"], sidecar)
    handler, _, dbf = actors()
    dbf.kill_backend_at(query)
    with pytest.raises(Exception, match=r"(?i)terminat|connection|closed"):
        ingest(handler, final_attempt=True)  # an outage is never a reason to quarantine
    world.check(settled=False)
    [o] = ingest(actors()[0])
    assert o.outcome == ("archived" if path == "archive" else "quarantined")
    world.check()


KILL_POINTS = {
    "after the copy, before indexing": ("archive", "CompleteMultipartUpload", True),
    "after indexing, before the inbox delete": ("archive", "DeleteObject", False),
    "after the quarantine copy, before its reason": ("quarantine", "PutObject", False),
    "after quarantining, before the inbox delete": ("quarantine", "DeleteObject", False),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_worker_killed_mid_task_then_rerun(world: World, actors: Any, l0: dict[str, Any], point: str) -> None:
    """The worker process dies (SIGKILL) at a chosen point; the rerun completes the work exactly once."""
    path, op, after = KILL_POINTS[point]
    sidecar = "auto" if path == "archive" else checksums.format_sidecar("1" * 32, l0["name"]).encode()
    world.deliver(_key(l0["name"]), l0["data"], sidecar)

    def worker() -> None:
        handler, s3f, _ = actors()
        s3f.at(op, kill_this_process, after=after)
        ingest(handler)

    proc = multiprocessing.get_context("fork").Process(target=worker)
    proc.start()
    proc.join(60)
    assert proc.exitcode == -9, f"the worker was not killed at {point} (exit {proc.exitcode})"
    world.check(settled=False)
    [o] = ingest(actors()[0])
    assert o.outcome in (("archived", "gone") if path == "archive" else ("quarantined", "gone"))
    world.check()
    assert len(world.rows("SELECT * FROM deliveries")) == 1
    assert len(world.rows("SELECT * FROM quarantine")) == (0 if path == "archive" else 1)


ODD_KEYS = {
    "an L0 uploaded as a folder": ("{name}/", "folder-key"),
    "an empty folder marker": ("sub/", "folder-key"),
    "a file in a sub-folder": ("sub/{name}", "unexpected-location"),
    "parent-directory segments": ("../../{name}", "unexpected-location"),
    "spaces and non-ASCII": ("émm données {name}", "invalid-name"),
    "a hidden file": (".{name}", "invalid-name"),
    "a 300-character name": ("{name}" + "x" * 250, "invalid-name"),
}


@pytest.mark.parametrize("kind", list(ODD_KEYS))
def test_odd_keys_are_quarantined_never_skipped(world: World, actors: Any, l0: dict[str, Any], kind: str) -> None:
    """Defect 5 and friends: every key under the inbox prefix ends somewhere, with a reason."""
    pattern, code = ODD_KEYS[kind]
    key = PREFIX + pattern.format(name=l0["name"])
    world.deliver(key, b"" if kind == "an empty folder marker" else l0["data"],
                  None if code in ("folder-key", "unexpected-location") else "auto")
    world.client.put_object(Bucket=world.inbox, Key=PREFIX, Body=b"")  # the prefix's own marker stays
    outcomes = ingest(actors()[0])
    assert [o.reason_code for o in outcomes if o.outcome == "quarantined"][:1] == [code]
    for o in outcomes:
        assert o.quarantine_key is None or ("/../" not in o.quarantine_key and len(o.quarantine_key) < 300)
    world.check(allow_inbox=(PREFIX,))
