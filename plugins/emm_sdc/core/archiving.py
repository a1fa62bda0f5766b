"""Archive or quarantine one delivered file. The heart of ingest; no Airflow here.

Order of work guarantees nothing is lost: the inbox copy is deleted only after
the file is either archived (verified copy + committed catalog row) or
quarantined (verified copy + reason JSON + committed quarantine row). Every
step is safe to repeat, so a retried or re-run task converges to one outcome.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from emm_sdc.core import naming
from emm_sdc.core.catalog import Catalog, file_record
from emm_sdc.core.checksums import SidecarError, parse_sidecar
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.delivery import DeliveryItem
from emm_sdc.core.packets import PacketFramer, allowed_apids
from emm_sdc.core.storage import QUARANTINE_ROOT, Storage

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
    "checksum-mismatch": "the MD5 of the received bytes differs from the sidecar's",
    "truncated": "the last CCSDS packet is incomplete",
    "bad-content": "the bytes are not this instrument's CCSDS packets",
    "conflict": "a different file with the same name is already archived; the archive is never overwritten",
    "unexpected-location": "the MOC delivers into the inbox prefix itself, not sub-folders",
    "kernel-load-failed": "SPICE could not load the kernel",
    "kernel-type-mismatch": "the file's SPICE type is not the one its name declares",
    "coverage-mismatch": "the kernel's coverage contradicts the dates in its name",
}


@dataclass
class Outcome:
    """What became of one inbox file."""

    inbox_key: str
    outcome: str  # archived | duplicate | quarantined | gone (an earlier attempt handled it)
    file_name: str
    level: str | None = None
    archive_key: str | None = None
    quarantine_key: str | None = None
    reason_code: str | None = None
    reason: str | None = None
    md5: str | None = None
    size: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunContext:
    dag_id: str | None = None
    dag_run_id: str | None = None


class Reject(Exception):
    """Raised by a handler's checks: quarantine the file with this reason code and detail."""

    def __init__(self, code: str, detail: str, **details: Any):
        self.code = code
        self.detail = detail
        self.details = details
        super().__init__(f"{code}: {detail}")


