"""The storage side of a reconciliation: every object of a key range, in key order, in bounded memory.

Two sources give the same stream of :class:`Listed` objects (key, size, ETag, last modified):

* **live listing**: ``ListObjectsV2`` pages (1,000 keys each; S3 returns keys in UTF-8 byte order);
* **S3 Inventory**: the newest ``manifest.json`` of an inventory configuration (CSV format, gzipped data
  files; keys URL-encoded), as production buckets should use for millions of objects. Each data file is
  streamed (never held whole) and the files are merged by key (:func:`heapq.merge`); a file found out of
  key order is an :class:`InventoryError` naming it, never a silently wrong comparison.

Python compares ``str`` by code point, which for UTF-8 is byte order: the same order as S3's listing
and PostgreSQL's ``COLLATE "C"``, so both sides of the merge agree on what "next" means.
"""

from __future__ import annotations

import csv
import gzip
import heapq
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import quote_plus, unquote_plus

#: Inventory folders are named after the time the inventory started (YYYY-MM-DDTHH-MMZ).
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}Z)/$")
#: Columns the reconciliation needs from an inventory.
REQUIRED_FIELDS = ("Bucket", "Key", "Size", "ETag")


class InventoryError(RuntimeError):
    """An inventory manifest or data file is unusable (names the file and the problem)."""


class Listed(NamedTuple):
    """One object as a listing or an inventory reports it (an inventory's time stays text until needed)."""

    key: str
    size: int
    etag: str
    last_modified: datetime | str | None


def modified(o: Listed) -> datetime:
    """An object's last-modified time (parsed from an inventory's ISO text when needed)."""
    m = o.last_modified
    if isinstance(m, str):
        return datetime.fromisoformat(m.replace("Z", "+00:00"))
    assert m is not None
    return m


