"""Archive or quarantine one delivered file. The heart of ingest; no Airflow here.

Order of work guarantees nothing is lost: the inbox copy is deleted only after
the file is either archived (verified copy + committed catalog row) or
quarantined (verified copy + reason JSON + committed quarantine row). Every
step is safe to repeat, so a retried or re-run task converges to one outcome.

Races are settled by the storage and the database, not by checking first:
a *delivery* is the exact version of a file and of its sidecar found in the
inbox, and only that version is read, copied and finally deleted (a newer
upload of the same name stays for the next run); archive and quarantine keys
are written only if they do not exist yet; catalog rows are unique per file
identity and per delivery. Whoever loses a race re-reads what the winner
wrote and ends as a duplicate, a conflict, or leaves the inbox untouched.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from emm_sdc.core import naming
from emm_sdc.core.catalog import Catalog, file_record
from emm_sdc.core.checksums import SidecarError, parse_sidecar
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.delivery import DeliveryItem
from emm_sdc.core.errors import is_transient
from emm_sdc.core.packets import PacketFramer, SequenceReport, allowed_apids
from emm_sdc.core.storage import (
    COPY_PART_SIZE,
    QUARANTINE_ROOT,
    DestinationExists,
    ObjectChanged,
    ObjectVersion,
    PartHasher,
    Storage,
    json_bytes,
)

log = logging.getLogger(__name__)

#: Reason codes, with the rule each one enforces (shown to operators and in reason JSON).
REASONS = {
    "invalid-name": "the file name breaks the EMM naming standard",
    "unexpected-type": "the name matches none of the instrument's science/housekeeping patterns",
    "wrong-instrument": "the file belongs to another instrument's inbox",
    "missing-checksum": "no .md5 sidecar arrived within the grace period",
    "orphan-checksum": "a .md5 sidecar arrived without its data file within the grace period",
    "bad-sidecar": "the .md5 sidecar is not one md5sum line for this file",
    "empty": "the file has zero bytes",
    "too-large": "the file is larger than the SDC accepts for its kind",
    "checksum-mismatch": "the MD5 of the received bytes differs from the sidecar's",
    "truncated": "the last CCSDS packet is incomplete",
    "bad-content": "the bytes are not this instrument's CCSDS packets",
    "packet-sequence": "CCSDS sequence counts of an APID have gaps, repeats or out-of-order packets "
                       "(the ITF's ingest.packet_sequence is quarantine)",
    "conflict": "a different file with the same name is already archived; the archive is never overwritten",
    "unexpected-location": "the MOC delivers into the inbox prefix itself, not sub-folders",
    "folder-key": "a key ending in '/' is a folder, not a file: the MOC delivers files",
    "handling-failed": "the SDC failed the same way on every try to handle this file (not an outage)",
    "kernel-load-failed": "SPICE could not load the kernel",
    "kernel-type-mismatch": "the file's SPICE type is not the one its name declares",
    "coverage-mismatch": "the kernel's coverage contradicts the dates in its name",
    "orphan": "an archive object no catalog row names, not a known delivery; moved here by a reconciliation repair",
}


@dataclass
class Outcome:
    """What became of one inbox file."""

    inbox_key: str
    outcome: str  # archived | duplicate | quarantined | gone (handled before) | waiting (left in the inbox)
    file_name: str
    level: str | None = None
    archive_key: str | None = None
    quarantine_key: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    md5: str | None = None
    size: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    delivery_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunContext:
    dag_id: str | None = None
    dag_run_id: str | None = None


#: Largest sidecar read: one md5sum line is ~100 bytes; anything much larger is not a sidecar.
SIDECAR_LIMIT = 64 * 1024


def display_name(key: str) -> str:
    """The delivered name of an inbox key (its last segment; a folder key keeps its trailing '/')."""
    base = key.rstrip("/").rsplit("/", 1)[-1]
    return base + "/" if key.endswith("/") else base


@dataclass(frozen=True)
class Delivery:
    """One delivery: the exact versions of a data file and of its sidecar found in the inbox."""

    item: DeliveryItem
    data: ObjectVersion
    sidecar: ObjectVersion | None

    @property
    def delivery_id(self) -> str:
        """Stable across retries and runs, different for every new upload of the file or its sidecar."""
        parts = [self.data.bucket, self.data.key, self.data.token]
        if self.sidecar:
            parts += [self.sidecar.key, self.sidecar.token]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]

    @property
    def file_name(self) -> str:
        return display_name(self.item.key)

    def log_fields(self) -> dict[str, Any]:
        """Columns of its ``deliveries`` row that identify the delivery."""
        return {"inbox_key": self.item.key, "delivery_id": self.delivery_id, "inbox_version": self.data.token}


class Waiting(Exception):
    """The item cannot be handled yet (e.g. a kernel it needs is not archived): leave it in the inbox."""


class Reject(Exception):
    """Raised by a handler's checks: quarantine the file with this reason code and detail."""

    def __init__(self, code: str, detail: str, **details: Any):
        self.code = code
        self.detail = detail
        self.details = details
        super().__init__(f"{code}: {detail}")


