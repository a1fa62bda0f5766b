"""Integrity reconciliation: prove that the archive bucket and the catalog agree, byte for byte.

A run (``emm_integrity_reconcile``, docs/reconciliation.md) is split into *partitions*, each a mapped task:

* ``archive`` partitions, one per archive prefix (``emm/data/<inst>/``, ``emm/spice/``, ``emm/quarantine/<area>/``,
  ``emm/logs/<inst>/``, ...; or the whole bucket when an S3 Inventory is read): the objects (live
  ``ListObjectsV2`` pages or the inventory, :mod:`emm_sdc.core.inventory`) and the catalog rows that expect an
  object there (one server-side cursor per area over a ``REPEATABLE READ`` snapshot, ``COLLATE "C"`` order)
  are merged by key in one pass, in bounded memory. An object without a row is an **orphan**, a row without
  its object a **phantom**; a size or an MD5 the ETag contradicts is a **size/checksum mismatch**; a
  quarantine row without its ``.reason.json`` is **quarantine_reason_missing**. A rotating slice of the key
  hash space is re-read and its MD5 recomputed (**deep verification**, throttled), so bit rot and overwrites
  that kept size and ETag are found within ``deep_verify_days``.
* the ``catalog`` partition: two *latest* rows for one file root, lineage naming a missing row, a kernel class
  that contradicts the name.
* ``inbox`` partitions: files left in an inbox longer than the sidecar grace plus a margin (**stale_inbox**).

Candidates are confirmed outside the snapshot before they are reported (an orphan must still exist and still
be unindexed, a phantom must still be missing), and anything younger than ``settle_minutes`` is left to the
next run: writes in flight are never findings. Findings go to ``reconciliation_findings``; the report (JSON +
CSV) to ``emm/reports/reconciliation/YYYY/MM/DD/<run>/``, written once. Repairs (:func:`repair`) are off by
default, shown by a dry run first, audited on each finding, idempotent, and never delete data.

No Airflow here: the task layer is ``emm_sdc.pipeline.reconcile``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emm_sdc.core import calibration, inventory, naming
from emm_sdc.core.catalog import Catalog, file_record, queries, transaction
from emm_sdc.core.checksums import StreamDigest, md5_file
from emm_sdc.core.delivery import folder_markers
from emm_sdc.core.inventory import InventoryManifest, Listed
from emm_sdc.core.kernels import SPICE_ROOT
from emm_sdc.core.naming import BUNDLE_ROOT, STAGING_ROOT, WORK_ROOT
from emm_sdc.core.release import RELEASE_ROOT
from emm_sdc.core.site_config import ReconciliationConfig
from emm_sdc.core.storage import (
    COPY_PART_SIZE,
    LOG_ROOT,
    QUARANTINE_ROOT,
    DestinationExists,
    ObjectVersion,
    Storage,
    json_bytes,
)

log = logging.getLogger(__name__)

REPORT_ROOT = "emm/reports/reconciliation"

KINDS = ("orphan", "phantom", "size_mismatch", "checksum_mismatch", "duplicate_latest", "lineage_missing_row",
         "kernel_class_mismatch", "quarantine_reason_missing", "stale_inbox")

#: What each finding means for the operator and what to do (docs/reconciliation.md says more).
ACTIONS = {
    "orphan": "An object no catalog row names. Run the DAG with repair (dry run first): a valid EMM file whose "
              "bytes match a logged delivery is re-indexed; anything else moves to quarantine (reason 'orphan') "
              "for review. Nothing is deleted.",
    "phantom": "The catalog row's object is gone. Repair restores it from the newest earlier S3 version with the "
               "recorded MD5 (versioned bucket) or marks it missing; then have it re-delivered (MOC: an identical "
               "delivery restores it) or reprocessed (products).",
    "size_mismatch": "The archived object's size is not the catalog's: its bytes changed behind the SDC's back. "
                     "Do not serve or release it; move it aside (bucket versioning keeps the original) and restore "
                     "the recorded bytes from an earlier version or a re-delivery/reprocessing.",
    "checksum_mismatch": "The archived bytes no longer have the catalog's MD5 (overwrite or silent corruption). "
                         "Do not serve or release it; move it aside (bucket versioning keeps the original) and "
                         "restore the recorded bytes from an earlier version or a re-delivery/reprocessing.",
    "duplicate_latest": "Two rows are the latest version of one file root (a stored file_root disagrees with its "
                        "name), so the API returns both. Repair re-derives file_root from the file names.",
    "lineage_missing_row": "Lineage names a file id that is not in science_files: the product's provenance is "
                           "broken. Restore the row from a catalog backup, or reprocess the product.",
    "kernel_class_mismatch": "The recorded kernel class (pred_rec / kernel_class) is not the letter in the file "
                             "name; API filters, releases and SPICE reprocessing use the recorded one. Correct the "
                             "row to the name's class (the name is the identity) or reprocess.",
    "quarantine_reason_missing": "A quarantined file lacks its <file>.reason.json. Repair rewrites it from the "
                                 "quarantine row (reason code, reason, details).",
    "stale_inbox": "A file has waited in the inbox longer than the sidecar grace plus the margin and no run "
                   "removed it: read the ingest DAG's report task (outage, batch limit, re-upload) and its logs; "
                   "re-run the ingest or ask the MOC to re-deliver.",
}


def severity(kind: str, area: str) -> str:
    """``error`` turns the run red; ``warning`` is reported only."""
    if kind in ("phantom", "size_mismatch", "checksum_mismatch", "duplicate_latest", "lineage_missing_row",
                "kernel_class_mismatch"):
        return "error"
    if kind == "orphan" and area in ("data", "spice", "calibration"):
        return "error"  # science bytes the catalog does not know: not "well indexed"
    return "warning"


@dataclass(frozen=True)
class Area:
    """A part of the archive bucket and the named query listing the objects the catalog expects in it."""

    name: str
    prefix: str
    query: str | None = None
    per_instrument: bool = False  # split into one partition per sub-folder (instrument)
    transient: bool = False  # written and expired outside the catalog: not reconciled


AREAS: tuple[Area, ...] = tuple(sorted((
    Area("data", naming.ARCHIVE_ROOT + "/", "recon_rows_data", per_instrument=True),
    Area("spice", SPICE_ROOT + "/", "recon_rows_spice"),
    Area("quarantine", QUARANTINE_ROOT + "/", "recon_rows_quarantine", per_instrument=True),
    Area("logs", LOG_ROOT + "/", "recon_rows_logs", per_instrument=True),
    Area("calibration", calibration.ARCHIVE_ROOT + "/", "recon_rows_calibration", per_instrument=True),
    Area("releases", RELEASE_ROOT + "/", "recon_rows_releases"),
    Area("staging", STAGING_ROOT + "/", "recon_rows_staging", per_instrument=True),
    Area("reports", "emm/reports/", "recon_rows_reports"),
    Area("bundles", BUNDLE_ROOT + "/", transient=True),  # API download bundles (expire by lifecycle rule)
    Area("work", WORK_ROOT + "/", transient=True),  # AWS Batch job staging (expire by lifecycle rule)
), key=lambda a: a.prefix))
OTHER = Area("other", "")


def area_of(key: str) -> Area:
    for a in AREAS:
        if key.startswith(a.prefix):
            return a
    return OTHER


def instrument_of(key: str) -> str | None:
    """The instrument a key belongs to (``emm/<area>/<inst>/...``), if any."""
    parts = key.split("/", 3)
    return parts[2] if len(parts) > 3 and parts[2] in naming.INSTRUMENTS else None


# --- run: scope, deep-verification slice, listing source ----------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """What a run covers; empty means everything."""

    instruments: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    @property
    def scoped(self) -> bool:
        return bool(self.instruments or self.prefixes)


def check_scope(instruments: Iterable[str] = (), prefixes: Iterable[str] = ()) -> Scope:
    """Validate a run's scope; ValueError naming the bad value and the rule."""
    insts = tuple(dict.fromkeys(instruments))
    bad = [i for i in insts if i not in naming.INSTRUMENTS]
    if bad:
        raise ValueError(f"instruments: {bad} are not instrument codes ({', '.join(naming.INSTRUMENTS)})")
    prefs = tuple(dict.fromkeys(prefixes))
    for p in prefs:
        if not p.startswith("emm/") or ".." in p or "//" in p or not p.endswith("/"):
            raise ValueError(f"prefixes: {p!r} must be an archive folder under 'emm/' ending in '/', "
                             "e.g. 'emm/data/exi/l1/'")
    return Scope(insts, prefs)


