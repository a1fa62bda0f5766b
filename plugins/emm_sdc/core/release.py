"""Quarterly public releases: windows and batch numbers, selection by the ITFs' rules, verification,
the publishing transaction, manifests and release notes, public-bucket copies and withdrawals.

Plain Python over a :class:`Catalog` and a :class:`Storage`; the Airflow task layer is
``pipeline/release.py``. The rules and the reasons behind them are in ``docs/releases.md``.

* Batch 1 runs from orbit insertion (2021-02-09) to 2021-05-31; batch *n* > 1 is the *n*-1'th
  calendar quarter after it (Jun-Aug 2021 is batch 2, Dec 2021-Feb 2022 batch 4, Mar-May 2022
  batch 5), as the mission numbers its batches.
* A published release is fixed: running it again rewrites nothing and releases nothing new. What
  changes later (late products, newer revisions, corrected objects) goes out with the next batch.
* The catalog is the source of truth: manifests and notes are rendered from its rows, so a re-run
  renders the same bytes and writes them only where they are missing.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from emm_sdc.core import catalog as sql
from emm_sdc.core import naming
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.storage import COPY_PART_SIZE, DestinationExists, ObjectChanged, Storage

#: Mars orbit insertion: the first batch starts here.
MISSION_START = date(2021, 2, 9)
#: Batch 1 ends with May 2021 (the mission's own first batch ended on 22 May; see docs/releases.md).
FIRST_BATCH_END = date(2021, 5, 31)
_QUARTERS_FROM = date(2021, 6, 1)  # batch 2 starts here; windows are Mar-May, Jun-Aug, Sep-Nov, Dec-Feb
DEFAULT_LAG_MONTHS = 4
RELEASE_ROOT = "emm/releases"
#: Why a selected file was not released. The first three are integrity failures: the run reports them.
INTEGRITY_REASONS = ("missing", "size-mismatch", "md5-mismatch")
CHANGED_REASON = "changed-during-release"
MANIFEST_FIELDS = (
    "file_name", "instrument_id", "data_level", "product_type", "timetag", "orbit_number", "pred_rec",
    "version", "revision", "absolute_version", "file_size", "md5checksum", "s3_key", "selection",
)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SPECIAL = re.compile(r"^special-(\d{8})-(\d{8})$")


class ReleaseError(RuntimeError):
    """A release request cannot be carried out as asked (bad window, unknown file, conflicting object)."""


# ---------------------------------------------------------------- settings


def lag_months() -> int:
    """Months between a window's close and its scheduled release (``EMM_RELEASE_LAG_MONTHS``, default 4)."""
    raw = os.environ.get("EMM_RELEASE_LAG_MONTHS", str(DEFAULT_LAG_MONTHS))
    if not raw.isdigit() or int(raw) > 24:
        raise ValueError(f"EMM_RELEASE_LAG_MONTHS={raw!r} must be a whole number of months from 0 to 24")
    return int(raw)


def public_bucket() -> str | None:
    """The separate public bucket released objects are copied to (``EMM_PUBLIC_BUCKET``), if any."""
    value = os.environ.get("EMM_PUBLIC_BUCKET", "").strip()
    if value and not _BUCKET.match(value):
        raise ValueError(f"EMM_PUBLIC_BUCKET={value!r} is not a valid S3 bucket name")
    return value or None


# ---------------------------------------------------------------- windows and batches


def add_months(first_of_month: date, months: int) -> date:
    """The first of the month ``months`` after (or before) a first of the month."""
    index = first_of_month.year * 12 + first_of_month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