def key_range_end(prefix: str) -> str:
    """The smallest key after every key that starts with ``prefix`` ('' = no end: the whole bucket)."""
    if not prefix:
        return ""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def live_listing(client: Any, bucket: str, prefix: str = "") -> Iterator[Listed]:
    """Objects under ``prefix`` ('' = the whole bucket), in key order, one ListObjectsV2 page at a time."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", ()):
            yield Listed(obj["Key"], obj["Size"], obj["ETag"].strip('"'), obj["LastModified"])


def common_prefixes(client: Any, bucket: str, prefix: str) -> tuple[list[str], list[Listed]]:
    """The sub-folders (``Delimiter='/'``) of ``prefix`` and the objects directly in it."""
    folders: list[str] = []
    loose: list[Listed] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        folders += [p["Prefix"] for p in page.get("CommonPrefixes", ())]
        loose += [Listed(o["Key"], o["Size"], o["ETag"].strip('"'), o["LastModified"])
                  for o in page.get("Contents", ())]
    return folders, loose


@dataclass(frozen=True)
class InventoryManifest:
    """One published inventory: where its data files are and what their columns mean."""

    manifest_key: str
    destination_bucket: str
    source_bucket: str
    created: datetime
    fields: tuple[str, ...]
    files: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"manifest_key": self.manifest_key, "destination_bucket": self.destination_bucket,
                "source_bucket": self.source_bucket, "created": self.created.isoformat(),
                "fields": list(self.fields), "files": list(self.files)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InventoryManifest:
        return cls(d["manifest_key"], d["destination_bucket"], d["source_bucket"],
                   datetime.fromisoformat(d["created"]), tuple(d["fields"]), tuple(d["files"]))


def parse_manifest(text: bytes, *, manifest_key: str, destination_bucket: str) -> InventoryManifest:
    """Validate an S3 Inventory ``manifest.json`` (CSV format) and return what the reader needs."""
    where = f"s3://{destination_bucket}/{manifest_key}"
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise InventoryError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise InventoryError(f"{where}: a manifest is a JSON object")
    fmt = str(doc.get("fileFormat", ""))
    if fmt.upper() != "CSV":
        raise InventoryError(f"{where}: fileFormat {fmt!r} is not supported; configure the inventory as CSV")
    fields = tuple(f.strip() for f in str(doc.get("fileSchema", "")).split(","))
    missing = [f for f in REQUIRED_FIELDS if f not in fields]
    if missing:
        raise InventoryError(f"{where}: fileSchema lacks {missing}; the inventory must include Size and ETag")
    files = doc.get("files")
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("key"), str) for f in files):
        raise InventoryError(f"{where}: 'files' must be a list of {{key, size, MD5checksum}}")
    m = _STAMP.search(manifest_key.rsplit("/", 1)[0] + "/")
    created = (datetime.strptime(m[1], "%Y-%m-%dT%H-%MZ").replace(tzinfo=UTC) if m
               else datetime.fromtimestamp(int(doc.get("creationTimestamp", 0)) / 1000, UTC))
    return InventoryManifest(manifest_key, destination_bucket, str(doc.get("sourceBucket", "")), created, fields,
                             tuple(f["key"] for f in files))


def latest_manifest(client: Any, bucket: str, prefix: str) -> InventoryManifest | None:
    """The newest inventory published under ``prefix`` (``<dest prefix>/<source bucket>/<config id>/``)."""
    folders, _ = common_prefixes(client, bucket, prefix)
    stamps = sorted(f for f in folders if _STAMP.search(f))
    for folder in reversed(stamps):
        key = folder + "manifest.json"
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            continue  # an inventory still being written has no manifest yet
        return parse_manifest(body, manifest_key=key, destination_bucket=bucket)
    return None


def _file_rows(client: Any, manifest: InventoryManifest, file_key: str, lo: str, hi: str) -> Iterator[Listed]:
    """Rows of one gzipped CSV data file with ``lo <= key < hi``, checked to be in key order."""
    idx = {name: i for i, name in enumerate(manifest.fields)}
    ki, si, ei = idx["Key"], idx["Size"], idx["ETag"]
    mi = idx.get("LastModifiedDate")
    bi = idx["Bucket"]
    body = client.get_object(Bucket=manifest.destination_bucket, Key=file_key)["Body"]
    previous = ""
    try:
        with gzip.GzipFile(fileobj=body) as gz:
            reader = csv.reader(io.TextIOWrapper(gz, encoding="utf-8", newline=""))
            for n, row in enumerate(reader, start=1):
                if row[bi] != manifest.source_bucket:
                    continue
                key = row[ki]
                if "%" in key or "+" in key:
                    key = unquote_plus(key)
                if key < previous:
                    raise InventoryError(f"s3://{manifest.destination_bucket}/{file_key} row {n}: {key!r} comes "
                                         f"after {previous!r}; inventory data files must be in key order")
                previous = key
                if key < lo:
                    continue
                if hi and key >= hi:
                    return
                if row[si] == "":  # a delete marker or an object without size: not a current object
                    continue
                yield Listed(key, int(row[si]), row[ei].strip('"'), row[mi] or None if mi is not None else None)
    finally:
        body.close()


def inventory_listing(client: Any, manifest: InventoryManifest, lo: str = "", hi: str = "") -> Iterator[Listed]:
    """Every object of the inventory with ``lo <= key < hi``, all data files merged in key order."""
    streams = [_file_rows(client, manifest, f, lo, hi) for f in manifest.files]
    return heapq.merge(*streams, key=lambda o: o.key)


def write_inventory(client: Any, *, source_bucket: str, destination_bucket: str, prefix: str,
                    objects: Iterator[tuple[str, int, str, datetime]], created: datetime,
                    rows_per_file: int = 250_000) -> str:
    """Publish an inventory the way S3 does (manifest.json + gzipped CSV data files), for tests, the benchmark
    and sites whose S3 has no inventory service. ``objects`` must come in key order. Returns the manifest key."""
    stamp = created.strftime("%Y-%m-%dT%H-%MZ")
    files: list[dict[str, Any]] = []

    def flush(buf: io.BytesIO, n: int) -> None:
        key = f"{prefix}data/{stamp}-{n:05d}.csv.gz"
        data = buf.getvalue()
        client.put_object(Bucket=destination_bucket, Key=key, Body=data)
        files.append({"key": key, "size": len(data), "MD5checksum": ""})

    buf = io.BytesIO()
    gz = gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1)
    text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
    writer = csv.writer(text, quoting=csv.QUOTE_ALL)
    count = 0
    for key, size, etag, modified in objects:
        writer.writerow([source_bucket, quote_plus(key, safe="/-_.~"), size,
                         modified.strftime("%Y-%m-%dT%H:%M:%S.000Z"), etag])
        count += 1
        if count % rows_per_file == 0:
            text.flush()
            gz.close()
            flush(buf, len(files))
            buf = io.BytesIO()
            gz = gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1)
            text = io.TextIOWrapper(gz, encoding="utf-8", newline="")
            writer = csv.writer(text, quoting=csv.QUOTE_ALL)
    text.flush()
    gz.close()
    if count % rows_per_file or not files:
        flush(buf, len(files))
    manifest = {"sourceBucket": source_bucket, "destinationBucket": f"arn:aws:s3:::{destination_bucket}",
                "version": "2016-11-30", "creationTimestamp": str(int(created.timestamp() * 1000)),
                "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag", "files": files}
    key = f"{prefix}{stamp}/manifest.json"
    client.put_object(Bucket=destination_bucket, Key=key, Body=json.dumps(manifest).encode())
    return key