def deep_window(last: Mapping[str, Any] | None, now: datetime, cfg: ReconciliationConfig,
                fraction: float | None) -> tuple[float, float]:
    """(start, fraction) of the key hash space this run re-reads.

    Scheduled: the slice continues where the last finished full run stopped and covers the days since it
    (``1/deep_verify_days`` per day), so every object is re-read within ``deep_verify_days`` even when runs
    are skipped. ``fraction`` (a manual run's param) overrides the size.
    """
    start = 0.0
    if last is not None and last["deep_start"] is not None:
        start = (float(last["deep_start"]) + float(last["deep_fraction"] or 0)) % 1.0
    if fraction is None:
        days = 1.0 if last is None else max((now - last["started_at"]).total_seconds() / 86400, 0.0)
        fraction = days / cfg.deep_verify_days
    return start, min(max(float(fraction), 0.0), 1.0)


def in_slice(key: str, start: float, fraction: float) -> bool:
    """Whether a key falls in the hash-space slice [start, start + fraction) (wrapping at 1)."""
    if fraction >= 1.0:
        return True
    if fraction <= 0.0:
        return False
    return ((zlib.crc32(key.encode()) / 4294967296.0) - start) % 1.0 < fraction


def open_run(cat: Catalog, *, dag_id: str, dag_run_id: str, params: Mapping[str, Any], scope: Scope,
             cfg: ReconciliationConfig, now: datetime, listing: str,
             deep_fraction: float | None = None) -> dict[str, Any]:
    """Create (or, on a retry, find) the run's row; its deep-verification slice is fixed at creation."""
    last = None if scope.scoped else cat.last_reconciliation(dag_id)
    start, fraction = deep_window(last, now, cfg, deep_fraction)
    doc = {**params, "scoped": scope.scoped, "instruments": list(scope.instruments),
           "prefixes": list(scope.prefixes)}
    row = cat.open_reconciliation(dag_id=dag_id, dag_run_id=dag_run_id, params_json=json.dumps(doc),
                                  deep_start=start, deep_fraction=fraction, listing=listing)
    return {"id": row["id"], "deep_start": row["deep_start"], "deep_fraction": row["deep_fraction"],
            "listing": row["listing"], "started_at": row["started_at"].isoformat(), "dag_id": dag_id,
            "dag_run_id": dag_run_id}


def choose_listing(client: Any, cfg: ReconciliationConfig, scope: Scope, now: datetime) -> InventoryManifest | None:
    """The S3 Inventory to read, when one is configured, fresh enough, and the run is not limited to prefixes."""
    if cfg.inventory is None or scope.prefixes:
        return None
    manifest = inventory.latest_manifest(client, cfg.inventory.bucket, cfg.inventory.prefix)
    if manifest is None:
        log.warning("no inventory under s3://%s/%s: listing the bucket instead", cfg.inventory.bucket,
                    cfg.inventory.prefix)
        return None
    age = now - manifest.created
    if age > timedelta(hours=cfg.inventory.max_age_hours):
        log.warning("the newest inventory (%s) is %s old, more than %d h: listing the bucket instead",
                    manifest.manifest_key, age, cfg.inventory.max_age_hours)
        return None
    return manifest


# --- partitions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxTarget:
    """An inbox to watch for stale files: its prefix, sidecar grace and named sub-folders."""

    instrument: str
    bucket: str
    prefix: str
    grace_minutes: int
    folders: tuple[str, ...] = ()


#: Objects directly in a folder that is split into partitions (rare, always orphans) listed at most per run.
MAX_LOOSE = 10_000


def plan_partitions(client: Any, bucket: str, scope: Scope, *, manifest: InventoryManifest | None = None,
                    inbox: Sequence[InboxTarget] = ()) -> list[dict[str, Any]]:
    """The partitions of a run, so that together they cover every key of the bucket exactly once.

    Live listing: one partition per area, per instrument sub-folder for the split areas (the known
    instruments always, so an area emptied entirely is still compared), per unknown folder; objects lying
    directly in a split folder are listed here and judged by a ``loose`` partition. With an inventory: one
    partition for the whole bucket (one streaming pass over the inventory). Plus the catalog checks and one
    partition per inbox, unless the run is limited to prefixes.
    """
    parts: list[dict[str, Any]] = []

    def archive(prefix: str, **extra: Any) -> None:
        parts.append({"name": f"archive:{prefix or '(bucket)'}", "kind": "archive", "prefix": prefix, **extra})

    if scope.prefixes:
        for p in scope.prefixes:
            archive(p)
        return parts
    insts = scope.instruments or naming.INSTRUMENTS
    if manifest is not None and not scope.instruments:
        archive("", manifest=manifest.to_dict())
    else:
        loose: list[Listed] = []
        if scope.instruments:
            for a in AREAS:
                if a.per_instrument:
                    for inst in insts:
                        archive(f"{a.prefix}{inst}/", **({"manifest": manifest.to_dict()} if manifest else {}))
        else:
            top, at_root = inventory.common_prefixes(client, bucket, "")
            emm, at_emm = inventory.common_prefixes(client, bucket, "emm/")
            loose += at_root + at_emm
            for folder in sorted(set(top) - {"emm/"}):
                archive(folder)
            for folder in sorted(set(emm) | {a.prefix for a in AREAS}):
                area = area_of(folder)
                if area.transient:
                    continue
                if area.per_instrument and folder == area.prefix:
                    subs, at_area = inventory.common_prefixes(client, bucket, folder)
                    loose += at_area
                    for sub in sorted(set(subs) | {f"{folder}{i}/" for i in naming.INSTRUMENTS}):
                        archive(sub)
                else:
                    archive(folder)
        if loose:
            parts.append({"name": "archive:(loose objects)", "kind": "archive", "prefix": None,
                          "loose": [[o.key, o.size, o.etag, inventory.modified(o).isoformat()]
                                    for o in loose[:MAX_LOOSE]]})
    parts.append({"name": "catalog", "kind": "catalog", "instruments": list(scope.instruments)})
    for t in inbox:
        if not scope.instruments or t.instrument in scope.instruments:
            parts.append({"name": f"inbox:{t.prefix}", "kind": "inbox", "instrument": t.instrument,
                          "bucket": t.bucket, "prefix": t.prefix, "grace_minutes": t.grace_minutes,
                          "folders": list(t.folders)})
    return parts