@dataclass(frozen=True)
class Window:
    """A release window, both days inclusive (UTC); ``batch`` is None for a special window."""

    start: date
    end: date
    batch: int | None = None

    @property
    def name(self) -> str:
        """The release's name and folder: ``batch-07``, or ``special-20210209-20210331``."""
        if self.batch is not None:
            return f"batch-{self.batch:02d}"
        return f"special-{self.start:%Y%m%d}-{self.end:%Y%m%d}"

    @property
    def prefix(self) -> str:
        return f"{RELEASE_ROOT}/{self.name}/"

    @property
    def start_time(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_time(self) -> datetime:
        """The first instant after the window."""
        return datetime(self.end.year, self.end.month, self.end.day, tzinfo=UTC) + timedelta(days=1)


def batch_window(batch: int) -> Window:
    """The observation window of a quarterly batch (1 = orbit insertion to 2021-05-31)."""
    if batch < 1:
        raise ReleaseError(f"batch numbers start at 1, got {batch}")
    if batch == 1:
        return Window(MISSION_START, FIRST_BATCH_END, 1)
    start = add_months(_QUARTERS_FROM, 3 * (batch - 2))
    return Window(start, add_months(start, 3) - timedelta(days=1), batch)


def batch_of(day: date) -> int | None:
    """The batch whose window holds ``day``; None before orbit insertion."""
    if day < MISSION_START:
        return None
    if day < _QUARTERS_FROM:
        return 1
    months = (day.year - _QUARTERS_FROM.year) * 12 + day.month - _QUARTERS_FROM.month
    return 2 + months // 3


def due_batch(at: datetime | date, lag: int = DEFAULT_LAG_MONTHS) -> int | None:
    """The newest batch whose window closed at least ``lag`` months before ``at``; None if none yet."""
    day = at.date() if isinstance(at, datetime) else at
    months = (day.year - _QUARTERS_FROM.year) * 12 + day.month - _QUARTERS_FROM.month
    batch = (months - lag) // 3 + 1
    return batch if batch >= 1 else None


def schedule_cron(lag: int = DEFAULT_LAG_MONTHS) -> str:
    """Quarterly cron, 06:00 UTC on the first day of the month a window becomes due (lag 4: Jan/Apr/Jul/Oct)."""
    months = sorted({(first - 1 + lag) % 12 + 1 for first in (3, 6, 9, 12)})
    return f"0 6 1 {','.join(str(m) for m in months)} *"


def window_from(start: date, end: date) -> Window:
    """A window given by its days: the batch whose window it is exactly, else a special window."""
    if end < start:
        raise ReleaseError(f"the window ends ({end}) before it starts ({start})")
    batch = batch_of(start)
    if batch is not None and batch_window(batch) == Window(start, end, batch):
        return batch_window(batch)
    return Window(start, end)


def resolve_window(params: Mapping[str, Any], at: datetime, lag: int) -> Window:
    """The window a run releases: ``batch``, or ``start_date``/``end_date``, else the batch due at ``at``.

    Refuses a window that has not closed by ``at``: its products are not all made yet.
    """
    batch, start, end = params.get("batch"), params.get("start_date"), params.get("end_date")
    if batch is not None and (start or end):
        raise ReleaseError("give either a batch number or start_date/end_date, not both")
    if bool(start) != bool(end):
        raise ReleaseError("a window needs both start_date and end_date (YYYY-MM-DD)")
    if batch is not None:
        window = batch_window(int(batch))
    elif start:
        window = window_from(date.fromisoformat(start), date.fromisoformat(end))
    else:
        due = due_batch(at, lag)
        if due is None:
            raise ReleaseError(f"no batch is due on {at:%Y-%m-%d} (the first is due {lag} month(s) after "
                               f"{FIRST_BATCH_END})")
        window = batch_window(due)
    if window.end_time > at:
        raise ReleaseError(f"{window.name} ({window.start} to {window.end}) has not closed on {at:%Y-%m-%d}; "
                           "a window is released after it closes")
    return window


def window_of_name(name: str) -> Window:
    """The window of a release name (``batch-07``/``7`` or ``special-YYYYMMDD-YYYYMMDD``)."""
    name = name.strip()
    if name.isdigit() or re.fullmatch(r"batch-\d+", name):
        return batch_window(int(name.removeprefix("batch-")))
    m = _SPECIAL.match(name)
    if not m:
        raise ReleaseError(f"{name!r} is not a release: give a batch number (7), batch-07 or "
                           "special-YYYYMMDD-YYYYMMDD")
    return window_from(datetime.strptime(m[1], "%Y%m%d").date(), datetime.strptime(m[2], "%Y%m%d").date())


# ---------------------------------------------------------------- rules and selection


@dataclass(frozen=True)
class Rules:
    """What one instrument's release takes: levels and the worst kernel class (from its ITF YAML)."""

    instrument: str
    levels: tuple[str, ...]
    min_pred_rec: str

    def kernel_classes(self) -> list[str]:
        """Kernel classes a released product may carry: ``min_pred_rec`` or better, and ``n`` (no kernels)."""
        floor = naming.KERNEL_QUALITY[self.min_pred_rec]
        return ["n", *(k for k in ("p", "r", "f") if naming.KERNEL_QUALITY[k] >= floor)]


def rules_for(configs: Mapping[str, ItfConfig], instruments: Sequence[str] = (),
              levels: Sequence[str] = ()) -> list[Rules]:
    """Each instrument's release rules, narrowed to ``instruments``/``levels`` when given.

    The params narrow the YAML's rules, never widen them: a level no chosen instrument releases is an error.
    """
    chosen = list(instruments) or sorted(configs)
    unknown = sorted(set(chosen) - set(configs))
    if unknown:
        raise ReleaseError(f"no ITF config for instrument(s) {unknown}")
    out = []
    for inst in chosen:
        allowed = configs[inst].release_levels()
        take = tuple(lv for lv in allowed if not levels or lv in levels)
        out.append(Rules(inst, take, configs[inst].release.min_pred_rec))
    released = {lv for r in out for lv in r.levels}
    refused = sorted(set(levels) - released)
    if refused:
        raise ReleaseError(f"level(s) {refused} are not released by {chosen} (their YAML release.levels / "
                           "include_quicklook decide what may be released)")
    return out


def rules_record(rules: Sequence[Rules]) -> dict[str, Any]:
    return {r.instrument: {"levels": list(r.levels), "min_pred_rec": r.min_pred_rec} for r in rules}


def select(cat: Catalog, window: Window, rules: Sequence[Rules]) -> list[dict[str, Any]]:
    """The files a release of ``window`` takes now (``release_candidates``), per instrument."""
    rows: list[dict[str, Any]] = []
    for r in rules:
        if not r.levels:
            continue
        rows += cat.release_candidates(instrument=r.instrument, levels=r.levels, kernel_classes=r.kernel_classes(),
                                       start=window.start_time, end=window.end_time,
                                       carry_over=window.batch is not None)
    return rows


def chunks(rows: Sequence[Mapping[str, Any]], max_files: int = 200,
           max_bytes: int = 20 * 1024**3) -> list[dict[str, Any]]:
    """Verification work units: per instrument and level, at most ``max_files`` files / ``max_bytes``."""
    out: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for row in sorted(rows, key=lambda r: (r["instrument_id"], r["data_level"], r["file_name"])):
        group = f"{row['instrument_id']} {row['data_level']}"
        if (current is None or current["group"] != group or len(current["ids"]) >= max_files
                or current["bytes"] + row["file_size"] > max_bytes):
            current = {"group": group, "ids": [], "bytes": 0}
            out.append(current)
        current["ids"].append(row["id"])
        current["bytes"] += row["file_size"]
    for chunk in out:
        chunk["label"] = f"{chunk['group']}: {len(chunk['ids'])} file(s), {human_bytes(chunk['bytes'])}"
    return out


# ---------------------------------------------------------------- verification


def verify(storage: Storage, rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read each archived object and compare its size and MD5 with the catalog's.

    Returns ``(ok, withheld)``: ``ok`` items are ``{id, md5, size}``; ``withheld`` items name the file,
    the reason (:data:`INTEGRITY_REASONS`) and what was found. S3 outages raise (the task retries).
    """
    ok: list[dict[str, Any]] = []
    withheld: list[dict[str, Any]] = []
    for row in rows:
        expected = {"md5": row["md5checksum"].strip(), "size": int(row["file_size"])}
        found = storage.stat(row["bucket"], row["s3_key"])
        problem: dict[str, Any] | None = None
        if found is None:
            problem = {"reason": "missing", "found": None}
        elif found.size != expected["size"]:
            problem = {"reason": "size-mismatch", "found": {"size": found.size}}
        else:
            try:
                digest = storage.digest(row["bucket"], row["s3_key"], version=found)
            except ObjectChanged as exc:
                problem = {"reason": "md5-mismatch", "found": {"error": str(exc)}}
            else:
                if digest.md5 != expected["md5"] or digest.size != expected["size"]:
                    problem = {"reason": "md5-mismatch", "found": {"md5": digest.md5, "size": digest.size}}
        if problem is None:
            ok.append({"id": row["id"], **expected})
        else:
            withheld.append({"id": row["id"], "file_name": row["file_name"], "s3_key": row["s3_key"],
                             "expected": expected, **problem})
    return ok, withheld


# ---------------------------------------------------------------- publishing


def publish(cat: Catalog, window: Window, rules: Sequence[Rules], ok: Sequence[Mapping[str, Any]],
            withheld: Sequence[Mapping[str, Any]], *, dag_id: str | None,
            dag_run_id: str | None) -> dict[str, Any] | None:
    """Release the verified files: the release row, its files and their ``released`` flags, one transaction.

    A verified file that stopped being releasable meanwhile (a newer revision, another release, a
    withdrawal) is withheld as :data:`CHANGED_REASON`. Returns the release row with ``created``:
    False when the release existed already (this run changed nothing); None, recording nothing,
    when no file is left to release (a release is never empty).
    """
    verified = {int(o["id"]): o for o in ok}
    withheld = list(withheld)
    with sql.transaction(cat.conn) as cur:
        existing = sql.run(cur, "release_by_name", {"name": window.name})
        if existing:
            return {**existing[0], "created": False}
        locked = sql.run(cur, "lock_releasable", {"ids": sorted(verified), "start": window.start_time})
        taken = [row for row in locked if row["md5checksum"].strip() == verified[row["id"]]["md5"]]
        taken_ids = {row["id"] for row in taken}
        for file_id in sorted(set(verified) - taken_ids):
            withheld.append({"id": file_id, "reason": CHANGED_REASON,
                             "found": "no longer the latest unreleased version, or changed in the catalog"})
        if not taken:
            return None
        created = sql.run(cur, "insert_release", {
            "name": window.name, "batch": window.batch, "period_start": window.start, "period_end": window.end,
            "rules": json.dumps(rules_record(rules)), "file_count": len(taken),
            "total_bytes": sum(int(r["file_size"]) for r in taken),
            "withheld": json.dumps(sorted(withheld, key=lambda w: w["id"]), default=str),
            "manifest_prefix": window.prefix, "dag_id": dag_id, "dag_run_id": dag_run_id,
        })
        if not created:  # a concurrent run published it since we looked: leave it as it is
            return {**sql.run(cur, "release_by_name", {"name": window.name})[0], "created": False}
        release = created[0]
        sql.run(cur, "insert_release_files", {
            "release_id": release["id"], "file_ids": [r["id"] for r in taken],
            "md5s": [r["md5checksum"].strip() for r in taken], "selections": [r["selection"] for r in taken],
        })
        flagged = sql.run(cur, "flag_released", {"release_id": release["id"]})
        if len(flagged) != len(taken):
            raise ReleaseError(f"{window.name}: flagged {len(flagged)} file(s) released, expected {len(taken)}")
    return {**release, "created": True}


def release_row(cat: Catalog, name: str) -> dict[str, Any] | None:
    return cat.release_by_name(name)


# ---------------------------------------------------------------- manifests and notes


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def manifest_entries(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The manifest's file entries, in a fixed order and format (the same rows give the same bytes)."""
    entries = []
    for r in sorted(rows, key=lambda r: (r["instrument_id"], r["data_level"], r["file_name"])):
        entry = {f: r[f] for f in MANIFEST_FIELDS}
        entry["timetag"] = _iso(r["timetag"])
        entry["md5checksum"] = str(r["md5checksum"]).strip()
        entry["file_size"] = int(r["file_size"])
        entries.append(entry)
    return entries


def totals(entries: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Files and bytes per instrument and level."""
    sums: dict[tuple[str, str], list[int]] = {}
    for e in entries:
        acc = sums.setdefault((e["instrument_id"], e["data_level"]), [0, 0])
        acc[0] += 1
        acc[1] += int(e["file_size"])
    return [{"instrument_id": i, "data_level": lv, "files": n, "bytes": b} for (i, lv), (n, b) in sorted(sums.items())]


@dataclass(frozen=True)
class ReleaseInfo:
    """What a manifest says about its release (from the ``releases`` row, or a dry run's plan)."""

    name: str
    batch: int | None
    start: date
    end: date
    published_at: str
    rules: dict[str, Any]
    withheld: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> ReleaseInfo:
        return cls(row["name"], row["batch"], row["period_start"], row["period_end"], _iso(row["published_at"]),
                   dict(row["rules"] or {}), len(row["withheld"] or []))


def manifest_json(info: ReleaseInfo, entries: Sequence[Mapping[str, Any]]) -> bytes:
    doc = {
        "mission": "Emirates Mars Mission (EMM, Hope)",
        "release": info.name, "batch": info.batch,
        "window": {"start": info.start.isoformat(), "end": info.end.isoformat()},
        "published_at": info.published_at, "rules": info.rules,
        "totals": totals(entries), "file_count": len(entries),
        "total_bytes": sum(int(e["file_size"]) for e in entries),
        "files": list(entries),
    }
    return (json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n").encode()


def manifest_csv(entries: Sequence[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(MANIFEST_FIELDS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(entries)
    return buf.getvalue().encode()


def release_notes(info: ReleaseInfo, entries: Sequence[Mapping[str, Any]]) -> bytes:
    """Markdown release notes: window, date, batch, files and bytes per instrument and level."""
    title = f"batch {info.batch}" if info.batch is not None else f"special release {info.name}"
    carried = sum(1 for e in entries if e["selection"] == "carry-over")
    lines = [
        f"# EMM public data release: {title}",
        "",
        f"- Observation window: {info.start.isoformat()} to {info.end.isoformat()} (UTC, inclusive)",
        f"- Published: {info.published_at}",
        f"- Files: {len(entries)}, {human_bytes(sum(int(e['file_size']) for e in entries))} "
        f"({sum(int(e['file_size']) for e in entries)} bytes)",
    ]
    if carried:
        lines.append(f"- Of these, {carried} were observed in earlier batches' windows (late products and newer "
                     "revisions)")
    if info.withheld:
        lines.append(f"- {info.withheld} selected file(s) were held back by the integrity check; they follow in a "
                     "later batch")
    lines += ["", "| instrument | level | files | size | bytes |", "| --- | --- | ---: | ---: | ---: |"]
    for t in totals(entries):
        lines.append(f"| {naming.INSTRUMENT_NAMES.get(t['instrument_id'], t['instrument_id'])} | {t['data_level']} "
                     f"| {t['files']} | {human_bytes(t['bytes'])} | {t['bytes']} |")
    lines += ["", "Each file is the latest version of its product at release time. `manifest.csv` and "
              "`manifest.json` list every file with its size, MD5, version, revision and archive key.", ""]
    for inst, rule in sorted(info.rules.items()):
        lines.append(f"- {naming.INSTRUMENT_NAMES.get(inst, inst)}: levels {', '.join(rule['levels']) or 'none'}; "
                     f"SPICE kernel class {rule['min_pred_rec']} or better")
    return ("\n".join(lines) + "\n").encode()


def documents(info: ReleaseInfo, rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[bytes, str]]:
    """File name -> (bytes, content type) of a release's manifest and notes."""
    entries = manifest_entries(rows)
    return {
        "manifest.json": (manifest_json(info, entries), "application/json"),
        "manifest.csv": (manifest_csv(entries), "text/csv"),
        "release_notes.md": (release_notes(info, entries), "text/markdown"),
    }


def put_once(storage: Storage, bucket: str, key: str, data: bytes, content_type: str) -> str:
    """Write an object that must not exist, or must already hold exactly ``data``: "written" or "unchanged"."""
    try:
        storage.put_new(bucket, key, data, content_type)
        return "written"
    except DestinationExists:
        current = storage.stat(bucket, key)
        if current is not None and current.size == len(data) and storage.read_small(current, len(data)) == data:
            return "unchanged"
        raise ReleaseError(f"s3://{bucket}/{key} exists with other content; a published release's documents are "
                           "never overwritten") from None


def write_documents(cat: Catalog, storage: Storage, bucket: str, release: Mapping[str, Any]) -> dict[str, str]:
    """Render a published release's manifest and notes from the catalog and write those missing."""
    rows = cat.release_manifest(release["id"])
    prefix = release["manifest_prefix"] or Window(release["period_start"], release["period_end"],
                                                  release["batch"]).prefix
    return {prefix + name: put_once(storage, bucket, prefix + name, data, ctype)
            for name, (data, ctype) in documents(ReleaseInfo.of(release), rows).items()}


# ---------------------------------------------------------------- public bucket


def copy_keep_key(storage: Storage, src_bucket: str, key: str, dst_bucket: str, md5: str | None = None) -> str:
    """Server-side copy of an object to the same key in another bucket: "copied" or "present".

    With ``md5`` (the catalog's), S3 checks the copied parts against it, so a changed archive object
    is never published; without, the source's MD5 is taken from its ETag or read. A destination that
    holds other bytes is an error; one that holds these is left alone.
    """
    src = storage.stat(src_bucket, key)
    if src is None:
        raise ReleaseError(f"s3://{src_bucket}/{key} is missing; cannot copy it to {dst_bucket}")
    if md5 is None or src.size > COPY_PART_SIZE:
        whole, parts = storage.md5_of(src)
        if md5 is not None and whole != md5:
            raise ObjectChanged(f"s3://{src_bucket}/{key} has MD5 {whole}, the catalog {md5}; not copied")
        md5 = whole
    else:
        parts = [md5]
    present = storage.stored_md5(dst_bucket, key)
    if present is None:
        try:
            storage.copy_pinned(src, dst_bucket, key, md5=md5, part_md5s=parts)
            return "copied"
        except DestinationExists:
            present = storage.stored_md5(dst_bucket, key)
    if present != md5:
        raise ReleaseError(f"s3://{dst_bucket}/{key} exists with MD5 {present}, not {md5}; not overwritten")
    return "present"


def copy_release(cat: Catalog, storage: Storage, archive: str, public: str,
                 release: Mapping[str, Any]) -> dict[str, Any]:
    """Copy a release's released files and every object under its prefix (manifests, notes, withdrawal
    records) to the public bucket, keeping keys. Withdrawn files are not copied."""
    result: dict[str, Any] = {"copied": [], "present": 0, "failed": []}
    rows = cat.release_manifest(release["id"])
    todo = [(r["bucket"], r["s3_key"], str(r["md5checksum"]).strip()) for r in rows if r["released"]]
    todo += [(archive, o.key, None) for o in storage.list(archive, release["manifest_prefix"])]
    for bucket, key, md5 in todo:
        try:
            outcome = copy_keep_key(storage, bucket, key, public, md5)
        except (ObjectChanged, ReleaseError) as exc:
            result["failed"].append({"key": key, "error": str(exc)})
            continue
        if outcome == "copied":
            result["copied"].append(key)
        else:
            result["present"] += 1
    return result


# ---------------------------------------------------------------- withdrawals


def withdraw(cat: Catalog, *, reason: str, requested_by: str, file_names: Sequence[str] = (),
             release: str | None = None, dag_id: str | None, dag_run_id: str | None,
             dry_run: bool = False) -> dict[str, Any]:
    """Withdraw released files, or every file of a release, in one transaction, each audited.

    ``released`` turns false at once (the API stops serving them to the public). Files that are not
    released are reported and left alone, so repeating a withdrawal changes nothing.
    """
    reason = reason.strip()
    if not reason:
        raise ReleaseError("a withdrawal needs a reason (it is recorded with who asked and when)")
    if bool(file_names) == bool(release):
        raise ReleaseError("name either file_names or a release (batch number or release name), not both")
    rel: dict[str, Any] | None = None
    if release:
        name = window_of_name(release).name
        rel = release_row(cat, name)
        if rel is None:
            raise ReleaseError(f"{name} has not been published")
        state = [{**r, "id": r["file_id"]} for r in cat.release_manifest(rel["id"])]
    else:
        state = cat.release_state_of_files(file_names)
        missing = sorted(set(file_names) - {r["file_name"] for r in state})
        if missing:
            raise ReleaseError(f"not in the catalog: {missing}")
    names = {r["id"]: r["file_name"] for r in state}
    summary = {"release": rel["name"] if rel else None, "reason": reason, "requested_by": requested_by,
               "withdrawn": sorted(r["file_name"] for r in state if r["released"]),
               "not_released": sorted(r["file_name"] for r in state if not r["released"]), "dry_run": dry_run}
    if dry_run:
        return summary
    with sql.transaction(cat.conn) as cur:
        done = sql.run(cur, "withdraw_files", {
            "file_ids": sorted(names), "scope": "release" if rel else "file", "reason": reason,
            "requested_by": requested_by, "dag_id": dag_id, "dag_run_id": dag_run_id,
        })
        if rel is not None:
            sql.run(cur, "mark_release_withdrawn", {"release_id": rel["id"]})
    summary["withdrawn"] = sorted(names[d["file_id"]] for d in done)
    return summary


def withdrawal_records(rows: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """Key -> JSON record of one run's withdrawals, one object per release (``<prefix>withdrawals/<run>.json``)."""
    by_release: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_release.setdefault(r["release_name"] or "", []).append(r)
    out = {}
    for name, items in sorted(by_release.items()):
        if not name:
            continue
        first = items[0]
        safe_run = re.sub(r"[^A-Za-z0-9._-]", "_", str(first["dag_run_id"]))
        doc = {
            "release": name, "scope": first["scope"], "reason": first["reason"],
            "requested_by": first["requested_by"], "withdrawn_at": _iso(first["withdrawn_at"]),
            "dag_run_id": first["dag_run_id"],
            "files": [{"file_name": r["file_name"], "md5checksum": str(r["md5checksum"]).strip(),
                       "s3_key": r["s3_key"]} for r in sorted(items, key=lambda r: r["file_name"])],
        }
        out[f"{RELEASE_ROOT}/{name}/withdrawals/{safe_run}.json"] = (json.dumps(doc, indent=1) + "\n").encode()
    return out


def remove_public_copy(storage: Storage, public: str, key: str, md5: str) -> bool:
    """Delete the public copy of a withdrawn file if it is ours (same MD5); True when one was deleted."""
    current = storage.stat(public, key)
    if current is None:
        return False
    if storage.stored_md5(public, key) != md5:
        raise ReleaseError(f"s3://{public}/{key} holds other bytes than the withdrawn file; left alone")
    return storage.delete_version(current)


def as_dict(window: Window) -> dict[str, Any]:
    """A window as task output (JSON-friendly)."""
    return {**asdict(window), "start": window.start.isoformat(), "end": window.end.isoformat(),
            "name": window.name, "prefix": window.prefix}
