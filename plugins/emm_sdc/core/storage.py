"""S3 storage: inbox listing, one-pass streaming validation, verified copies and uploads.

Takes a boto3 S3 client (the task layer gets it from the amazon provider's
``S3Hook``), so the same code runs against AWS and the loopback moto server.
Every write is verified: copies and uploads compare S3's MD5 with ours.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from emm_sdc.core.checksums import CHUNK_SIZE, StreamDigest

#: Objects up to this size are copied/uploaded in one request, whose ETag is the MD5.
SINGLE_REQUEST_LIMIT = 5 * 1024**3
QUARANTINE_ROOT = "emm/quarantine"
LOG_ROOT = "emm/logs"


class StorageError(RuntimeError):
    """An S3 operation failed or its result did not verify."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: datetime
    etag: str

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


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
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def iter_chunks(self, bucket: str, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(chunk_size)
        finally:
            body.close()

    def digest(
        self, bucket: str, key: str, observers: list[Callable[[bytes], None]] | None = None
    ) -> StreamDigest:
        """MD5 and size of an object, reading it once; ``observers`` see the same chunks."""
        return StreamDigest(observers=list(observers or [])).consume(self.iter_chunks(bucket, key))

    def read_small(self, bucket: str, key: str, limit: int = 64 * 1024) -> bytes:
        """Read a small object (a sidecar); refuse anything larger than ``limit``."""
        obj = self.client.get_object(Bucket=bucket, Key=key)
        if obj["ContentLength"] > limit:
            obj["Body"].close()
            raise StorageError(f"s3://{bucket}/{key} is {obj['ContentLength']} bytes, more than {limit}")
        return obj["Body"].read()

    def copy_verified(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str, *, md5: str, size: int
    ) -> None:
        """Server-side copy, then prove the copy holds the bytes we checksummed."""
        metadata = {"md5": md5}
        if size <= SINGLE_REQUEST_LIMIT:
            resp = self.client.copy_object(
                CopySource={"Bucket": src_bucket, "Key": src_key}, Bucket=dst_bucket, Key=dst_key,
                Metadata=metadata, MetadataDirective="REPLACE",
            )
            etag = resp["CopyObjectResult"]["ETag"].strip('"')
            if etag != md5:
                raise StorageError(f"copy to s3://{dst_bucket}/{dst_key} has ETag {etag}, expected MD5 {md5}")
        else:
            self.client.copy(
                {"Bucket": src_bucket, "Key": src_key}, dst_bucket, dst_key,
                ExtraArgs={"Metadata": metadata, "MetadataDirective": "REPLACE"},
            )
            copied = self.digest(dst_bucket, dst_key)
            if copied.md5 != md5:
                raise StorageError(f"copy to s3://{dst_bucket}/{dst_key} has MD5 {copied.md5}, expected {md5}")
        head = self.head(dst_bucket, dst_key)
        if head is None or head["ContentLength"] != size:
            raise StorageError(f"copy to s3://{dst_bucket}/{dst_key} is missing or has the wrong size")

    def copy_as_is(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> bool:
        """Verified copy of whatever the source holds now; False if the source is gone."""
        head = self.head(src_bucket, src_key)
        if head is None:
            return False
        etag = head["ETag"].strip('"')
        size = head["ContentLength"]
        if "-" not in etag:  # single-part upload: the ETag is the MD5
            self.copy_verified(src_bucket, src_key, dst_bucket, dst_key, md5=etag, size=size)
        else:
            md5 = self.digest(src_bucket, src_key).md5
            self.copy_verified(src_bucket, src_key, dst_bucket, dst_key, md5=md5, size=size)
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

    def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.client.put_object(Bucket=bucket, Key=key, Body=data, ContentType=content_type)

    def put_json(self, bucket: str, key: str, payload: Any) -> None:
        self.put_bytes(bucket, key, json.dumps(payload, indent=2, default=str).encode(), "application/json")

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