# --- the catalog side: a snapshot read through server-side cursors ------------------------------------------

_K, _TABLE, _ID, _SIZE, _MD5, _ROLE, _INST, _CREATED = range(8)
_cursor_names = iter(range(1, 1 << 62))


@contextmanager
def snapshot(conn: Any) -> Iterator[datetime]:
    """A read-only REPEATABLE READ transaction on ``conn``: every cursor sees the catalog as of its start.

    Yields the snapshot's time. The catalog commits a row only after its object is written, so every row in
    the snapshot had its object before the listing (which starts afterwards) began.
    """
    conn.rollback()
    cur = conn.cursor()
    try:
        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cur.execute("SELECT now()")
        (at,) = cur.fetchone()
        yield at
    finally:
        cur.close()
        conn.rollback()


def stream_query(conn: Any, name: str, params: Mapping[str, Any], itersize: int = 5000) -> Iterator[tuple[Any, ...]]:
    """Rows of a named query through a server-side (named) cursor: ``itersize`` rows in memory at a time."""
    cur = conn.cursor(name=f"emm_recon_{next(_cursor_names)}")
    cur.itersize = itersize
    try:
        cur.execute(queries()[name], dict(params))
        yield from cur
    finally:
        cur.close()


def stream_dicts(conn: Any, name: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """:func:`stream_query` with each row as a dict."""
    cur = conn.cursor(name=f"emm_recon_{next(_cursor_names)}")
    cur.itersize = 2000
    try:
        cur.execute(queries()[name], dict(params))
        cols: list[str] | None = None
        for row in cur:
            cols = cols or [d[0] for d in cur.description]
            yield dict(zip(cols, row, strict=True))
    finally:
        cur.close()


def expected_rows(conn: Any, bucket: str, lo: str, hi: str) -> Iterator[tuple[Any, ...]]:
    """Every object the catalog expects with ``lo <= key < hi`` ('' = no end), in key order, area by area."""
    for a in AREAS:
        if a.query is None:
            continue
        a_hi = inventory.key_range_end(a.prefix)
        r_lo, r_hi = max(lo, a.prefix), min(hi, a_hi) if hi else a_hi
        if r_lo < r_hi:
            yield from stream_query(conn, a.query, {"bucket": bucket, "lo": r_lo, "hi": r_hi})


# --- comparing one object with its rows ---------------------------------------------------------------------


def etag_matches(etag: str, size: int, md5: str) -> bool | None:
    """Whether an ETag confirms an MD5: a plain ETag is the MD5; a one-part multipart ETag (the SDC's pinned
    copies up to 1 GiB) is the MD5 of that MD5 with ``-1``. None when the ETag cannot tell (more parts)."""
    if len(etag) == 32 and "-" not in etag:
        return etag == md5
    if etag.endswith("-1") and size <= COPY_PART_SIZE and len(md5) == 32:
        return etag[:-2] == hashlib.md5(bytes.fromhex(md5)).hexdigest()
    return None


class Throttle:
    """A stream observer that sleeps so the bytes it sees flow at no more than ``bytes_per_s``."""

    def __init__(self, bytes_per_s: float):
        self.rate = bytes_per_s
        self.seen = 0
        self.t0 = time.monotonic()

    def __call__(self, chunk: bytes) -> None:
        if self.rate <= 0:
            return
        self.seen += len(chunk)
        ahead = self.seen / self.rate - (time.monotonic() - self.t0)
        if ahead > 0:
            time.sleep(ahead)


@dataclass
class PartitionResult:
    """What one partition saw and found."""

    name: str
    kind: str
    objects: int = 0
    catalog_rows: int = 0
    verified_objects: int = 0
    verified_bytes: int = 0
    findings: Counter[str] = field(default_factory=Counter)
    known_missing: int = 0
    unsettled: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "objects": self.objects, "catalog_rows": self.catalog_rows,
                "verified_objects": self.verified_objects, "verified_bytes": self.verified_bytes,
                "findings": dict(self.findings), "known_missing": self.known_missing, "unsettled": self.unsettled,
                "seconds": round(self.seconds, 3)}


class FindingSink:
    """Writes a partition's findings to the catalog in batches (a retried partition replaces its findings)."""

    def __init__(self, cat: Catalog, run_id: int, partition: str, batch: int = 500):
        self.cat, self.run_id, self.partition, self.batch = cat, run_id, partition, batch
        self.pending: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        cat.clear_partition_findings(run_id, partition)

    def add(self, kind: str, area: str, *, bucket: str | None, key: str | None, table: str | None = None,
            catalog_id: int | None = None, instrument: str | None = None, expected: str = "", found: str = "",
            details: Mapping[str, Any] | None = None, repair: str | None = None) -> None:
        self.pending.append({
            "run_id": self.run_id, "partition_name": self.partition, "kind": kind, "severity": severity(kind, area),
            "area": area, "bucket": bucket, "s3_key": key, "catalog_table": table, "catalog_id": catalog_id,
            "instrument_id": instrument or (instrument_of(key) if key else None), "expected": expected,
            "found": found, "action": ACTIONS[kind], "details": json.dumps(dict(details or {}), default=str),
            "repair": repair})
        self.counts[kind] += 1
        if len(self.pending) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        self.cat.add_findings(self.pending)
        self.pending = []


def _describe(o: Listed) -> str:
    stamp = inventory.modified(o).isoformat() if o.last_modified else "?"
    return f"object of {o.size} bytes, ETag {o.etag}, modified {stamp}"


def _expect(row: tuple[Any, ...]) -> str:
    parts = [f"{row[_TABLE]} id {row[_ID]}"]
    if row[_SIZE] is not None:
        parts.append(f"{row[_SIZE]} bytes")
    if row[_MD5]:
        parts.append(f"MD5 {row[_MD5]}")
    return ", ".join(parts)


