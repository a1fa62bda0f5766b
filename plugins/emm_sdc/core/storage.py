"""S3 storage: inbox listing, pinned reads, conditional archive writes, version-exact deletes.

Takes a boto3 S3 client (the task layer gets it from the amazon provider's
``S3Hook``), so the same code runs against AWS and the loopback moto server.

The archive's promise rests on three rules, each enforced by S3 itself:

* **What was checked is what is copied.** Reads and copies of an inbox object
  are pinned to the version that was listed (its ``VersionId`` on versioned
  buckets, ``If-Match`` on its ETag otherwise); a copy goes through a multipart
  upload whose part ETags are compared with the MD5s of the bytes we checksummed
  *before* the upload is completed, so a mismatch never becomes visible.
* **Never overwrite.** Archive and quarantine writes complete only if the key
  does not exist yet (``If-None-Match: *``); otherwise :class:`DestinationExists`.
* **Delete only what was handled.** An inbox object is deleted by its
  ``VersionId`` (versioned buckets) or with ``If-Match`` on the handled ETag, so a
  newer upload of the same name stays in the inbox for the next run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emm_sdc.core.checksums import CHUNK_SIZE, StreamDigest

#: Objects up to this size are uploaded in one request, whose ETag is the MD5.
SINGLE_REQUEST_LIMIT = 5 * 1024**3
#: Part size of pinned copies (S3's UploadPartCopy limit is 5 GiB per part).
COPY_PART_SIZE = 1024**3
EMPTY_MD5 = hashlib.md5(b"").hexdigest()
QUARANTINE_ROOT = "emm/quarantine"
LOG_ROOT = "emm/logs"
log = logging.getLogger(__name__)
_GONE = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
_PRECONDITION = {"412", "PreconditionFailed"}


class StorageError(RuntimeError):
    """An S3 operation failed or its result did not verify."""


class ObjectChanged(StorageError):
    """The object version being handled is gone or was replaced; nothing was written."""


class DestinationExists(StorageError):
    """The destination key already exists; the conditional write wrote nothing.

    ``held_md5``: what the existing object holds, when :meth:`Storage.write_once` looked.
    """

    held_md5: str | None = None


def error_code(exc: BaseException) -> str:
    """The S3 error code (or HTTP status) of a botocore ``ClientError``; '' for other errors."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code or (str(status) if status else "")


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class ObjectVersion:
    """One exact version of an object: what was checked is what gets copied and deleted."""

    bucket: str
    key: str
    etag: str
    size: int
    version_id: str | None = None  # None on unversioned buckets (and for "null" versions)
    last_modified: datetime | None = None
    stored_md5: str | None = None  # the SDC's recorded MD5 (metadata), else a plain ETag; "" if neither

    @property
    def token(self) -> str:
        """Identifies this upload: its version id, else its ETag and upload time."""
        if self.version_id:
            return f"v:{self.version_id}"
        stamp = self.last_modified.isoformat() if self.last_modified else ""
        return f"e:{self.etag}@{stamp}"

    @property
    def plain_md5(self) -> str | None:
        """The MD5 when the ETag is one (single-request uploads), else None."""
        return self.etag if len(self.etag) == 32 and "-" not in self.etag else None

    def pin(self) -> dict[str, str]:
        """Request arguments that make a read apply to exactly this version."""
        return {"VersionId": self.version_id} if self.version_id else {"IfMatch": f'"{self.etag}"'}

    def copy_source(self) -> dict[str, str]:
        src = {"Bucket": self.bucket, "Key": self.key}
        if self.version_id:
            src["VersionId"] = self.version_id
        return src


class PartHasher:
    """Stream observer: MD5 of each ``part_size`` slice, to verify a multipart copy part by part."""

    def __init__(self, part_size: int = COPY_PART_SIZE):
        self.part_size = part_size
        self.md5s: list[str] = []
        self._current = hashlib.md5()
        self._filled = 0

    def __call__(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self.md5s.append(self._current.hexdigest())
                self._current, self._filled = hashlib.md5(), 0

    def finish(self) -> list[str]:
        if self._filled or not self.md5s:
            self.md5s.append(self._current.hexdigest())
            self._current, self._filled = hashlib.md5(), 0
        return self.md5s


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, indent=2, default=str).encode()


