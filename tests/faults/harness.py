"""A reusable harness for fault tests: fault hooks, pausable actors, a clumsy MOC, and invariant checks.

* :class:`S3Faults` hooks a boto3 client's own event system (``before-call`` /
  ``after-call``): run an action at the Nth call of an S3 operation (let the MOC
  upload, pause this actor, kill the process) or make the call fail. Our storage
  code is not touched: it meets real S3 errors from moto's server.
* :class:`DbFaults` wraps a DB-API connection and runs an action before a chosen
  named query executes, e.g. terminating this session's PostgreSQL backend so the
  real driver sees the server go away mid-transaction.
* :class:`Actor` runs a handler in a thread and pauses it at a hook until the
  test releases it: interleavings are chosen, never timed.
* :class:`World` holds the buckets, the catalog and every upload the MOC made;
  :meth:`World.check` asserts the invariants: every delivered object is held (in
  the inbox, archived with matching row and object MD5, or quarantined with its
  own reason object), archived bytes never change, no file has two rows, every
  quarantine key is its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from emm_sdc.core import catalog as catalog_mod
from emm_sdc.core import checksums, naming

#: Totals over the session, printed by the suite's summary line (conftest.py).
TOTALS = {"checks": 0, "held": 0, "lost": 0, "duplicate_rows": 0, "product_checks": 0, "rows_without_objects": 0,
          "objects_without_rows": 0, "duplicate_products": 0}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def server_error(operation: str, code: str = "InternalError", status: int = 500) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


@dataclass
class _Hook:
    operation: str
    action: Callable[[dict[str, Any]], None]
    nth: int = 1
    times: int = 1
    when: Callable[[dict[str, Any]], bool] | None = None
    after: bool = False
    seen: int = 0
    fired: int = 0


class S3Faults:
    """Actions at chosen S3 calls of one client (``before-call``/``after-call`` events of botocore)."""

    def __init__(self, client: Any):
        self.client = client
        self.hooks: list[_Hook] = []
        self.calls: list[str] = []
        client.meta.events.register("before-call.s3", self._before)
        client.meta.events.register("after-call.s3", self._after)

    def at(self, operation: str, action: Callable[[dict[str, Any]], None], *, nth: int = 1, times: int = 1,
           when: Callable[[dict[str, Any]], bool] | None = None, after: bool = False) -> S3Faults:
        """Run ``action(params)`` at the ``nth`` matching call of ``operation`` (then ``times`` - 1 more)."""
        self.hooks.append(_Hook(operation, action, nth, times, when, after))
        return self

    def fail(self, operation: str, *, times: int = 1, nth: int = 1, code: str = "InternalError", status: int = 500,
             when: Callable[[dict[str, Any]], bool] | None = None) -> S3Faults:
        """Make calls of ``operation`` fail with an S3 error (a 500 by default)."""
        def boom(_params: dict[str, Any]) -> None:
            raise server_error(operation, code, status)
        return self.at(operation, boom, nth=nth, times=times, when=when)

    def _fire(self, model: Any, params: dict[str, Any], after: bool) -> None:
        for hook in self.hooks:
            if hook.after != after or hook.operation != model.name:
                continue
            if hook.when is not None and not hook.when(params):
                continue
            hook.seen += 1
            if hook.seen >= hook.nth and hook.fired < hook.times:
                hook.fired += 1
                hook.action(params)

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        self.calls.append(model.name)
        self._fire(model, context.get("input_params", {}), after=False)  # the API call's parameters

    def _after(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        self._fire(model, context.get("input_params", {}), after=True)


class _Cursor:
    def __init__(self, cur: Any, faults: DbFaults):
        self._cur = cur
        self._faults = faults

    def execute(self, sql: str, params: Any = None) -> Any:
        self._faults.before(sql)
        return self._cur.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class DbFaults:
    """A DB-API connection whose chosen named queries run an action first (e.g. the server goes away)."""

    def __init__(self, conn: Any, admin: Any):
        self.conn = conn
        self.admin = admin
        self.rules: list[tuple[str, Callable[[], None], list[int]]] = []
        self.commit_actions: list[tuple[Callable[[], None], list[int]]] = []

    def at(self, query_name: str, action: Callable[[], None], times: int = 1) -> DbFaults:
        self.rules.append((catalog_mod.queries()[query_name], action, [times]))
        return self

    def kill_backend_at(self, query_name: str) -> DbFaults:
        """PostgreSQL ends this session just before ``query_name`` runs (mid-transaction)."""
        return self.at(query_name, self.kill_backend)

    def after_commit(self, action: Callable[[], None], times: int = 1) -> DbFaults:
        """Run ``action`` right after the server committed (e.g. the acknowledgement is lost)."""
        self.commit_actions.append((action, [times]))
        return self

    def commit(self) -> None:
        self.conn.commit()
        for action, left in self.commit_actions:
            if left[0] > 0:
                left[0] -= 1
                action()

    def kill_backend(self) -> None:
        """PostgreSQL ends this session now."""
        cur = self.admin.cursor()
        cur.execute("SELECT pg_terminate_backend(%(pid)s)", {"pid": self.conn.info.backend_pid})
        cur.close()
        self.admin.commit()

    def before(self, sql: str) -> None:
        for text, action, left in self.rules:
            if sql == text and left[0] > 0:
                left[0] -= 1
                action()

    def cursor(self) -> _Cursor:
        return _Cursor(self.conn.cursor(), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.conn, name)


class Paused(Exception):
    """The actor was never released (a test bug)."""


class Actor:
    """Runs ``fn`` in a thread; :meth:`pause_hook` makes it stop at a chosen point until :meth:`release`."""

    def __init__(self, name: str, fn: Callable[[], Any]):
        self.name = name
        self.fn = fn
        self.reached = threading.Event()
        self._resume = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def pause_hook(self, _params: Any = None) -> None:
        self.reached.set()
        if not self._resume.wait(60):
            raise Paused(f"{self.name} was never released")

    def _run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc
        finally:
            self.reached.set()  # an actor that ends without reaching its pause must not hang the test

    def start_and_wait_paused(self) -> Actor:
        self._thread.start()
        assert self.reached.wait(60), f"{self.name} did not reach its pause point"
        assert self._thread.is_alive(), f"{self.name} ended before its pause point: {self.error!r}"
        return self

    def release(self) -> Any:
        self._resume.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), f"{self.name} did not finish"
        return self.result


def kill_this_process(_params: Any = None) -> None:
    """SIGKILL: a worker dying mid-task (no clean-up, no exception handlers)."""
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class Upload:
    """One upload by the MOC: a data file and (usually) its sidecar, with the versions S3 gave them."""

    key: str
    data: bytes
    sidecar: bytes | None
    version_id: str | None = None
    sidecar_version_id: str | None = None
    must_hold: bool = True  # False: the MOC itself overwrote it before the SDC could see it

    @property
    def md5(self) -> str:
        return md5(self.data)

    @property
    def name(self) -> str:
        return self.key.rstrip("/").rsplit("/", 1)[-1]


@dataclass
class World:
    """Buckets, catalog and the MOC's uploads of one fault case."""

    client: Any
    inbox: str
    archive: str
    conn: Any
    versioned: bool
    uploads: list[Upload] = field(default_factory=list)
    archive_seen: dict[str, str] = field(default_factory=dict)  # key -> MD5 of its bytes when first seen

    # --- the MOC --------------------------------------------------------------------------------
    def deliver(self, key: str, data: bytes, sidecar: bytes | str | None = "auto") -> Upload:
        """Upload a file (and its sidecar: a correct one by default, ``None`` for none, or given bytes)."""
        if sidecar == "auto":
            sidecar = checksums.format_sidecar(md5(data), key.rsplit("/", 1)[-1]).encode()
        resp = self.client.put_object(Bucket=self.inbox, Key=key, Body=data)
        side_resp = (self.client.put_object(Bucket=self.inbox, Key=key + naming.SIDECAR_SUFFIX, Body=sidecar)
                     if isinstance(sidecar, bytes) else {})
        up = Upload(key, data, sidecar if isinstance(sidecar, bytes) else None, resp.get("VersionId"),
                    side_resp.get("VersionId"))
        self.uploads.append(up)
        return up

    def deliver_later(self, key: str, data: bytes, sidecar: bytes | str | None = "auto") -> Callable[..., None]:
        """An S3-hook action: the MOC uploads at that moment."""
        def act(_params: Any = None) -> None:
            self.deliver(key, data, sidecar)
        return act

    # --- looking -------------------------------------------------------------------------------
    def read(self, bucket: str, key: str, version_id: str | None = None) -> bytes | None:
        try:
            kwargs = {"VersionId": version_id} if version_id else {}
            return self.client.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
        except ClientError:
            return None

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [o["Key"] for o in page.get("Contents", [])]
        return sorted(out)

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with catalog_mod.transaction(self.conn) as cur:
            cur.execute(sql, params or {})
            return catalog_mod._rows(cur)

    def snapshot_archive(self) -> None:
        """Remember the bytes of every archive object; a later change is a violation."""
        for key in self.keys(self.archive):
            data = self.read(self.archive, key)
            assert data is not None
            seen = self.archive_seen.setdefault(key, md5(data))
            assert seen == md5(data), f"archived bytes of {key} changed: {seen} -> {md5(data)}"

    def in_inbox(self, up: Upload) -> bool:
        """The upload is still the current object of its key in the inbox."""
        head = None
        try:
            head = self.client.head_object(Bucket=self.inbox, Key=up.key)
        except ClientError:
            return False
        if self.versioned and up.version_id:
            return head.get("VersionId") == up.version_id
        return self.read(self.inbox, up.key) == up.data

    def where(self, up: Upload) -> str | None:
        """Where an upload is held now: 'archived', 'quarantined', 'inbox', or None (lost)."""
        parsed, _ = naming.problems_in(up.name)
        rows = self.rows("SELECT * FROM science_files WHERE lower(file_name) = lower(%(n)s)", {"n": up.name}) \
            if parsed else []
        rows += self.rows("SELECT *, md5checksum AS md5 FROM spice_kernels WHERE file_name = %(n)s", {"n": up.name})
        for row in rows:
            if row["md5checksum"] == up.md5 and md5(self.read(row["bucket"], row["s3_key"]) or b"-") == up.md5:
                return "archived"
        for q in self.rows("SELECT * FROM quarantine WHERE original_key = %(k)s", {"k": up.key}):
            kept = self.read(self.archive, q["quarantine_key"])
            reason = self.read(self.archive, q["quarantine_key"] + ".reason.json")
            if kept == up.data and reason is not None and json.loads(reason)["reason_code"] == q["reason_code"]:
                return "quarantined"
        if self.in_inbox(up):
            return "inbox"
        return None

    def check(self, *, settled: bool = True, allow_inbox: tuple[str, ...] = ()) -> dict[str, str]:
        """Assert every invariant; return where each upload is. ``settled``: nothing may wait in the inbox
        (except keys in ``allow_inbox``)."""
        self.snapshot_archive()
        where = {f"{u.key}#{i}": self.where(u) for i, u in enumerate(self.uploads) if u.must_hold}
        lost = [k for k, w in where.items() if w is None]
        dup = self.rows("SELECT lower(file_name) AS n, count(*) AS c FROM science_files GROUP BY 1 HAVING count(*) > 1")
        TOTALS["checks"] += 1
        TOTALS["lost"] += len(lost)
        TOTALS["duplicate_rows"] += len(dup)
        TOTALS["held"] += len(where) - len(lost)
        assert not lost, f"lost: {lost} (everything: {where})"
        assert not dup, f"file names with two rows: {dup}"
        q = self.rows("SELECT quarantine_key FROM quarantine")
        assert len({r["quarantine_key"] for r in q}) == len(q)
        for r in q:
            assert self.read(self.archive, r["quarantine_key"] + ".reason.json") is not None, r
        for row in self.rows("SELECT file_name, bucket, s3_key, md5checksum FROM science_files"):
            data = self.read(row["bucket"], row["s3_key"])
            assert data is not None and md5(data) == row["md5checksum"], f"row without its bytes: {row}"
        deliveries = self.rows("SELECT delivery_id, count(*) AS c FROM deliveries WHERE delivery_id IS NOT NULL "
                               "GROUP BY 1 HAVING count(*) > 1")
        assert not deliveries, f"a delivery logged twice: {deliveries}"
        if settled:
            left = [k for k in self.keys(self.inbox) if k not in allow_inbox]
            assert not left, f"still in the inbox: {left}"
        return where

    def check_products(self, *, settled: bool = True) -> dict[str, Any]:
        """Processing invariants: every archived data object has exactly one row with its MD5 (and lineage,
        for products); every row has its object; one file per (root, version); no run left half-done."""
        self.snapshot_archive()
        rows = self.rows("SELECT id, file_name, file_root, absolute_version, bucket, s3_key, md5checksum, "
                         "processing_run_id FROM science_files")
        by_key = {r["s3_key"]: r for r in rows}
        objects = {k: md5(self.read(self.archive, k) or b"") for k in self.keys(self.archive, "emm/data/")}
        reserved = {r["s3_key"] for r in self.rows("SELECT s3_key FROM pending_objects")}
        orphans = [k for k in objects if k not in by_key and not (not settled and k in reserved)]
        phantoms = [r["file_name"] for r in rows if objects.get(r["s3_key"]) != r["md5checksum"]]
        dups = self.rows("SELECT lower(file_root) AS r, absolute_version, count(*) AS c FROM science_files "
                         "GROUP BY 1, 2 HAVING count(*) > 1")
        no_lineage = self.rows("SELECT f.file_name FROM science_files f WHERE f.processing_run_id IS NOT NULL "
                               "AND NOT EXISTS (SELECT 1 FROM lineage l WHERE l.product_id = f.id)")
        TOTALS["product_checks"] += 1
        TOTALS["rows_without_objects"] += len(phantoms)
        TOTALS["objects_without_rows"] += len(orphans)
        TOTALS["duplicate_products"] += len(dups)
        assert not phantoms, f"rows without their object: {phantoms}"
        assert not orphans, f"objects without a row: {orphans}"
        assert not dups and not no_lineage, (dups, no_lineage)
        runs = self.rows("SELECT r.id, r.status, r.message, count(f.id) AS products FROM processing_runs r "
                         "LEFT JOIN science_files f ON f.processing_run_id = r.id GROUP BY r.id ORDER BY r.id")
        for run in runs:
            assert run["status"] != "success" or run["products"] > 0, f"a success without products: {run}"
            assert run["status"] not in ("failed", "skipped") or run["products"] == 0, f"products of a {run}"
            if settled:
                assert run["status"] in ("success", "failed", "skipped"), f"a run left running: {run}"
        twice = self.rows("SELECT input_hash FROM processing_runs WHERE status = 'success' AND NOT forced "
                          "AND input_hash IS NOT NULL GROUP BY 1 HAVING count(*) > 1")
        assert not twice, f"one job (input hash) indexed twice: {twice}"
        if settled:
            assert self.rows("SELECT * FROM pending_objects") == [], "reservations left behind"
        return {"runs": runs, "rows": rows}

    def rows_named(self, name: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM science_files WHERE lower(file_name) = lower(%(n)s)", {"n": name})


def iter_versions(client: Any, bucket: str, key: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=key):
        yield from (v for v in page.get("Versions", []) if v["Key"] == key)
