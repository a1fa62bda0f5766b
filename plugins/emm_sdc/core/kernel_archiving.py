"""Archive or quarantine one delivered SPICE kernel: name, checksum, a real load test, coverage.

A kernel is accepted only when its name follows the SDC convention
(core/kernels.py), its bytes match the sidecar's MD5, SPICE loads it, its
SPICE type is the one the name says, and for Hope SPK/CK its coverage (read
with spkcov/ckcov) starts and ends on the UTC days its name gives. It is then
copied to the archive (``emm/spice/<type>/<file>``) and into the kernel
directory the runners use, and indexed with its coverage per body/frame; an
older version of the same series is marked superseded. Identical re-delivery
is a no-op; same name with other content is a conflict. The same discipline as
ingest (core/archiving.py): only the delivered version is read, copied and
deleted, the archive key is written only if new, rows are unique per kernel
name and per delivery, so two runs, retries and crashes at any point converge.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emm_sdc.core import kernels
from emm_sdc.core.archiving import Delivery, InboxHandler, Outcome, Reject, Waiting
from emm_sdc.core.catalog import Catalog, CatalogError, delivery_params
from emm_sdc.core.checksums import StreamDigest

log = logging.getLogger(__name__)

#: What ``spiceypy.getfat`` says each kernel type is.
EXPECTED_KIND = {"spk": "SPK", "pln": "SPK", "ck": "CK", "lsk": "LSK", "pck": "PCK", "fk": "FK", "ik": "IK",
                 "sclk": "SCLK"}


class MissingSupportKernels(Waiting):
    """Hope kernels cannot be checked before an LSK (and, for CK, an SCLK) is archived."""


def support_kernels(kernel_dir: Path, active: list[dict[str, Any]], *, need_sclk: bool) -> list[Path]:
    """The active LSK (and SCLK) in the kernel directory, for converting coverage to UTC."""
    wanted = ["lsk", "sclk"] if need_sclk else ["lsk"]
    found: list[Path] = []
    for ktype in wanted:
        rows = sorted((r for r in active if r["kernel_type"] == ktype), key=lambda r: r["version"])
        if not rows:
            raise MissingSupportKernels(
                f"no {ktype.upper()} is archived yet: deliver an emm_{ktype}_<descriptor>_vNN kernel first")
        found.append(kernel_dir / ktype / rows[-1]["file_name"])
    return found


def store_in_kernel_dir(src: Path, kernel_dir: Path, relative: str) -> Path:
    """Put a kernel into the kernel directory atomically (readers never see half a file)."""
    dest = kernel_dir / relative
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def delivery_row(outcome: str, kernel_id: int, d: Delivery, md5: str, size: int, ctx: Any) -> dict[str, Any]:
    return delivery_params("spice", outcome, md5, size, kernel_id=kernel_id, dag_id=ctx.dag_id,
                           dag_run_id=ctx.dag_run_id, **d.log_fields())


class KernelArchiver(InboxHandler):
    """Applies the kernel rules to items of the SPICE inbox."""

    def __init__(self, storage: Any, catalog: Catalog, *, kernel_dir: Path, **kwargs: Any):
        super().__init__(storage, catalog, "spice", **kwargs)
        self.kernel_dir = kernel_dir

    def _accept(self, d: Delivery) -> Outcome:
        from emm_sdc.core.spice import KernelLoadError, inspect_kernel

        file_name = d.file_name
        try:
            name = kernels.parse_kernel_name(file_name)
        except kernels.InvalidKernelNameError as exc:
            raise Reject("invalid-name", "; ".join(str(p) for p in exc.problems)) from None
        declared = self._declared_md5(d)
        with tempfile.TemporaryDirectory(prefix="emm-kernel-") as tmp:
            local = Path(tmp) / file_name
            with local.open("wb") as fh:
                digest, parts = self._read(d, [fh.write])
            if digest.size == 0:
                raise Reject("empty", f"{file_name} has zero bytes", md5=digest.md5, size=0)
            if digest.md5 != declared:
                raise Reject("checksum-mismatch",
                             f"received bytes have MD5 {digest.md5}, the sidecar declares {declared}",
                             md5=digest.md5, declared_md5=declared, size=digest.size)
            existing = self.catalog.kernel_by_name(file_name)
            if existing is not None:
                return self._duplicate(d, name, existing, digest, local, parts)

            active = self.catalog.active_kernels()
            support: list[Path] = []
            if EXPECTED_KIND[name.kernel_type] in ("SPK", "CK"):  # coverage to convert to UTC
                try:
                    support = support_kernels(self.kernel_dir, active, need_sclk=name.kernel_type == "ck")
                except MissingSupportKernels:
                    if name.is_hope:
                        raise
                    # a planetary SPK before any LSK: its coverage is on the TDB calendar (inspect_kernel warns)
            try:
                info = inspect_kernel(local, support=support)
            except KernelLoadError as exc:
                raise Reject("kernel-load-failed", str(exc), md5=digest.md5, size=digest.size) from None
            want = EXPECTED_KIND[name.kernel_type]
            if info.kind != want:
                raise Reject("kernel-type-mismatch", f"{file_name} is named {name.kernel_type} ({want}) but SPICE "
                             f"reads it as {info.arch}/{info.kind}", md5=digest.md5, size=digest.size)
            start, end = self._check_coverage(name, info.coverage, digest)

            self._copy_new(d, name.archive_key, md5=digest.md5, parts=parts)
            store_in_kernel_dir(local, self.kernel_dir, name.relative_path)
            record = {
                "file_name": file_name, "kernel_type": name.kernel_type, "kernel_class": name.kernel_class,
                "version": name.version, "coverage_start": start, "coverage_end": end, "md5checksum": digest.md5,
                "file_size": digest.size, "bucket": self.archive_bucket, "s3_key": name.archive_key,
                "series": "/".join(name.series), "kind": info.kind, "dag_run_id": self.ctx.dag_run_id,
            }
            kernel_id = self.catalog.index_kernel(record, info.coverage,
                                                  delivery_row("archived", 0, d, digest.md5, digest.size, self.ctx))
            if kernel_id is None:  # indexed meanwhile by a concurrent run: this delivery is its duplicate
                row = self.catalog.kernel_by_name(file_name)
                if row is None:
                    raise CatalogError(f"{file_name}: indexing found it indexed, but the catalog no longer has it")
                return self._duplicate(d, name, row, digest, local, parts)
        self._clear_inbox(d)
        log.info("archived kernel %s (%s, coverage %s .. %s)", file_name, info.kind, start, end)
        return Outcome(d.item.key, "archived", file_name, name.kernel_type, name.archive_key, md5=digest.md5,
                       size=digest.size, delivery_id=d.delivery_id)

    def _check_coverage(self, name: kernels.KernelName, coverage: dict[int, list[Any]],
                        digest: StreamDigest) -> tuple[datetime | None, datetime | None]:
        """Hope kernels: coverage of Hope must start and end on the days the name gives."""
        if not name.is_hope:
            spans = [iv for ivs in coverage.values() for iv in ivs]
            if not spans:
                return None, None
            return min(iv.start for iv in spans), max(iv.end for iv in spans)
        body = kernels.HOPE_ID if name.kernel_type == "spk" else kernels.HOPE_CK_FRAME
        spans = coverage.get(body, [])
        if not spans:
            raise Reject("coverage-mismatch", f"{name.file_name} holds no data for Hope ({body}); it covers "
                         f"{sorted(coverage) or 'nothing'}", md5=digest.md5, size=digest.size)
        start, end = min(iv.start for iv in spans), max(iv.end for iv in spans)
        if (start.astimezone(UTC).date(), end.astimezone(UTC).date()) != (name.start, name.end):
            raise Reject("coverage-mismatch",
                         f"{name.file_name} names {name.start}..{name.end} but covers {start:%Y-%m-%dT%H:%M:%S} .. "
                         f"{end:%Y-%m-%dT%H:%M:%S} UTC for body/frame {body}", md5=digest.md5, size=digest.size,
                         coverage_start=start.isoformat(), coverage_end=end.isoformat())
        return start, end

    def _duplicate(self, d: Delivery, name: kernels.KernelName, existing: dict[str, Any], digest: StreamDigest,
                   local: Path, parts: list[str]) -> Outcome:
        file_name = d.file_name
        if existing["md5checksum"] != digest.md5:
            raise Reject("conflict", f"{file_name} is archived with MD5 {existing['md5checksum']}; this delivery "
                         f"has MD5 {digest.md5}", md5=digest.md5, size=digest.size)
        if self.storage.head(existing["bucket"], existing["s3_key"]) is None:
            self._copy_new(d, existing["s3_key"], md5=digest.md5, parts=parts)
        if not (self.kernel_dir / name.relative_path).exists():
            store_in_kernel_dir(local, self.kernel_dir, name.relative_path)
        self.catalog.log_kernel_delivery(delivery_row("duplicate", existing["id"], d, digest.md5, digest.size,
                                                      self.ctx))
        self._clear_inbox(d)
        log.info("duplicate delivery of kernel %s (same MD5): nothing to do", file_name)
        return Outcome(d.item.key, "duplicate", file_name, name.kernel_type, existing["s3_key"], md5=digest.md5,
                       size=digest.size, delivery_id=d.delivery_id)