class InboxHandler:
    """What every inbox needs: sidecars, the archive-or-quarantine decision, clearing the inbox.

    Subclasses implement :meth:`_accept` (validate and archive one item, or raise
    :class:`Reject`); quarantine, duplicates of removed items and clean-up are shared.
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

    def handle(self, item: DeliveryItem) -> Outcome:
        """Archive, skip (duplicate) or quarantine one item; the inbox is emptied of it either way."""
        file_name = item.key.rsplit("/", 1)[-1]
        if self.storage.head(self.inbox_bucket, item.key) is None:
            log.info("%s is no longer in the inbox (an earlier attempt handled it)", item.key)
            return Outcome(item.key, "gone", file_name)
        if item.problem:
            return self._quarantine(item, file_name, item.problem, REASONS[item.problem])
        try:
            return self._accept(item, file_name)
        except Reject as rej:
            return self._quarantine(item, file_name, rej.code, rej.detail, **rej.details)

    def _accept(self, item: DeliveryItem, file_name: str) -> Outcome:
        raise NotImplementedError

    def _declared_md5(self, item: DeliveryItem, file_name: str) -> str:
        assert item.sidecar_key is not None
        raw = self.storage.read_small(self.inbox_bucket, item.sidecar_key)
        try:
            return parse_sidecar(raw.decode("utf-8", errors="replace"), file_name)
        except SidecarError as exc:
            raise Reject("bad-sidecar", str(exc)) from None

    def _clear_inbox(self, item: DeliveryItem) -> None:
        keys = [item.key] + ([item.sidecar_key] if item.sidecar_key else [])
        self.storage.delete(self.inbox_bucket, *keys)

    def _quarantine(self, item: DeliveryItem, file_name: str, code: str, detail: str, **details: Any) -> Outcome:
        """Copy the file (and sidecar) to quarantine with a reason JSON, record it, then clear the inbox."""
        safe = naming.safe_basename(item.key)
        content_id = (item.etag or "no-etag").replace("-", "_")
        qkey = f"{QUARANTINE_ROOT}/{self.area}/{content_id}/{safe}"
        md5 = details.get("md5") or (item.etag if len(item.etag) == 32 else None)
        size = details.get("size", item.size)
        self.storage.copy_as_is(self.inbox_bucket, item.key, self.archive_bucket, qkey)
        if item.sidecar_key:
            self.storage.copy_as_is(self.inbox_bucket, item.sidecar_key, self.archive_bucket, qkey + ".md5")
        reason = {
            "file": file_name,
            "inbox": f"s3://{self.inbox_bucket}/{item.key}",
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
        self.storage.put_json(self.archive_bucket, qkey + ".reason.json", reason)
        self.catalog.quarantine(
            instrument=self.area, original_key=item.key, quarantine_key=qkey, reason_code=code,
            reason=detail, details=details, md5=md5, size=size,
            dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id,
        )
        self._clear_inbox(item)
        log.warning("quarantined %s: %s (%s)", file_name, code, detail)
        return Outcome(item.key, "quarantined", file_name, quarantine_key=qkey, reason_code=code,
                       reason=detail, md5=md5, size=size, details=details)


class Archiver(InboxHandler):
    """Applies the ingest rules to inbox items of one instrument."""

    def __init__(self, storage: Storage, catalog: Catalog, cfg: ItfConfig, **kwargs: Any):
        super().__init__(storage, catalog, cfg.instrument, **kwargs)
        self.cfg = cfg

    def _accept(self, item: DeliveryItem, file_name: str) -> Outcome:
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
        declared = self._declared_md5(item, file_name)

        framer = PacketFramer(allowed_apids(parsed.instrument, parsed.level)) if parsed.is_raw else None
        digest = self.storage.digest(self.inbox_bucket, item.key, [framer] if framer else [])
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

        existing = self.catalog.get_file(file_name)
        if existing is not None:
            if existing["md5checksum"] != digest.md5:
                raise Reject("conflict",
                              f"{file_name} is archived at {existing['s3_key']} with MD5 "
                              f"{existing['md5checksum']}; this delivery has MD5 {digest.md5}",
                              md5=digest.md5, size=digest.size, archived_md5=existing["md5checksum"])
            self._ensure_archived(item, existing)
            self.catalog.log_duplicate(existing["id"], existing, inbox_key=item.key,
                                       dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id)
            self._clear_inbox(item)
            log.info("duplicate delivery of %s (same MD5): nothing to do", file_name)
            return Outcome(item.key, "duplicate", file_name, parsed.level, existing["s3_key"],
                           md5=digest.md5, size=digest.size)

        record = file_record(parsed, size=digest.size, md5=digest.md5, bucket=self.archive_bucket)
        self.storage.copy_verified(self.inbox_bucket, item.key, self.archive_bucket, parsed.archive_key,
                                   md5=digest.md5, size=digest.size)
        self.catalog.archive_delivery(record, inbox_key=item.key,
                                      dag_id=self.ctx.dag_id, dag_run_id=self.ctx.dag_run_id)
        self._clear_inbox(item)
        log.info("archived %s -> s3://%s/%s", file_name, self.archive_bucket, parsed.archive_key)
        return Outcome(item.key, "archived", file_name, parsed.level, parsed.archive_key,
                       md5=digest.md5, size=digest.size)

    def _ensure_archived(self, item: DeliveryItem, existing: dict[str, Any]) -> None:
        """Repair a catalogued file whose archive object is missing, from an identical delivery."""
        if self.storage.head(existing["bucket"], existing["s3_key"]) is None:
            log.warning("archive object %s was missing; restoring it from the identical delivery",
                        existing["s3_key"])
            self.storage.copy_verified(self.inbox_bucket, item.key, existing["bucket"], existing["s3_key"],
                                       md5=existing["md5checksum"], size=existing["file_size"])