@dataclass
class ArchiveCheck:
    """The merge of one archive partition: objects vs expected rows, in key order."""

    storage: Storage
    cat: Catalog  # outside the snapshot: confirmations, findings
    bucket: str
    sink: FindingSink
    result: PartitionResult
    settled_before: datetime
    deep_start: float
    deep_fraction: float
    throttle: Throttle
    confirm_mismatch: bool = False  # inventory: an object may have changed since the inventory was taken
    pending: set[str] = field(default_factory=set)
    missing_marks: dict[str, int] = field(default_factory=dict)

    def run(self, objects: Iterator[Listed], rows: Iterator[tuple[Any, ...]]) -> None:
        obj = next(objects, None)
        row = next(rows, None)
        owner: str | None = None
        result = self.result
        deep = self.deep_fraction > 0
        while obj is not None or row is not None:
            if row is not None and (obj is None or row[_K] <= obj.key):
                key = row[_K]
                nxt = next(rows, None)
                if (nxt is None or nxt[_K] != key) and row[_ROLE] == "object":
                    result.catalog_rows += 1  # the common case: one row, one object
                    if obj is not None and obj.key == key:
                        result.objects += 1
                        size, md5 = row[_SIZE], row[_MD5]
                        if ((size is None or size == obj.size) and (not md5 or md5 == obj.etag)
                                and not self.missing_marks and not deep):
                            pass  # size and plain ETag agree: nothing to do
                        else:
                            self.compare(obj, [row])
                        obj = next(objects, None)
                    else:
                        self.absent(row)
                    row = nxt
                    continue
                group = [row]
                row = nxt
                while row is not None and row[_K] == key:
                    group.append(row)
                    row = next(rows, None)
                result.catalog_rows += len(group)
                if any(r[_ROLE] == "prefix" for r in group):
                    owner = key
                group = [r for r in group if r[_ROLE] != "prefix"]
                if obj is not None and obj.key == key:
                    result.objects += 1
                    if group:
                        self.compare(obj, group)
                    obj = next(objects, None)
                else:
                    for r in group:
                        self.absent(r)
            else:
                assert obj is not None
                result.objects += 1
                if not (owner is not None and obj.key.startswith(owner)):
                    self.orphan(obj)
                elif deep and self.in_slice(obj.key):
                    self.deep(obj, None, None)
                obj = next(objects, None)

    def in_slice(self, key: str) -> bool:
        return in_slice(key, self.deep_start, self.deep_fraction)

    # -- one key, both sides
    def compare(self, obj: Listed, group: list[tuple[Any, ...]]) -> None:
        if obj.key in self.missing_marks:
            self.cat.clear_missing_mark(self.missing_marks.pop(obj.key))
        row = next((r for r in group if r[_MD5]), group[0])
        verdict = self.listing_verdict(obj, row)
        if verdict is not None and self.confirm_mismatch:
            current = self.storage.stat(self.bucket, obj.key)
            if current is None:
                self.absent(row)
                return
            obj = Listed(obj.key, current.size, current.etag, current.last_modified)
            verdict = self.listing_verdict(obj, row)
        if verdict is not None:
            kind, expected, found = verdict
            self.sink.add(kind, area_of(obj.key).name, bucket=self.bucket, key=obj.key, table=row[_TABLE],
                          catalog_id=row[_ID], instrument=row[_INST], expected=expected, found=found,
                          details={"etag": obj.etag, "size": obj.size, "method": "listing"})
            return
        if self.in_slice(obj.key):
            self.deep(obj, row, row[_MD5] or None)

    @staticmethod
    def listing_verdict(obj: Listed, row: tuple[Any, ...]) -> tuple[str, str, str] | None:
        if row[_SIZE] is not None and obj.size != row[_SIZE]:
            return "size_mismatch", f"{row[_SIZE]} bytes ({_expect(row)})", f"{obj.size} bytes ({_describe(obj)})"
        if row[_MD5] and etag_matches(obj.etag, obj.size, row[_MD5]) is False:
            return "checksum_mismatch", f"MD5 {row[_MD5]} ({_expect(row)})", f"ETag {obj.etag} ({_describe(obj)})"
        return None

    def deep(self, obj: Listed, row: tuple[Any, ...] | None, md5: str | None) -> None:
        """Re-read the object and recompute its MD5; compare with the catalog's, else with a plain ETag."""
        want = md5 or (obj.etag if len(obj.etag) == 32 and "-" not in obj.etag else None)
        if want is None:
            return
        try:
            digest = StreamDigest(observers=[self.throttle]).consume(self.storage.iter_chunks(self.bucket, obj.key))
        except self.storage.client.exceptions.ClientError as exc:
            log.info("deep verification of %s skipped: %s (gone since it was listed?)", obj.key, exc)
            return
        self.result.verified_objects += 1
        self.result.verified_bytes += digest.size
        if digest.md5 == want and digest.size == obj.size:
            return
        what = f"MD5 {want}" + (f" ({_expect(row)})" if row is not None else " (the ETag S3 computed at upload)")
        self.sink.add("checksum_mismatch", area_of(obj.key).name, bucket=self.bucket, key=obj.key,
                      table=row[_TABLE] if row else None, catalog_id=row[_ID] if row else None,
                      instrument=row[_INST] if row else None, expected=what,
                      found=f"bytes re-read: MD5 {digest.md5}, {digest.size} bytes (ETag {obj.etag} unchanged)",
                      details={"etag": obj.etag, "size": digest.size, "md5": digest.md5, "method": "re-read"})

    # -- one side only
    def absent(self, row: tuple[Any, ...]) -> None:
        """A row's object is not in the listing: a phantom (or a missing reason object), once confirmed."""
        if row[_ROLE] == "optional":
            return
        key = row[_K]
        if key in self.missing_marks:
            self.result.known_missing += 1
            return
        if row[_CREATED] is not None and row[_CREATED] > self.settled_before:
            self.result.unsettled += 1
            return
        current = self.storage.stat(self.bucket, key)
        if current is not None:  # written after the listing passed it (or the inventory was taken)
            obj = Listed(key, current.size, current.etag, current.last_modified)
            self.result.objects += 1
            if row[_ROLE] == "object":
                self.compare(obj, [row])
            return
        kind = "quarantine_reason_missing" if row[_ROLE] == "reason" else "phantom"
        repair = "rewrite-reason" if kind == "quarantine_reason_missing" else "restore-or-mark-missing"
        self.sink.add(kind, area_of(key).name, bucket=self.bucket, key=key, table=row[_TABLE], catalog_id=row[_ID],
                      instrument=row[_INST], expected=f"an object ({_expect(row)})", found="no object",
                      repair=repair)

    def orphan(self, obj: Listed) -> None:
        """An object with no row: reported once confirmed (still there, still unindexed, old enough)."""
        if obj.key in self.pending:
            return
        if obj.last_modified is not None and inventory.modified(obj) > self.settled_before:
            self.result.unsettled += 1
            return
        area = area_of(obj.key)
        if area.transient:
            return
        if self.storage.stat(self.bucket, obj.key) is None:
            return
        if self.cat.key_indexed(self.bucket, obj.key):
            return
        repair = None if area.name == "quarantine" else "reindex-or-quarantine"
        self.sink.add("orphan", area.name, bucket=self.bucket, key=obj.key, expected="a catalog row naming it",
                      found=_describe(obj), details={"etag": obj.etag, "size": obj.size}, repair=repair)