class InboxHandler:
    """What every inbox needs: sidecars, the archive-or-quarantine decision, clearing the inbox.

    Subclasses implement :meth:`_accept` (validate and archive one delivery, or raise
    :class:`Reject`); quarantine, retries, races and clean-up are shared.
    """

    def __init__(
        self,
        storage: Storage,
        catalog: Catalog,
        area: str,
        *,
        inbox_bucket: str,
        archive_bucket: str,
        ctx: RunContext = RunContext(),
    ):
        self.storage = storage
        self.catalog = catalog
        self.area = area
        self.inbox_bucket = inbox_bucket
        self.archive_bucket = archive_bucket
        self.ctx = ctx

    def handle(self, item: DeliveryItem, *, final_attempt: bool = True) -> Outcome:
        """Archive, skip (duplicate) or quarantine one item; the handled versions leave the inbox.

        ``final_attempt``: on the task's last try, an error that is not the
        infrastructure's quarantines the file (``handling-failed``) instead of
        failing every later run again.
        """
        file_name = display_name(item.key)
        data = self.storage.stat(self.inbox_bucket, item.key)
        if data is None:
            log.info("%s is no longer in the inbox (an earlier attempt or another run handled it)", item.key)
            return Outcome(item.key, "gone", file_name)
        sidecar = self.storage.stat(self.inbox_bucket, item.sidecar_key) if item.sidecar_key else None
        if item.sidecar_key and sidecar is None:
            return self._waiting(item, f"its sidecar {item.sidecar_key} left the inbox after planning; "
                                       "the next run plans it again")
        d = Delivery(item, data, sidecar)
        done = self.catalog.delivery(d.delivery_id)
        if done is not None:  # a retry after the outcome was committed: finish the clean-up only
            self._clear_inbox(d)
            return Outcome(item.key, "gone", file_name, reason=f"already {done['outcome']} by run "
                           f"{done['dag_run_id']}", delivery_id=d.delivery_id)
        try:
            try:
                if item.problem:
                    return self._quarantine(d, item.problem, REASONS[item.problem])
                return self._accept(d)
            except Reject as rej:
                return self._quarantine(d, rej.code, rej.detail, **rej.details)
        except (ObjectChanged, Waiting) as exc:
            return self._waiting(item, str(exc))
        except Exception as exc:
            if not final_attempt or is_transient(exc):
                raise
            log.exception("handling %s failed on its last try; quarantining it", item.key)
            return self._quarantine(d, "handling-failed", f"{type(exc).__name__}: {exc}",
                                    error=type(exc).__name__)

    def _waiting(self, item: DeliveryItem, why: str) -> Outcome:
        log.warning("%s stays in the inbox: %s", item.key, why)
        return Outcome(item.key, "waiting", display_name(item.key), reason=why)

    def _accept(self, d: Delivery) -> Outcome:
        raise NotImplementedError

    def _declared_md5(self, d: Delivery) -> str:
        assert d.sidecar is not None
        if d.sidecar.size > SIDECAR_LIMIT:
            raise Reject("bad-sidecar", f"{d.sidecar.key} is {d.sidecar.size} bytes; a sidecar is one md5sum "
                         f"line (at most {SIDECAR_LIMIT} bytes are read)", sidecar_size=d.sidecar.size)
        raw = self.storage.read_small(d.sidecar, SIDECAR_LIMIT)
        try:
            return parse_sidecar(raw.decode("utf-8", errors="replace"), d.file_name)
        except SidecarError as exc:
            raise Reject("bad-sidecar", str(exc)) from None

    def _read(self, d: Delivery, observers: list[Any]) -> tuple[Any, list[str]]:
        """Stream the delivered version once: MD5, size, per-copy-part MD5s, and what observers check."""
        parts = PartHasher()
        digest = self.storage.digest(self.inbox_bucket, d.item.key, [*observers, parts], version=d.data)
        return digest, parts.finish()

    def _copy_new(self, d: Delivery, key: str, *, md5: str, parts: list[str]) -> bool:
        """Copy the delivered version to a new archive key; False if the key holds it already.

        Raises :class:`Reject` ``conflict`` when the key holds other bytes: nothing is overwritten.
        """
        try:
            return self._write_once(d.data, key, md5, parts)
        except DestinationExists as exc:
            raise Reject("conflict", f"s3://{self.archive_bucket}/{key} already holds other bytes (MD5 "
                         f"{exc.held_md5}); this delivery has MD5 {md5}; the archive is never overwritten",
                         md5=md5, size=d.data.size, archived_md5=exc.held_md5) from None

    def _write_once(self, version: ObjectVersion, key: str, md5: str, parts: list[str]) -> bool:
        """Copy a delivered version to a new archive key; False if an earlier attempt or a concurrent run
        put these very bytes there (other bytes: :class:`DestinationExists`)."""
        return self.storage.write_once(self.archive_bucket, key, md5, lambda: self.storage.copy_pinned(
            version, self.archive_bucket, key, md5=md5, part_md5s=parts))

    def _clear_inbox(self, d: Delivery) -> None:
        """Delete exactly the handled versions; a newer upload of the same name stays for the next run."""
        for version in (d.data, d.sidecar):
            if version is not None and not self.storage.delete_version(version):
                log.warning("s3://%s/%s was uploaded again while it was handled: the new upload stays in the "
                            "inbox for the next run", version.bucket, version.key)

    def _md5_parts(self, version: ObjectVersion, md5: str | None) -> tuple[str, list[str]]:
        if md5 and version.size <= COPY_PART_SIZE:
            return md5, [md5]
        return self.storage.md5_of(version)

    def _keep(self, version: ObjectVersion, key: str, md5: str | None = None) -> str:
        """Copy one delivered version into quarantine (a retry finds its own copy there); return its MD5."""
        md5, parts = self._md5_parts(version, md5)
        if not self._write_once(version, key, md5, parts):
            log.info("s3://%s/%s was copied by an earlier attempt", self.archive_bucket, key)
        return md5

    def _quarantine(self, d: Delivery, code: str, detail: str, **details: Any) -> Outcome:
        """Copy the delivery (file and sidecar) to its own quarantine folder with a reason JSON, record it,
        then clear the handled versions from the inbox."""
        item = d.item
        qkey = f"{QUARANTINE_ROOT}/{self.area}/{d.delivery_id}/{naming.safe_basename(item.key.rstrip('/'))}"
        known = details.get("md5") or d.data.plain_md5
        md5 = self._keep(d.data, qkey, known if details.get("size", d.data.size) == d.data.size else None)
        if d.sidecar is not None:
            self._keep(d.sidecar, qkey + ".md5")
        size = d.data.size
        reason = {
            "file": d.file_name,
            "inbox": f"s3://{self.inbox_bucket}/{item.key}",
            "inbox_version": d.data.token,
            "sidecar_version": d.sidecar.token if d.sidecar else None,
            "delivery_id": d.delivery_id,
            "quarantine": f"s3://{self.archive_bucket}/{qkey}",
            "instrument": self.area,
            "reason_code": code,
            "rule": REASONS[code],
            "reason": detail,
            "details": details,
            "detected_at": datetime.now(UTC).isoformat(),
            "dag_id": self.ctx.dag_id,
            "dag_run_id": self.ctx.dag_run_id,
        }
        try:
            self.storage.put_new(self.archive_bucket, qkey + ".reason.json", json_bytes(reason), "application/json")
        except DestinationExists:
            log.info("reason for %s was written by an earlier attempt; kept", qkey)
        self.catalog.quarantine(
            instrument=self.area, original_key=item.key, quarantine_key=qkey, reason_code=code,
            reason=detail, details=details, md5=md5, size=size,
            dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id, delivery_id=d.delivery_id,
            inbox_version=d.data.token,
        )
        self._clear_inbox(d)
        log.warning("quarantined %s: %s (%s)", d.file_name, code, detail)
        return Outcome(item.key, "quarantined", d.file_name, quarantine_key=qkey, reason_code=code,
                       reason=detail, md5=md5, size=size, details=details, delivery_id=d.delivery_id)


