"""Calibration data from the ITFs: delivery, versioning, calibration sets and staging for jobs.

An ITF uploads calibration files (flat fields, response tables, models...) with
their ``.md5`` sidecars to the ``calibration/`` folder of its instrument's
inbox (``inbox/<inst>/calibration/``). The instrument's ingest DAG hands them
to :class:`CalibrationArchiver`, which applies the same discipline as every
other inbox (core/archiving.py: only the delivered version is read, copied and
deleted; quarantine with a reason; retries and concurrent runs converge):

* the name is safe (``naming.SAFE_NAME``) and starts with ``emm_<inst>_cal_``;
* the sidecar's MD5 matches the bytes; the size is above 0 and at most
  :data:`MAX_FILE_BYTES`.

Every delivery of a name with new bytes becomes the next **version** of that
file (1, 2, 3 ...), archived write-once at
``emm/calibration/<inst>/<file>/v<NNNN>/<file>``, and the next **calibration
set** of the instrument: set N+1 is set N with this file added or replaced.
An identical re-delivery (the MD5 of the name's latest version) is a duplicate.
Versions are allocated under a per-instrument PostgreSQL advisory lock held
from reading the latest version to committing the new row, so two ingest runs
can neither take the same version nor lose one; the lock dies with a crashed
worker's session. The archive key is written only if new: a retry after a
crash finds its own bytes there and indexes them; an object left there by an
attempt that never committed, whose delivery was then replaced by other bytes,
is never overwritten: that version number is skipped (logged).

A job selects a set by number or ``"latest"`` (``ChainStep.calibration``):
:func:`calibration_set` resolves it, :func:`stage_set` downloads and verifies
its files, and :meth:`CalibrationSet.identity` names its exact content.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from emm_sdc.core import naming
from emm_sdc.core.archiving import Delivery, InboxHandler, Outcome, Reject
from emm_sdc.core.catalog import Catalog, delivery_params, run, transaction
from emm_sdc.core.storage import DestinationExists, Storage

log = logging.getLogger(__name__)

#: The sub-folder of an instrument's inbox prefix that receives calibration files.
FOLDER = "calibration"
#: Archive root of calibration files: ``<root>/<inst>/<file>/v<NNNN>/<file>``.
ARCHIVE_ROOT = "emm/calibration"
#: Largest calibration file accepted (bytes).
MAX_FILE_BYTES = 2 * 1024**3
#: Version numbers one delivery may skip over objects left by attempts that never committed.
_MAX_SKIPS = 100
_OTHER_PREFIX = re.compile(r"^emm_(?P<inst>[a-z]+)_cal_")


class CalibrationError(RuntimeError):
    """A calibration set cannot be resolved or staged."""


class CalibrationSetNotFound(CalibrationError, LookupError):
    """The requested calibration set of an instrument does not exist."""


def name_prefix(instrument: str) -> str:
    """What every calibration file name of an instrument starts with: ``emm_<inst>_cal_``."""
    return f"emm_{instrument}_cal_"


def name_problem(file_name: str, instrument: str) -> tuple[str, str] | None:
    """Why a name is not a calibration file name of ``instrument``: ``(reason code, detail)``; None if it is."""
    prefix = name_prefix(instrument)
    if not naming.SAFE_NAME.match(file_name):
        return "invalid-name", (
            f"{file_name!r}: calibration file names use only letters, digits, '.', '_' and '-', "
            "start with a letter or digit, have no path separators and are at most 255 "
            "characters"
        )
    other = _OTHER_PREFIX.match(file_name)
    if other and other["inst"] != instrument and other["inst"] in naming.INSTRUMENTS:
        return "wrong-instrument", (
            f"{file_name} is an {other['inst']} calibration file in the {instrument} calibration inbox"
        )
    if not file_name.startswith(prefix) or len(file_name) == len(prefix):
        return "invalid-name", (
            f"{file_name!r}: a calibration file name starts with {prefix!r} followed by a "
            f"descriptive name, e.g. {prefix}flatfield.fits"
        )
    return None


def is_calibration_name(file_name: str, instrument: str) -> bool:
    return name_problem(file_name, instrument) is None


def archive_key(instrument: str, file_name: str, version: int) -> str:
    """Where version ``version`` of a calibration file is archived (write-once)."""
    return f"{ARCHIVE_ROOT}/{instrument}/{file_name}/v{version:04d}/{file_name}"


@dataclass(frozen=True)
class CalibrationFile:
    """One version of one calibration file, as a set lists it."""

    file_name: str
    version: int
    set_version: int  # the set this version first appeared in
    md5: str
    size: int
    s3_key: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> CalibrationFile:
        return cls(
            row["file_name"],
            int(row["version"]),
            int(row["set_version"]),
            str(row["md5checksum"]),
            int(row["file_size"]),
            row["s3_key"],
        )


@dataclass(frozen=True)
class CalibrationSet:
    """Calibration set ``set_version`` of an instrument: the latest version of each of its files in that set."""

    instrument: str
    set_version: int
    files: tuple[CalibrationFile, ...]

    def identity(self) -> str:
        """The set's exact content as a stable string: set version and the sorted ``file_name:md5`` pairs."""
        return f"{self.set_version}|" + "|".join(sorted(f"{f.file_name}:{f.md5}" for f in self.files))

    def to_dict(self) -> dict[str, Any]:
        return {
            "instrument": self.instrument,
            "set_version": self.set_version,
            "files": [asdict(f) for f in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CalibrationSet:
        return cls(d["instrument"], int(d["set_version"]), tuple(CalibrationFile(**f) for f in d["files"]))


def calibration_set(cat: Catalog, instrument: str, selector: Literal["latest"] | int) -> CalibrationSet:
    """Resolve ``"latest"`` or a set number to the set's files; :class:`CalibrationSetNotFound` if there is none."""
    if selector != "latest" and (isinstance(selector, bool) or not isinstance(selector, int)):
        raise ValueError(f"a calibration set is selected by 'latest' or its number, not {selector!r}")
    latest = cat.latest_calibration_set_version(instrument)
    if selector == "latest":
        if latest is None:
            raise CalibrationSetNotFound(
                f"{instrument} has no calibration set yet (no calibration file of "
                f"{instrument} is archived), so 'latest' does not exist"
            )
        wanted = int(latest)
    else:
        wanted = int(selector)
        if latest is None or not 1 <= wanted <= latest:
            have = f"the latest is {latest}" if latest is not None else "none exists yet"
            raise CalibrationSetNotFound(f"calibration set {wanted} of {instrument} does not exist ({have})")
    rows = cat.calibration_set_files(instrument, wanted)
    return CalibrationSet(instrument, wanted, tuple(CalibrationFile.from_row(r) for r in rows))


def calibration_versions(cat: Catalog, instrument: str) -> list[dict[str, Any]]:
    """Every archived version of every calibration file of an instrument, in set order (its history)."""
    return cat.calibration_files_of(instrument)


def stage_set(storage: Storage, bucket: str, cset: CalibrationSet, dest_dir: Path | str) -> list[Path]:
    """Download every file of a set into ``dest_dir`` (read-only), verifying its MD5 and size.

    A file whose bytes differ from the catalog's raises :class:`CalibrationError` and is not left in
    ``dest_dir``; each file appears there whole or not at all.
    """
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    for f in cset.files:
        if not naming.SAFE_NAME.match(f.file_name):
            raise CalibrationError(f"{f.file_name!r} is not a safe file name; not staged")
        target = dest / f.file_name
        fd, tmp = tempfile.mkstemp(prefix=f".{f.file_name}.", suffix=".part", dir=dest)
        try:
            with os.fdopen(fd, "wb") as fh:
                digest = storage.digest(bucket, f.s3_key, [fh.write])
            if (digest.md5, digest.size) != (f.md5, f.size):
                raise CalibrationError(
                    f"calibration file {f.file_name} version {f.version} of {cset.instrument} "
                    f"(s3://{bucket}/{f.s3_key}) has MD5 {digest.md5} ({digest.size} bytes) but the catalog "
                    f"records {f.md5} ({f.size} bytes); set {cset.set_version} is not staged"
                )
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        staged.append(target)
    return staged


class CalibrationArchiver(InboxHandler):
    """Applies the calibration rules to items of an instrument inbox's ``calibration/`` folder."""

    def __init__(self, storage: Storage, catalog: Catalog, instrument: str, **kwargs: Any):
        super().__init__(storage, catalog, instrument, **kwargs)
        self.instrument = instrument

    def _accept(self, d: Delivery) -> Outcome:
        file_name = d.file_name
        problem = name_problem(file_name, self.instrument)
        if problem is not None:
            raise Reject(*problem)
        if d.data.size > MAX_FILE_BYTES:
            raise Reject(
                "too-large",
                f"{file_name} is {d.data.size} bytes; calibration files are at most {MAX_FILE_BYTES} bytes",
                size=d.data.size,
                limit=MAX_FILE_BYTES,
            )
        declared = self._declared_md5(d)
        digest, parts = self._read(d, [])
        if digest.size == 0:
            raise Reject("empty", f"{file_name} has zero bytes", md5=digest.md5, size=0)
        if digest.md5 != declared:
            raise Reject(
                "checksum-mismatch",
                f"received bytes have MD5 {digest.md5}, the sidecar declares {declared}",
                md5=digest.md5,
                declared_md5=declared,
                size=digest.size,
            )
        return self._archive(d, digest.md5, digest.size, parts)

    def _delivery_row(self, d: Delivery, outcome: str, calibration_id: int, md5: str, size: int) -> dict[str, Any]:
        return {
            **delivery_params(
                self.instrument,
                outcome,
                md5,
                size,
                dag_id=self.ctx.dag_id,
                dag_run_id=self.ctx.dag_run_id,
                **d.log_fields(),
            ),
            "calibration_id": calibration_id,
        }

    def _archive(self, d: Delivery, md5: str, size: int, parts: list[str]) -> Outcome:
        """Under the instrument's version lock: a duplicate of the name's latest version, or its next version
        (copied write-once, then indexed with the next set version and the delivery, in one transaction)."""
        file_name = d.file_name
        ids = {"instrument_id": self.instrument, "file_name": file_name}
        with transaction(self.catalog.conn) as cur:
            run(cur, "lock_calibration_versions", ids)
            found = run(cur, "latest_calibration_version", ids)
            latest = found[0] if found else None
            if latest is not None and latest["md5checksum"] == md5:
                if self.storage.head(latest["bucket"], latest["s3_key"]) is None:
                    log.warning(
                        "archive object %s was missing; restoring it from the identical delivery", latest["s3_key"]
                    )
                    self._copy_new(d, latest["s3_key"], md5=md5, parts=parts)
                run(cur, "insert_calibration_delivery", self._delivery_row(d, "duplicate", latest["id"], md5, size))
                row, outcome = latest, "duplicate"
            else:
                version, key = self._write_next(d, (latest["version"] if latest else 0) + 1, md5, parts)
                last_set = run(cur, "latest_calibration_set_version", ids)[0]["set_version"] or 0
                row = run(
                    cur,
                    "insert_calibration_file",
                    {
                        **ids,
                        "version": version,
                        "set_version": last_set + 1,
                        "md5checksum": md5,
                        "file_size": size,
                        "bucket": self.archive_bucket,
                        "s3_key": key,
                        "delivery_id": d.delivery_id,
                        "dag_id": self.ctx.dag_id,
                        "dag_run_id": self.ctx.dag_run_id,
                    },
                )[0]
                run(cur, "insert_calibration_delivery", self._delivery_row(d, "archived", row["id"], md5, size))
                outcome = "archived"
        self._clear_inbox(d)
        if outcome == "duplicate":
            log.info(
                "duplicate delivery of calibration file %s (same MD5 as its version %d): nothing to do",
                file_name,
                row["version"],
            )
        else:
            log.info(
                "archived calibration file %s version %d -> s3://%s/%s; %s calibration set %d",
                file_name,
                row["version"],
                self.archive_bucket,
                row["s3_key"],
                self.instrument,
                row["set_version"],
            )
        return Outcome(
            d.item.key,
            outcome,
            file_name,
            "calibration",
            row["s3_key"],
            md5=md5,
            size=size,
            delivery_id=d.delivery_id,
            details={"version": row["version"], "set_version": row["set_version"]},
        )

    def _write_next(self, d: Delivery, version: int, md5: str, parts: list[str]) -> tuple[int, str]:
        """Copy the delivery to the first free version key from ``version`` on; ``(version, key)``.

        A key already holding these bytes is this delivery's own earlier attempt (reused). A key holding
        other bytes was written by an attempt that never committed (its worker died) and whose delivery was
        replaced since: it is never overwritten, and its version number is skipped.
        """
        for _ in range(_MAX_SKIPS):
            key = archive_key(self.instrument, d.file_name, version)
            try:
                if not self._write_once(d.data, key, md5, parts):
                    log.info("s3://%s/%s was copied by an earlier attempt", self.archive_bucket, key)
                return version, key
            except DestinationExists as exc:
                log.warning(
                    "s3://%s/%s holds bytes (MD5 %s) of an attempt that never committed; version %d of "
                    "%s is skipped, that object is left for an operator",
                    self.archive_bucket,
                    key,
                    exc.held_md5,
                    version,
                    d.file_name,
                )
                version += 1
        raise DestinationExists(
            f"{_MAX_SKIPS} version keys of {d.file_name} from version {version - _MAX_SKIPS} "
            "on hold uncommitted objects; an operator must look"
        )