def check_archive(storage: Storage, cat: Catalog, snapshot_conn: Any, run_row: Mapping[str, Any],
                  part: Mapping[str, Any], *, bucket: str, cfg: ReconciliationConfig, parallel: int = 1,
                  now: datetime | None = None) -> PartitionResult:
    """Compare one archive partition (a prefix, the whole bucket through an inventory, or loose objects)."""
    t0 = time.monotonic()
    result = PartitionResult(part["name"], "archive")
    sink = FindingSink(cat, run_row["id"], part["name"])
    prefix = part.get("prefix")
    lo, hi = (prefix, inventory.key_range_end(prefix)) if prefix is not None else ("", "")
    pending = cat.pending_keys(bucket, lo, hi)
    marks = cat.missing_marks(bucket, lo, hi)
    rate = cfg.deep_verify_mb_per_s * 1e6 / max(parallel, 1)
    with snapshot(snapshot_conn) as at:
        settled = min(at, now or at) - timedelta(minutes=cfg.settle_minutes)
        check = ArchiveCheck(storage, cat, bucket, sink, result, settled, float(run_row["deep_start"] or 0),
                             float(run_row["deep_fraction"] or 0), Throttle(rate),
                             confirm_mismatch="manifest" in part, pending=pending, missing_marks=marks)
        if prefix is None:  # loose objects found while planning: nothing is expected there
            objects: Iterator[Listed] = iter([Listed(k, s, e, datetime.fromisoformat(m))
                                              for k, s, e, m in part["loose"]])
            rows: Iterator[tuple[Any, ...]] = iter(())
        elif "manifest" in part:
            manifest = InventoryManifest.from_dict(part["manifest"])
            objects = inventory.inventory_listing(storage.client, manifest, lo, hi)
            rows = expected_rows(snapshot_conn, bucket, lo, hi)
        else:
            objects = inventory.live_listing(storage.client, bucket, prefix)
            rows = expected_rows(snapshot_conn, bucket, lo, hi)
        check.run(objects, rows)
    sink.flush()
    result.findings = sink.counts
    result.seconds = time.monotonic() - t0
    save_partition(cat, run_row["id"], result)
    return result


def save_partition(cat: Catalog, run_id: int, r: PartitionResult) -> None:
    cat.save_partition(run_id, name=r.name, kind=r.kind, objects=r.objects, catalog_rows=r.catalog_rows,
                       verified_objects=r.verified_objects, verified_bytes=r.verified_bytes,
                       findings=sum(r.findings.values()), seconds=r.seconds)


# --- catalog and inbox partitions ---------------------------------------------------------------------------

def canonical_root(file_name: str) -> str | None:
    """The file root a (valid) name implies, with the instrument's time separator; None for invalid names."""
    name, _ = naming.problems_in(file_name)
    return None if name is None else name.canonical().file_root


def check_catalog(cat: Catalog, run_id: int, *, instruments: Sequence[str] = ()) -> PartitionResult:
    """Catalog consistency: duplicate latest rows per file root, lineage to missing rows, kernel classes."""
    t0 = time.monotonic()
    result = PartitionResult("catalog", "catalog")
    sink = FindingSink(cat, run_id, "catalog")
    for g in cat.duplicate_latest_groups(instruments):
        roots = dict(zip(g["ids"], g["file_roots"], strict=True))
        wrong = [i for i, n in zip(g["ids"], g["file_names"], strict=True) if canonical_root(n) != roots[i]]
        sink.add("duplicate_latest", "data", bucket=None, key=g["s3_key"], table="science_files",
                 catalog_id=wrong[0] if wrong else g["ids"][0], instrument=g["instrument_id"],
                 expected=f"one latest row for file root {g['root']}",
                 found=f"{len(g['ids'])} latest rows: " + ", ".join(
                     f"id {i} {n} (file_root {r})" for i, n, r in zip(g["ids"], g["file_names"], g["file_roots"],
                                                                      strict=True)),
                 details={"ids": g["ids"], "file_names": g["file_names"], "file_roots": g["file_roots"],
                          "rows_to_fix": wrong}, repair="rederive-file-root" if wrong else None)
    for r in cat.lineage_missing_rows(instruments):
        missing = "product and input" if r["product_missing"] and r["input_missing"] else \
            "product" if r["product_missing"] else "input"
        sink.add("lineage_missing_row", "data", bucket=None, key=r["s3_key"], table="lineage",
                 catalog_id=r["product_id"], instrument=r["instrument_id"],
                 expected=f"science_files rows {r['product_id']} (product) and {r['input_id']} (input)",
                 found=f"no science_files row for the {missing}",
                 details={"product_id": r["product_id"], "input_id": r["input_id"],
                          "product_name": r["product_name"]})
    for r in cat.kernel_class_mismatches(instruments):
        sink.add("kernel_class_mismatch", "spice" if r["catalog_table"] == "spice_kernels" else "data", bucket=None,
                 key=r["s3_key"], table=r["catalog_table"], catalog_id=r["id"], instrument=r["instrument_id"],
                 expected=f"kernel class {r['named']!r} (from the name {r['file_name']})",
                 found=f"recorded class {r['recorded']!r}", details={"file_name": r["file_name"]})
    sink.flush()
    result.findings = sink.counts
    result.seconds = time.monotonic() - t0
    save_partition(cat, run_id, result)
    return result


def check_inbox(storage: Storage, cat: Catalog, run_id: int, part: Mapping[str, Any], *,
                cfg: ReconciliationConfig, now: datetime) -> PartitionResult:
    """Inbox files older than the sidecar grace plus the margin: no run handled (and removed) them."""
    t0 = time.monotonic()
    result = PartitionResult(part["name"], "inbox")
    sink = FindingSink(cat, run_id, part["name"])
    bucket, prefix = part["bucket"], part["prefix"]
    limit = timedelta(minutes=part["grace_minutes"] + cfg.stale_inbox_margin_minutes)
    markers = folder_markers(prefix, part.get("folders", ()))
    stale: dict[str, Listed] = {}
    keys: set[str] = set()
    for o in inventory.live_listing(storage.client, bucket, prefix):
        result.objects += 1
        if o.key in markers:
            continue
        keys.add(o.key)
        if o.last_modified is not None and now - inventory.modified(o) >= limit:
            stale[o.key] = o
    for key, o in sorted(stale.items()):
        if key.endswith(naming.SIDECAR_SUFFIX) and key[: -len(naming.SIDECAR_SUFFIX)] in keys:
            continue  # travels with its data file (reported with it)
        sidecar = key + naming.SIDECAR_SUFFIX
        handled = cat.inbox_deliveries([key])
        sink.add("stale_inbox", "inbox", bucket=bucket, key=key, instrument=part["instrument"],
                 expected=f"handled within {limit} of its upload (sidecar grace {part['grace_minutes']} min "
                          f"+ margin {cfg.stale_inbox_margin_minutes} min)",
                 found=f"still in the inbox {now - inventory.modified(o)} after its upload ({_describe(o)})"
                       + ("; its sidecar waits too" if sidecar in keys else "; no sidecar"),
                 details={"sidecar": sidecar if sidecar in keys else None,
                          "logged_deliveries": [{k: str(v) for k, v in h.items()} for h in handled]})
    sink.flush()
    result.findings = sink.counts
    result.seconds = time.monotonic() - t0
    save_partition(cat, run_id, result)
    return result


