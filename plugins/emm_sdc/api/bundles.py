"""Bulk downloads: every match in one ``.tgz``, streamed from the archive into S3, never held in memory.

Members keep the archive layout (``emm/data/<inst>/<level>[/<mode>]/YYYY/MM/<file>``).
Each member's bytes are checksummed on the way through and compared with the
catalog's MD5; a mismatch aborts the bundle (the multipart upload is never
completed), so a bundle never carries a file that is not what was indexed.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Sequence
from typing import Any

#: Parts of the streamed upload (S3's minimum for all but the last part is 5 MiB).
PART_SIZE = 8 * 1024 * 1024


class BundleError(RuntimeError):
    """An archived object did not match its catalog checksum; no bundle was made."""


class _MultipartWriter(io.RawIOBase):
    """A write-only file that uploads what it is given as the parts of one S3 object."""

    def __init__(self, client: Any, bucket: str, key: str):
        super().__init__()
        self.client, self.bucket, self.key = client, bucket, key
        self.upload_id = client.create_multipart_upload(Bucket=bucket, Key=key,
                                                        ContentType="application/gzip")["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.buffer += data
        while len(self.buffer) >= PART_SIZE:
            self._send(bytes(self.buffer[:PART_SIZE]))
            del self.buffer[:PART_SIZE]
        return len(data)

    def _send(self, chunk: bytes) -> None:
        n = len(self.parts) + 1
        resp = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=n,
                                       Body=chunk)
        self.parts.append({"PartNumber": n, "ETag": resp["ETag"]})

    def complete(self) -> None:
        if self.buffer or not self.parts:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": self.parts}, IfNoneMatch="*")

    def abort(self) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class _Checked(io.RawIOBase):
    """Reads an S3 body and checksums what passes through."""

    def __init__(self, body: Any):
        super().__init__()
        self.body = body
        self.md5 = hashlib.md5()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.body.read(size if size >= 0 else None)
        self.md5.update(data)
        return data


def write_bundle(client: Any, rows: Sequence[dict[str, Any]], bucket: str, key: str) -> None:
    """Stream the archived objects of ``rows`` into one gzipped tar at ``s3://bucket/key``."""
    out = _MultipartWriter(client, bucket, key)
    try:
        with tarfile.open(fileobj=out, mode="w|gz") as tar:
            for row in rows:
                info = tarfile.TarInfo(row["s3_key"])
                info.size = int(row["file_size"])
                info.mtime = int(row["mod_date"].timestamp())
                info.mode = 0o644
                obj = client.get_object(Bucket=row["bucket"], Key=row["s3_key"])
                reader = _Checked(obj["Body"])
                try:
                    tar.addfile(info, fileobj=reader)
                finally:
                    obj["Body"].close()
                if reader.md5.hexdigest() != (row["md5checksum"] or "").strip():
                    raise BundleError(f"{row['file_name']}: the archived bytes do not match the catalog's MD5; "
                                      "reported in the API's log")
        out.complete()
    except BaseException:
        out.abort()
        raise