class Storage:
    """Operations on the SDC's buckets through one S3 client."""

    def __init__(self, client: Any):
        self.client = client

    def list(self, bucket: str, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` (all pages)."""
        out: list[ObjectInfo] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append(ObjectInfo(obj["Key"], obj["Size"], obj["LastModified"], obj["ETag"].strip('"')))
        return out

    def head(self, bucket: str, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) in _GONE:
                return None
            raise

    def stat(self, bucket: str, key: str) -> ObjectVersion | None:
        """The current version of an object (None if there is none)."""
        head = self.head(bucket, key)
        if head is None:
            return None
        version = head.get("VersionId")
        etag = head["ETag"].strip('"')
        return ObjectVersion(bucket, key, etag, int(head["ContentLength"]),
                             None if version in (None, "null") else version, head.get("LastModified"),
                             head.get("Metadata", {}).get("md5") or (etag if "-" not in etag else ""))

    def stored_md5(self, bucket: str, key: str) -> str | None:
        """MD5 of an archived object as the SDC recorded it (metadata), else its plain ETag; None if absent."""
        version = self.stat(bucket, key)
        return None if version is None else version.stored_md5

    def write_once(self, bucket: str, key: str, md5: str, write: Callable[[], None]) -> bool:
        """Run a conditional write of bytes with ``md5`` to a key; True if it created the object, False if the
        key already holds these very bytes (an earlier attempt or a concurrent writer put them there).

        Other bytes at the key: :class:`DestinationExists` with ``held_md5``; nothing is overwritten.
        """
        try:
            write()
            return True
        except DestinationExists as exc:
            held = self.stored_md5(bucket, key)
            if held == md5:
                return False
            exc.held_md5 = held
            raise

    @contextmanager
    def _if_new(self, bucket: str, key: str) -> Iterator[None]:
        """Turn S3's answer to a write conditioned on ``If-None-Match: *`` into :class:`DestinationExists`."""
        try:
            yield
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) in _PRECONDITION:
                raise DestinationExists(f"s3://{bucket}/{key} already exists; not overwritten") from exc
            raise

    def _get(self, bucket: str, key: str, version: ObjectVersion | None) -> dict[str, Any]:
        try:
            return self.client.get_object(Bucket=bucket, Key=key, **(version.pin() if version else {}))
        except self.client.exceptions.ClientError as exc:
            if version is not None and (error_code(exc) in _GONE or error_code(exc) in _PRECONDITION):
                raise ObjectChanged(f"s3://{bucket}/{key} changed or went away while it was being handled "
                                    f"({error_code(exc)}); the newer upload is left for the next run") from exc
            raise

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = CHUNK_SIZE,
                    version: ObjectVersion | None = None) -> Iterator[bytes]:
        body = self._get(bucket, key, version)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def digest(
        self, bucket: str, key: str, observers: list[Callable[[bytes], None]] | None = None,
        version: ObjectVersion | None = None,
    ) -> StreamDigest:
        """MD5 and size of an object (of exactly ``version`` if given), reading it once; observers see the chunks."""
        return StreamDigest(observers=list(observers or [])).consume(self.iter_chunks(bucket, key, version=version))

    def read_small(self, version: ObjectVersion, limit: int = 64 * 1024) -> bytes:
        """Read a small object version (a sidecar); refuse anything larger than ``limit``."""
        if version.size > limit:
            raise StorageError(f"s3://{version.bucket}/{version.key} is {version.size} bytes, more than {limit}")
        return self._get(version.bucket, version.key, version)["Body"].read(limit + 1)

    def md5_of(self, version: ObjectVersion) -> tuple[str, list[str]]:
        """Whole-object MD5 and per-copy-part MD5s of a version: from its ETag when that is an MD5
        and the object fits one part, else by reading it (pinned) once."""
        if version.plain_md5 and version.size <= COPY_PART_SIZE:
            return version.plain_md5, [version.plain_md5]
        parts = PartHasher()
        digest = self.digest(version.bucket, version.key, [parts], version=version)
        return digest.md5, parts.finish()

    def copy_pinned(
        self, src: ObjectVersion, dst_bucket: str, dst_key: str, *, md5: str, part_md5s: list[str],
        metadata: dict[str, str] | None = None,
    ) -> None:
        """Copy exactly ``src`` to a key that must not exist yet, verified before it becomes visible.

        Server-side multipart copy pinned to the source version: each part's ETag
        must equal the MD5 of the bytes we checksummed, and the upload completes
        only with ``If-None-Match: *``. Raises :class:`ObjectChanged` (source no
        longer the checked bytes) or :class:`DestinationExists`; either way the
        destination is untouched.
        """
        meta = {"md5": md5, **(metadata or {})}
        if src.size == 0:
            if md5 != EMPTY_MD5:
                raise ObjectChanged(f"s3://{src.bucket}/{src.key} is empty now but was checked with MD5 {md5}")
            self.put_new(dst_bucket, dst_key, b"", metadata=meta)
            return
        expected = -(-src.size // COPY_PART_SIZE)
        if len(part_md5s) != expected:
            raise StorageError(f"{len(part_md5s)} part MD5s for {src.size} bytes; expected {expected}")
        upload = self.client.create_multipart_upload(Bucket=dst_bucket, Key=dst_key, Metadata=meta)["UploadId"]
        try:
            parts = []
            for n, want in enumerate(part_md5s, start=1):
                first = (n - 1) * COPY_PART_SIZE
                last = min(src.size, n * COPY_PART_SIZE) - 1
                kwargs: dict[str, Any] = {"CopySourceRange": f"bytes={first}-{last}"}
                if not src.version_id:
                    kwargs["CopySourceIfMatch"] = f'"{src.etag}"'
                try:
                    resp = self.client.upload_part_copy(
                        Bucket=dst_bucket, Key=dst_key, UploadId=upload, PartNumber=n,
                        CopySource=src.copy_source(), **kwargs)
                except self.client.exceptions.ClientError as exc:
                    if error_code(exc) in _GONE or error_code(exc) in _PRECONDITION:
                        raise ObjectChanged(f"s3://{src.bucket}/{src.key} went away or changed before it could "
                                            f"be copied ({error_code(exc)})") from exc
                    raise
                got = resp["CopyPartResult"]["ETag"].strip('"')
                if got != want:
                    raise ObjectChanged(f"s3://{src.bucket}/{src.key} part {n} has MD5 {got}, the checked bytes "
                                        f"{want}: the object changed after it was checked; nothing was written")
                parts.append({"PartNumber": n, "ETag": resp["CopyPartResult"]["ETag"]})
            with self._if_new(dst_bucket, dst_key):
                self.client.complete_multipart_upload(
                    Bucket=dst_bucket, Key=dst_key, UploadId=upload, MultipartUpload={"Parts": parts},
                    IfNoneMatch="*")
            upload = ""
        finally:
            if upload:
                self._abort(dst_bucket, dst_key, upload)
        head = self.head(dst_bucket, dst_key)
        if head is None or head["ContentLength"] != src.size or head.get("Metadata", {}).get("md5") != md5:
            raise StorageError(f"copy to s3://{dst_bucket}/{dst_key} is missing or does not verify")

    def _abort(self, bucket: str, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception as exc:  # best effort: an unfinished upload is invisible and expires by lifecycle rule
            log.warning("could not abort multipart upload %s of s3://%s/%s: %s", upload_id, bucket, key, exc)

    def put_new(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream",
                metadata: dict[str, str] | None = None) -> None:
        """Create an object that must not exist yet (``If-None-Match: *``), else :class:`DestinationExists`."""
        with self._if_new(bucket, key):
            self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type,
                                   Metadata=metadata or {}, IfNoneMatch="*",
                                   ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode())

    def delete_version(self, version: ObjectVersion) -> bool:
        """Delete exactly this version; False when the key now holds a newer upload (which stays).

        Versioned buckets: by ``VersionId`` (never a delete marker over a newer
        upload). Otherwise: ``If-Match`` on the handled ETag, so a re-upload with
        other bytes survives; an identical re-upload is indistinguishable and goes.
        """
        try:
            if version.version_id:
                self.client.delete_object(Bucket=version.bucket, Key=version.key, VersionId=version.version_id)
            else:
                self.client.delete_object(Bucket=version.bucket, Key=version.key, IfMatch=f'"{version.etag}"')
        except self.client.exceptions.ClientError as exc:
            if error_code(exc) in _PRECONDITION:
                return False
            if error_code(exc) in _GONE:
                return True
            raise
        return True

    def upload_verified(self, path: Path, bucket: str, key: str, *, md5: str) -> None:
        """Upload a local file; S3 checks the Content-MD5 we send against what it received."""
        size = path.stat().st_size
        if size > SINGLE_REQUEST_LIMIT:
            self.client.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"md5": md5}})
            if self.digest(bucket, key).md5 != md5:
                raise StorageError(f"upload to s3://{bucket}/{key} does not match MD5 {md5}")
            return
        with path.open("rb") as fh:
            self.client.put_object(
                Bucket=bucket, Key=key, Body=fh, Metadata={"md5": md5},
                ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode(),
            )

    def upload_new(self, path: Path, bucket: str, key: str, *, md5: str) -> None:
        """Upload a local file to a key that must not exist yet, S3 checking our MD5 (else DestinationExists).

        Single request up to 5 GiB (Content-MD5), multipart above (each part's Content-MD5; the whole
        re-read after); the upload completes only with ``If-None-Match: *``.
        """
        size = path.stat().st_size
        with self._if_new(bucket, key):
            if size <= SINGLE_REQUEST_LIMIT:
                with path.open("rb") as fh:
                    self.client.put_object(
                        Bucket=bucket, Key=key, Body=fh, Metadata={"md5": md5}, IfNoneMatch="*",
                        ContentMD5=base64.b64encode(bytes.fromhex(md5)).decode())
                return
            upload = self.client.create_multipart_upload(Bucket=bucket, Key=key, Metadata={"md5": md5})["UploadId"]
            try:
                parts = []
                with path.open("rb") as fh:
                    for n, chunk in enumerate(iter(lambda: fh.read(COPY_PART_SIZE), b""), start=1):
                        resp = self.client.upload_part(
                            Bucket=bucket, Key=key, UploadId=upload, PartNumber=n, Body=chunk,
                            ContentMD5=base64.b64encode(hashlib.md5(chunk).digest()).decode())
                        parts.append({"PartNumber": n, "ETag": resp["ETag"]})
                self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload,
                                                      MultipartUpload={"Parts": parts}, IfNoneMatch="*")
                upload = ""
            finally:
                if upload:
                    self._abort(bucket, key, upload)
        if self.digest(bucket, key).md5 != md5:
            raise StorageError(f"upload to s3://{bucket}/{key} does not match MD5 {md5}")

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, bucket: str, key: str, payload: Any) -> None:
        self.put_bytes(bucket, key, json_bytes(payload), "application/json")

    def download(self, bucket: str, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(bucket, key, str(path))

    def delete(self, bucket: str, *keys: str) -> None:
        for key in keys:
            self.client.delete_object(Bucket=bucket, Key=key)

    def ensure_bucket(self, bucket: str) -> None:
        """Create a bucket if missing (embedded/dev set-up only)."""
        if bucket not in {b["Name"] for b in self.client.list_buckets().get("Buckets", [])}:
            self.client.create_bucket(Bucket=bucket)