# --- repairs ------------------------------------------------------------------------------------------------


def _versioned(storage: Storage, bucket: str) -> bool:
    return storage.client.get_bucket_versioning(Bucket=bucket).get("Status") in ("Enabled", "Suspended")


def _orphan_quarantine_key(key: str, etag: str) -> str:
    area = instrument_of(key) or "archive"
    tag = hashlib.sha256(f"{key}\n{etag}".encode()).hexdigest()[:16]
    return f"{QUARANTINE_ROOT}/{area}/orphan-{tag}/{naming.safe_basename(key)}"


@dataclass
class Repairer:
    """Plans (dry run) or applies the repair of one finding; each returns the audit text."""

    storage: Storage
    cat: Catalog
    bucket: str
    run: Mapping[str, Any]
    dry_run: bool

    def orphan(self, f: Mapping[str, Any]) -> str:
        key = f["s3_key"]
        version = self.storage.stat(self.bucket, key)
        if version is None:
            return "nothing to do: the object is gone"
        if self.cat.key_indexed(self.bucket, key):
            return "nothing to do: the object is indexed now"
        md5, parts = self.storage.md5_of(version)
        base = key.rsplit("/", 1)[-1]
        name, _ = naming.problems_in(base)
        if f["area"] == "data" and name is not None and name.canonical().archive_key == key:
            delivery = self.cat.known_delivery(base, md5, version.size)
            if delivery is not None:
                return self._reindex(name.canonical(), version, md5, delivery)
        return self._quarantine(f, version, md5, parts)

    def _reindex(self, name: naming.EmmName, version: ObjectVersion, md5: str, delivery: Mapping[str, Any]) -> str:
        what = (f"re-index {name.file_name} ({version.size} bytes, MD5 {md5}): its bytes are those of delivery "
                f"{delivery['id']} ({delivery['inbox_key']}, {delivery['outcome']} by {delivery['dag_run_id']})")
        if self.dry_run:
            return "would " + what
        record = file_record(name, size=version.size, md5=md5, bucket=self.bucket)
        file_id = self.cat.reindex_delivered_file(record, delivery["id"])
        if file_id is None:
            raise RuntimeError(f"{name.file_name} is indexed under another key; not re-indexed")
        return f"{what}: science_files id {file_id}"

    def _quarantine(self, f: Mapping[str, Any], version: ObjectVersion, md5: str, parts: list[str]) -> str:
        key = f["s3_key"]
        qkey = _orphan_quarantine_key(key, version.etag)
        what = f"move to quarantine s3://{self.bucket}/{qkey} (reason 'orphan'; {version.size} bytes, MD5 {md5})"
        if self.dry_run:
            return "would " + what
        self.storage.write_once(self.bucket, qkey, md5, lambda: self.storage.copy_pinned(
            version, self.bucket, qkey, md5=md5, part_md5s=parts))
        reason = {"file": key.rsplit("/", 1)[-1], "original": f"s3://{self.bucket}/{key}",
                  "original_etag": version.etag, "quarantine": f"s3://{self.bucket}/{qkey}",
                  "reason_code": "orphan", "rule": "an archived object no catalog row names",
                  "reason": f"found by reconciliation run {self.run['dag_run_id']} (finding {f['id']})",
                  "details": {"size": version.size, "md5": md5, "finding_id": f["id"]},
                  "dag_id": self.run["dag_id"], "dag_run_id": self.run["dag_run_id"]}
        try:
            self.storage.put_new(self.bucket, qkey + ".reason.json", json_bytes(reason), "application/json")
        except DestinationExists:
            log.info("reason for %s was written by an earlier attempt; kept", qkey)
        self.cat.add_quarantine_row(
            instrument=instrument_of(key) or "archive", original_key=key, quarantine_key=qkey, reason_code="orphan",
            reason=reason["reason"], details_json=json.dumps(reason["details"]), md5=md5, size=version.size,
            dag_id=self.run["dag_id"], dag_run_id=self.run["dag_run_id"])
        # The bytes are safe in quarantine (a verified copy): the archive key is cleared of exactly the version
        # copied. A versioned bucket keeps it as a noncurrent version (a delete marker is added, nothing erased).
        if _versioned(self.storage, self.bucket):
            self.storage.client.delete_object(Bucket=self.bucket, Key=key)
        elif not self.storage.delete_version(ObjectVersion(self.bucket, key, version.etag, version.size)):
            return what + "; the archive key holds newer bytes now and was left as it is"
        return what

    def phantom(self, f: Mapping[str, Any]) -> str:
        key = f["s3_key"]
        if self.storage.stat(self.bucket, key) is not None:
            return "nothing to do: the object is back"
        want = self._expected(f)
        if _versioned(self.storage, self.bucket):
            for v in self._versions(key):
                if want["size"] is not None and v.size != want["size"]:
                    continue
                md5, parts = self.storage.md5_of(v)
                if want["md5"] and md5 != want["md5"]:
                    continue
                what = f"restore version {v.version_id} ({v.size} bytes, MD5 {md5}) as the current object"
                if self.dry_run:
                    return "would " + what
                self.storage.write_once(self.bucket, key, md5, lambda v=v, md5=md5, parts=parts:
                                        self.storage.copy_pinned(v, self.bucket, key, md5=md5, part_md5s=parts))
                return what
        what = "mark it missing (missing_objects); no earlier version holds the recorded bytes"
        if self.dry_run:
            return "would " + what
        self.cat.mark_missing(bucket=self.bucket, s3_key=key, catalog_table=f["catalog_table"],
                              catalog_id=f["catalog_id"], run_id=f["run_id"], finding_id=f["id"])
        return what

    @staticmethod
    def _expected(f: Mapping[str, Any]) -> dict[str, Any]:
        text = f["expected"] or ""
        size = re.search(r"(\d+) bytes", text)
        md5 = re.search(r"MD5 ([0-9a-f]{32})", text)
        return {"size": int(size[1]) if size else None, "md5": md5[1] if md5 else None}

    def _versions(self, key: str) -> list[ObjectVersion]:
        out: list[ObjectVersion] = []
        for page in self.storage.client.get_paginator("list_object_versions").paginate(Bucket=self.bucket,
                                                                                        Prefix=key):
            for v in page.get("Versions", ()):
                if v["Key"] == key:
                    out.append(ObjectVersion(self.bucket, key, v["ETag"].strip('"'), v["Size"], v["VersionId"],
                                             v["LastModified"]))
        return sorted(out, key=lambda v: v.last_modified or datetime.min.replace(tzinfo=UTC), reverse=True)

    def reason(self, f: Mapping[str, Any]) -> str:
        qkey = f["s3_key"].removesuffix(".reason.json")
        q = self.cat.quarantine_row(f["catalog_id"])
        if q is None:
            return "nothing to do: the quarantine row is gone"
        what = f"rewrite s3://{self.bucket}/{f['s3_key']} from quarantine row {q['id']} ({q['reason_code']})"
        if self.dry_run:
            return "would " + what
        doc = {"file": qkey.rsplit("/", 1)[-1], "inbox": q["original_key"], "delivery_id": q["delivery_id"],
               "quarantine": f"s3://{self.bucket}/{qkey}", "instrument": q["instrument_id"],
               "reason_code": q["reason_code"], "reason": q["reason"], "details": q["details"],
               "detected_at": q["detected_at"], "dag_id": q["dag_id"], "dag_run_id": q["dag_run_id"],
               "rewritten_by": f"reconciliation run {self.run['dag_run_id']} from the quarantine row"}
        try:
            self.storage.put_new(self.bucket, f["s3_key"], json_bytes(doc), "application/json")
        except DestinationExists:
            return "nothing to do: the reason object exists now"
        return what

    def latest(self, f: Mapping[str, Any]) -> str:
        details = f["details"] if isinstance(f["details"], dict) else json.loads(f["details"])
        rows = self.cat.rows_of_roots(details["rows_to_fix"])
        changes = [(r["id"], r["file_root"], canonical_root(r["file_name"])) for r in rows]
        changes = [(i, old, new) for i, old, new in changes if new is not None and new != old]
        what = "; ".join(f"id {i}: file_root {old} -> {new}" for i, old, new in changes) or "nothing to change"
        if self.dry_run or not changes:
            return ("would set " if self.dry_run else "") + what
        self.cat.set_file_roots([(i, new) for i, _old, new in changes])
        return "set " + what