class Archiver(InboxHandler):
    """Applies the ingest rules to inbox items of one instrument."""

    def __init__(self, storage: Storage, catalog: Catalog, cfg: ItfConfig, **kwargs: Any):
        super().__init__(storage, catalog, cfg.instrument, **kwargs)
        self.cfg = cfg

    def _accept(self, d: Delivery) -> Outcome:
        file_name = d.file_name
        parsed, problems = naming.problems_in(file_name)
        if parsed is None:
            raise Reject(
                "invalid-name", "; ".join(str(p) for p in problems),
                problems=[asdict(p) for p in problems],
            )
        if parsed.instrument != self.cfg.instrument:
            raise Reject("wrong-instrument",
                          f"{file_name} is an {parsed.instrument} file in the {self.cfg.instrument} inbox")
        if self.cfg.classify(file_name) is None:
            pats = self.cfg.ingest.file_patterns
            raise Reject("unexpected-type",
                          f"{file_name} matches none of science {pats.science} / housekeeping {pats.housekeeping}")
        declared = self._declared_md5(d)

        framer = PacketFramer(allowed_apids(parsed.instrument, parsed.level)) if parsed.is_raw else None
        digest, parts = self._read(d, [framer] if framer else [])
        if digest.size == 0:
            raise Reject("empty", f"{file_name} has zero bytes", md5=digest.md5, size=0)
        if digest.md5 != declared:
            raise Reject("checksum-mismatch",
                          f"received bytes have MD5 {digest.md5}, the sidecar declares {declared}",
                          md5=digest.md5, declared_md5=declared, size=digest.size)
        if framer is not None:
            content_problems = framer.finish()
            if content_problems:
                code = "truncated" if content_problems[0].startswith("truncated: ") else "bad-content"
                detail = "; ".join(content_problems).removeprefix("truncated: ")
                raise Reject(code, detail, md5=digest.md5, size=digest.size,
                              packets=framer.packets)
        warning = (self._check_sequence(d, framer.sequence.report(), md5=digest.md5, size=digest.size)
                   if framer is not None else None)
        outcome = self._archive(d, parsed.canonical(), digest.md5, digest.size, parts)
        if warning is not None:
            outcome.details["packet_sequence"] = warning
        return outcome

    def _check_sequence(self, d: Delivery, report: SequenceReport, *, md5: str, size: int) -> dict[str, Any] | None:
        """Record the delivery's sequence counts, then apply the ITF's ``ingest.packet_sequence`` to anomalies:
        quarantine (raise :class:`Reject`), warn (return the warning the outcome carries) or ignore."""
        rule = self.cfg.ingest.packet_sequence
        verdict = ({"quarantine": "quarantined", "warn": "warned", "ignore": "ignored"}[rule]
                   if report.anomalies else "continuous")
        summary = report.describe()
        found = report.to_dict()
        self.catalog.record_packet_sequence(
            found, delivery_id=d.delivery_id, instrument=self.cfg.instrument, file_name=d.file_name, rule=rule,
            verdict=verdict, summary=summary, dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id)
        if verdict == "quarantined":
            raise Reject("packet-sequence", summary, md5=md5, size=size, packets=found["packets"],
                         packet_sequence=found)
        if verdict == "warned":
            log.warning("%s: CCSDS sequence counts: %s (ingest.packet_sequence: warn: archived, recorded in the "
                        "catalog)", d.file_name, summary)
            return {"rule": rule, "summary": summary, **found}
        if verdict == "ignored":
            log.info("%s: CCSDS sequence counts: %s (ingest.packet_sequence: ignore)", d.file_name, summary)
        return None

    def _archive(self, d: Delivery, name: naming.EmmName, md5: str, size: int, parts: list[str]) -> Outcome:
        """Archive a checked delivery under its canonical name, or find it already there."""
        as_delivered = d.file_name
        existing = self.catalog.file_by_identity(name.file_name)
        if existing is None:
            copied = self._copy_new(d, name.archive_key, md5=md5, parts=parts)
            record = file_record(name, size=size, md5=md5, bucket=self.archive_bucket)
            outcome, row = self.catalog.archive_delivery(
                record, dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id, **d.log_fields())
            if outcome == "archived":
                self._clear_inbox(d)
                renamed = f" (delivered as {as_delivered})" if as_delivered != name.file_name else ""
                log.info("archived %s%s -> s3://%s/%s%s", name.file_name, renamed, self.archive_bucket,
                         name.archive_key, "" if copied else " (copied by an earlier attempt)")
                return Outcome(d.item.key, "archived", name.file_name, name.level, name.archive_key, md5=md5,
                               size=size, delivery_id=d.delivery_id)
            existing = row  # indexed meanwhile by an earlier attempt or a concurrent run
        if existing["md5checksum"] != md5:
            raise Reject("conflict",
                         f"{as_delivered} is archived as {existing['file_name']} at {existing['s3_key']} with MD5 "
                         f"{existing['md5checksum']}; this delivery has MD5 {md5}",
                         md5=md5, size=size, archived_md5=existing["md5checksum"])
        if self.storage.head(existing["bucket"], existing["s3_key"]) is None:
            log.warning("archive object %s was missing; restoring it from the identical delivery",
                        existing["s3_key"])
            self._copy_new(d, existing["s3_key"], md5=md5, parts=parts)
        self.catalog.log_delivery("duplicate", existing, dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id,
                                  **d.log_fields())
        self._clear_inbox(d)
        log.info("duplicate delivery of %s (same MD5): nothing to do", existing["file_name"])
        return Outcome(d.item.key, "duplicate", existing["file_name"], existing["data_level"], existing["s3_key"],
                       md5=md5, size=size, delivery_id=d.delivery_id)
