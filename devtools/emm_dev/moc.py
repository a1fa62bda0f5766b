"""Stand-in for the MOC's side of a delivery: put files and their sidecars into the S3 inbox."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from emm_dev.synthetic import Delivered


def deliver(client: Any, bucket: str, prefix: str, files: Iterable[Delivered], *, sidecars: bool = True) -> list[str]:
    """Upload each file (data first, then its sidecar, as the MOC does); return the data keys."""
    keys: list[str] = []
    for f in files:
        key = prefix + f.file_name
        client.put_object(Bucket=bucket, Key=key, Body=f.path.read_bytes())
        if sidecars and f.sidecar_path is not None:
            client.put_object(Bucket=bucket, Key=key + ".md5", Body=f.sidecar_path.read_bytes())
        keys.append(key)
    return keys