REPAIRS: dict[str, Callable[[Repairer, Mapping[str, Any]], str]] = {
    "reindex-or-quarantine": Repairer.orphan,
    "restore-or-mark-missing": Repairer.phantom,
    "rewrite-reason": Repairer.reason,
    "rederive-file-root": Repairer.latest,
}


def repair(storage: Storage, cat: Catalog, run_row: Mapping[str, Any], *, bucket: str,
           dry_run: bool) -> dict[str, int]:
    """Plan (``dry_run``) or apply the repair of every repairable finding of a run; audit each on its finding.

    Applied repairs are skipped when the run is repaired again; every repair re-checks the state first, so
    two runs converge. Nothing is deleted: an orphan is copied to quarantine (verified) before its archive
    key is cleared, and a versioned bucket keeps even that version.
    """
    fixer = Repairer(storage, cat, bucket, run_row, dry_run)
    counts: Counter[str] = Counter()
    for f in cat.reconciliation_findings(run_row["id"]):
        if f["repair"] is None or f["repair_status"] == "applied":
            continue
        try:
            text = REPAIRS[f["repair"]](fixer, f)
            status = "planned" if dry_run else "applied"
        except Exception as exc:
            log.exception("repair of finding %s (%s %s) failed", f["id"], f["kind"], f["s3_key"])
            text, status = f"{type(exc).__name__}: {exc}", "failed"
        cat.set_repair(f["id"], status=status, result=text[:4000])
        log.info("%s finding %s (%s %s): %s", status, f["id"], f["kind"], f["s3_key"], text)
        counts[status] += 1
    return dict(counts)


# --- report -------------------------------------------------------------------------------------------------

CSV_FIELDS = ("id", "kind", "severity", "area", "instrument_id", "bucket", "s3_key", "catalog_table", "catalog_id",
              "expected", "found", "action", "repair", "repair_status", "repair_result", "partition_name")


def report_prefix(run_row: Mapping[str, Any]) -> str:
    started = run_row["started_at"]
    if isinstance(started, str):
        started = datetime.fromisoformat(started)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(run_row["dag_run_id"]))[:180]
    return f"{REPORT_ROOT}/{started.astimezone(UTC):%Y/%m/%d}/{safe}/"


@dataclass
class Summary:
    """Counts of a finished run, as its report, note and messages give them."""

    run_id: int
    counts: dict[str, int]
    severities: dict[str, int]
    by_instrument: dict[str, dict[str, int]]
    stats: dict[str, Any]
    report: str | None = None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def status(self) -> str:
        return "errors" if self.severities.get("error") else "findings" if self.total else "clean"

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "total": self.total, "counts": self.counts,
                "severities": self.severities, "by_instrument": self.by_instrument, "stats": self.stats,
                "report": self.report}

    def note(self) -> str:
        """The DAG run note: verdict, counts per kind, where the report is."""
        s = self.stats
        head = (f"Reconciliation: {'clean' if not self.total else f'{self.total} finding(s)'}; "
                f"{s.get('objects', 0)} objects vs {s.get('catalog_rows', 0)} catalog rows, "
                f"{s.get('verified_objects', 0)} objects re-read ({s.get('verified_bytes', 0)} bytes).")
        kinds = ", ".join(f"{k} {n}" for k, n in self.counts.items() if n)
        tail = f" {kinds}." if kinds else ""
        return head + tail + (f" Report: {self.report}" if self.report else "")


def summarize(cat: Catalog, run_id: int) -> Summary:
    counts = dict.fromkeys(KINDS, 0)
    severities: Counter[str] = Counter()
    by_inst: dict[str, Counter[str]] = {}
    for f in cat.reconciliation_findings(run_id):
        counts[f["kind"]] += 1
        severities[f["severity"]] += 1
        if f["instrument_id"] in naming.INSTRUMENTS:
            by_inst.setdefault(f["instrument_id"], Counter())[f["kind"]] += 1
    stats: Counter[str] = Counter()
    for p in cat.reconciliation_partitions(run_id):
        for k in ("objects", "catalog_rows", "verified_objects", "verified_bytes"):
            stats[k] += int(p[k])
    return Summary(run_id, counts, dict(severities), {i: dict(c) for i, c in by_inst.items()}, dict(stats))


def _jsonable(v: Any) -> Any:
    return v.isoformat() if isinstance(v, datetime) else v


