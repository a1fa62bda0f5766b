"""Streaming MD5 and the MOC's md5sum-format sidecars."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from emm_sdc.core.checksums import SidecarError, StreamDigest, format_sidecar, md5_file, parse_sidecar


def test_stream_digest_matches_hashlib_and_feeds_observers() -> None:
    data = bytes(range(256)) * 4099
    seen: list[int] = []
    d = StreamDigest(observers=[lambda c: seen.append(len(c))])
    d.consume(data[i : i + 7777] for i in range(0, len(data), 7777))
    assert d.md5 == hashlib.md5(data).hexdigest()
    assert d.size == len(data) == sum(seen)


def test_md5_file_agrees_with_md5sum(tmp_path: Path) -> None:
    f = tmp_path / "x.bin"
    f.write_bytes(b"hope" * 100_000)
    out = subprocess.run(["md5sum", str(f)], capture_output=True, text=True, check=True).stdout
    assert md5_file(f) == out.split()[0]


def test_sidecar_round_trip_and_binary_marker() -> None:
    md5 = "0123456789abcdef0123456789abcdef"
    assert parse_sidecar(format_sidecar(md5, "a.bin"), "a.bin") == md5
    assert parse_sidecar(f"{md5.upper()} *a.bin\n", "a.bin") == md5
    assert parse_sidecar(f"{md5}  /moc/outbox/a.bin", "a.bin") == md5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "exactly one md5sum line, found 0"),
        ("0123456789abcdef0123456789abcdef  a.bin\n0123456789abcdef0123456789abcdef  a.bin\n", "found 2"),
        ("not-a-checksum  a.bin", "not md5sum format"),
        ("0123456789abcdef0123456789abcdef  b.bin", "declares a checksum for 'b.bin'"),
    ],
)
def test_bad_sidecars_name_the_rule(text: str, message: str) -> None:
    with pytest.raises(SidecarError, match=message):
        parse_sidecar(text, "a.bin")
