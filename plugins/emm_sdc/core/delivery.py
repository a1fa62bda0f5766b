"""Inbox planning: pair delivered files with their checksum sidecars and decide what is ready.

A data file is *ready* once its sidecar has arrived. A data file still without
a sidecar after the grace period is *overdue* (quarantined as missing
checksum), as is a sidecar whose data file never came, anything in a
sub-folder of the inbox (the MOC delivers flat) and any key ending in ``/``
(a file uploaded "as a folder"). Everything else *waits*, with the reason.
Every key under the prefix is accounted for: ready, overdue or waiting; the
only keys left out are the folder markers of the prefix (and of its named
sub-folders), which hold no data.

A caller may name sub-folders of the prefix that are inboxes of their own (the
instrument inbox's ``calibration/``): their files are planned by the same
rules and carry the folder's name in :attr:`DeliveryItem.folder`, so the DAG
routes them to that folder's handler.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from emm_sdc.core.naming import SIDECAR_SUFFIX
from emm_sdc.core.storage import ObjectInfo


@dataclass(frozen=True)
class DeliveryItem:
    """One unit of inbox work: a data file (with its sidecar, if any) or a stray object."""

    key: str
    size: int
    etag: str
    sidecar_key: str | None = None
    problem: str | None = None  # set for overdue/stray items: the quarantine reason code
    folder: str | None = None  # the named sub-folder it was delivered to (None: the prefix itself)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeliveryItem:
        return cls(**d)


@dataclass(frozen=True)
class DeliveryPlan:
    ready: list[DeliveryItem]
    overdue: list[DeliveryItem]
    waiting: dict[str, str]  # key -> why it is not handled in this run

    @property
    def actionable(self) -> list[DeliveryItem]:
        return self.ready + self.overdue

    def batch(self, limit: int) -> tuple[list[DeliveryItem], dict[str, str]]:
        """The first ``limit`` actionable items, and every other key with the reason it waits."""
        work = self.actionable
        waiting = dict(self.waiting)
        for item in work[limit:]:
            for key in (item.key, item.sidecar_key):
                if key:
                    waiting[key] = f"batch limit of {limit} files reached: handled by the next run"
        return work[:limit], waiting


def folder_markers(prefix: str, folders: Collection[str] = ()) -> set[str]:
    """The folder-marker keys of an inbox prefix and of its named sub-folders (they hold no data)."""
    return {prefix} | {f"{prefix}{folder}/" for folder in folders}


def plan(objects: list[ObjectInfo], prefix: str, *, now: datetime, grace: timedelta,
         folders: Collection[str] = ()) -> DeliveryPlan:
    """Sort an inbox listing into ready, overdue and waiting work.

    ``folders``: sub-folders of the prefix planned as inboxes of their own (their items carry ``folder``).
    """
    markers = folder_markers(prefix, folders)
    by_key = {o.key: o for o in objects if o.key not in markers}
    ready: list[DeliveryItem] = []
    overdue: list[DeliveryItem] = []
    waiting: dict[str, str] = {}
    for key, obj in sorted(by_key.items()):
        rel = key[len(prefix):] if key.startswith(prefix) else key
        head, sep, rest = rel.partition("/")
        folder = head if sep and head in folders else None
        if folder is not None:
            rel = rest
        if "/" in rel.rstrip("/"):
            overdue.append(DeliveryItem(key, obj.size, obj.etag, problem="unexpected-location", folder=folder))
            continue
        if rel.endswith("/"):
            overdue.append(DeliveryItem(key, obj.size, obj.etag, problem="folder-key", folder=folder))
            continue
        late = now - obj.last_modified >= grace
        if key.endswith(SIDECAR_SUFFIX):
            if key[: -len(SIDECAR_SUFFIX)] in by_key:
                continue  # travels with its data file
            if late:
                overdue.append(DeliveryItem(key, obj.size, obj.etag, problem="orphan-checksum", folder=folder))
            else:
                waiting[key] = f"sidecar without its data file; waits up to {grace} for it"
            continue
        sidecar = key + SIDECAR_SUFFIX
        if sidecar in by_key:
            ready.append(DeliveryItem(key, obj.size, obj.etag, sidecar_key=sidecar, folder=folder))
        elif late:
            overdue.append(DeliveryItem(key, obj.size, obj.etag, problem="missing-checksum", folder=folder))
        else:
            waiting[key] = f"waits for its .md5 sidecar (grace period {grace})"
    return DeliveryPlan(ready, overdue, waiting)


def sensor_objects(files: list[dict[str, Any]]) -> list[ObjectInfo]:
    """Adapt the S3 sensor's file metadata (Key, Size, LastModified) to :class:`ObjectInfo`."""
    return [ObjectInfo(f["Key"], int(f.get("Size") or 0), f["LastModified"], "") for f in files]