def write_report(storage: Storage, cat: Catalog, run_row: Mapping[str, Any], *, bucket: str,
                 work_dir: Path) -> Summary:
    """Write ``report.json`` and ``findings.csv`` once (conditional writes), close the run, return its summary.

    The documents depend only on the catalog's record of the run, so a retried report writes the same bytes
    (and finds them there) instead of a second version.
    """
    summary = summarize(cat, run_row["id"])
    prefix = report_prefix(run_row)
    run_doc = cat.reconciliation_run(run_row["id"])
    partitions = cat.reconciliation_partitions(run_row["id"])
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        json_path, csv_path = Path(tmp) / "report.json", Path(tmp) / "findings.csv"
        with json_path.open("w") as js, csv_path.open("w", newline="") as cs:
            writer = csv.writer(cs)
            writer.writerow(CSV_FIELDS)
            head = {"run": {k: _jsonable(run_doc[k]) for k in ("id", "dag_id", "dag_run_id", "started_at", "params",
                                                               "deep_start", "deep_fraction", "listing")},
                    "status": summary.status, "total": summary.total, "counts": summary.counts,
                    "severities": summary.severities, "by_instrument": summary.by_instrument,
                    "stats": summary.stats,
                    "partitions": [{k: _jsonable(v) for k, v in p.items() if k not in ("run_id", "ended_at")}
                                   for p in partitions],
                    "actions": ACTIONS}
            js.write(json.dumps(head, indent=1, default=str)[:-2] + ',\n "findings": [')
            first = True
            with transaction(cat.conn):
                for rec in stream_dicts(cat.conn, "recon_findings", {"run_id": run_row["id"]}):
                    rec.pop("repaired_at", None)
                    rec.pop("detected_at", None)
                    writer.writerow([rec.get(c) if rec.get(c) is not None else "" for c in CSV_FIELDS])
                    js.write(("\n  " if first else ",\n  ") + json.dumps({k: _jsonable(v) for k, v in rec.items()},
                                                                         default=str))
                    first = False
            js.write("\n ]\n}\n")
        for path in (json_path, csv_path):
            key = prefix + path.name
            md5 = md5_file(path)
            if not storage.write_once(bucket, key, md5, lambda p=path, k=key, m=md5:
                                      storage.upload_new(p, bucket, k, md5=m)):
                log.info("s3://%s/%s was written by an earlier attempt", bucket, key)
    summary.report = f"s3://{bucket}/{prefix}"
    cat.close_reconciliation(run_row["id"], status=summary.status, counts_json=json.dumps(summary.counts),
                             stats_json=json.dumps(summary.stats), report_prefix=prefix)
    return summary


def messages(cat: Catalog, summary: Summary, *, limit: int = 50) -> dict[str | None, tuple[str, str]]:
    """Subject and body per audience: ``None`` = the operators (every finding), else one per instrument with
    findings (its own). Nothing when the run is clean."""
    if not summary.total:
        return {}
    findings = cat.reconciliation_findings(summary.run_id)

    def body(rows: list[dict[str, Any]], who: str) -> str:
        kinds = Counter(r["kind"] for r in rows)
        lines = [f"Integrity reconciliation {who}: {len(rows)} finding(s) "
                 f"({sum(r['severity'] == 'error' for r in rows)} error(s)).",
                 "By kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
                 f"Report: {summary.report}", ""]
        for r in rows[:limit]:
            lines.append(f"- [{r['severity']}] {r['kind']}: {r['s3_key'] or r['catalog_table']} "
                         f"(catalog {r['catalog_table'] or '-'} {r['catalog_id'] or ''}): expected {r['expected']}; "
                         f"found {r['found']}")
        if len(rows) > limit:
            lines.append(f"... and {len(rows) - limit} more (see the report)")
        lines += ["", "What to do:"] + [f"- {k}: {ACTIONS[k]}" for k in sorted(kinds)]
        return "\n".join(lines)

    out: dict[str | None, tuple[str, str]] = {
        None: (f"[EMM SDC] reconciliation: {summary.total} finding(s), {summary.severities.get('error', 0)} "
               "error(s)", body(findings, "of the whole archive"))}
    for inst in sorted(summary.by_instrument):
        mine = [r for r in findings if r["instrument_id"] == inst]
        out[inst] = (f"[EMM SDC] reconciliation: {len(mine)} finding(s) for {naming.INSTRUMENT_NAMES[inst]}",
                     body(mine, f"for {naming.INSTRUMENT_NAMES[inst]}"))
    return out


# --- the whole run in one process (tests, demo, benchmark) --------------------------------------------------


def reconcile(storage: Storage, cat: Catalog, snapshot_conn: Any, *, bucket: str, cfg: ReconciliationConfig,
              dag_id: str = "emm_integrity_reconcile", dag_run_id: str | None = None, scope: Scope = Scope(),
              deep_fraction: float | None = None, repair_mode: str = "off", inbox: Sequence[InboxTarget] = (),
              now: datetime | None = None, work_dir: Path | None = None,
              connect: Callable[[], Any] | None = None) -> Summary:
    """Plan, check every partition, repair (``repair_mode``: off, dry-run, apply) and report, in order.

    With ``connect`` (a catalog connection factory) the partitions run ``cfg.parallel_tasks`` at a time, each on
    its own connections, as the DAG's mapped tasks do; otherwise one after another on ``cat``/``snapshot_conn``.
    """
    now = now or datetime.now(UTC)
    manifest = choose_listing(storage.client, cfg, scope, now)
    run_row = open_run(cat, dag_id=dag_id, dag_run_id=dag_run_id or f"local__{now.isoformat()}",
                       params={"repair_mode": repair_mode, "deep_fraction": deep_fraction}, scope=scope, cfg=cfg,
                       now=now, listing="inventory" if manifest else "listing", deep_fraction=deep_fraction)
    parts = plan_partitions(storage.client, bucket, scope, manifest=manifest, inbox=inbox)
    if connect is None:
        for part in parts:
            check_partition(storage, cat, snapshot_conn, run_row, part, bucket=bucket, cfg=cfg, now=now)
    else:
        from concurrent.futures import ThreadPoolExecutor

        def one(part: Mapping[str, Any]) -> PartitionResult:
            with connect() as mine, connect() as snap:
                return check_partition(storage, Catalog(mine), snap, run_row, part, bucket=bucket, cfg=cfg, now=now,
                                       parallel=cfg.parallel_tasks)

        with ThreadPoolExecutor(max_workers=cfg.parallel_tasks) as pool:
            list(pool.map(one, parts))
    if repair_mode != "off":
        repair(storage, cat, run_row, bucket=bucket, dry_run=repair_mode == "dry-run")
    return write_report(storage, cat, run_row, bucket=bucket, work_dir=work_dir or Path(tempfile.gettempdir()))


def check_partition(storage: Storage, cat: Catalog, snapshot_conn: Any, run_row: Mapping[str, Any],
                    part: Mapping[str, Any], *, bucket: str, cfg: ReconciliationConfig, now: datetime,
                    parallel: int = 1) -> PartitionResult:
    """One partition of any kind."""
    if part["kind"] == "archive":
        return check_archive(storage, cat, snapshot_conn, run_row, part, bucket=bucket, cfg=cfg, parallel=parallel,
                             now=now)
    if part["kind"] == "catalog":
        return check_catalog(cat, run_row["id"], instruments=part.get("instruments", ()))
    return check_inbox(storage, cat, run_row["id"], part, cfg=cfg, now=now)
