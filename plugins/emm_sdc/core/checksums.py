"""Checksums: one-pass streaming MD5 and the MOC's md5sum-format sidecars.

The MOC delivers, beside every file ``F``, a sidecar ``F.md5`` holding one line
in ``md5sum`` format: ``<32 lowercase hex digits><two spaces or ' *'><F>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CHUNK_SIZE = 8 * 1024 * 1024
_SIDECAR_LINE = re.compile(r"^(?P<md5>[0-9a-fA-F]{32}) [ *](?P<name>\S.*)$")


class SidecarError(ValueError):
    """The checksum sidecar is malformed or names a different file."""


@dataclass
class StreamDigest:
    """MD5 and byte count of a stream, fed chunk by chunk (each byte read once).

    ``observers`` see every chunk too, so content checks share the same pass.
    """

    observers: list[Callable[[bytes], None]] = field(default_factory=list)
    size: int = 0
    _md5: hashlib._Hash = field(default_factory=hashlib.md5, repr=False)

    def update(self, chunk: bytes) -> None:
        self._md5.update(chunk)
        self.size += len(chunk)
        for observe in self.observers:
            observe(chunk)

    def consume(self, chunks: Iterable[bytes]) -> StreamDigest:
        for chunk in chunks:
            self.update(chunk)
        return self

    @property
    def md5(self) -> str:
        return self._md5.hexdigest()


def md5_file(path: str | Path) -> str:
    """MD5 hex digest of a local file."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def parse_sidecar(text: str, expected_name: str) -> str:
    """Return the MD5 a sidecar declares for ``expected_name``.

    Raises :class:`SidecarError` naming the rule broken.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) != 1:
        raise SidecarError(
            f"sidecar for {expected_name!r} must hold exactly one md5sum line, found {len(lines)}"
        )
    m = _SIDECAR_LINE.match(lines[0].strip())
    if not m:
        raise SidecarError(
            f"sidecar for {expected_name!r} is not md5sum format '<32 hex digits>  <file name>': {lines[0]!r}"
        )
    named = m["name"].strip().rsplit("/", 1)[-1]
    if named != expected_name:
        raise SidecarError(f"sidecar for {expected_name!r} declares a checksum for {named!r}")
    return m["md5"].lower()


def format_sidecar(md5: str, file_name: str) -> str:
    """An md5sum-format line, as the MOC writes it."""
    return f"{md5}  {file_name}\n"
