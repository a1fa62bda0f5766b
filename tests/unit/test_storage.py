"""Pure parts of core/storage.py (the S3 operations themselves are tested on moto's server in tests/faults)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from emm_sdc.core.storage import ObjectVersion, PartHasher


def test_part_hasher_matches_per_part_md5s_whatever_the_chunking() -> None:
    data = bytes(range(256)) * 41  # 10,496 bytes
    hasher = PartHasher(part_size=4096)
    for i in range(0, len(data), 1000):
        hasher(data[i:i + 1000])
    want = [hashlib.md5(data[i:i + 4096]).hexdigest() for i in range(0, len(data), 4096)]
    assert hasher.finish() == want and len(want) == 3


def test_part_hasher_of_exact_multiples_and_empty_input() -> None:
    hasher = PartHasher(part_size=4)
    hasher(b"abcdefgh")
    assert hasher.finish() == [hashlib.md5(b"abcd").hexdigest(), hashlib.md5(b"efgh").hexdigest()]
    assert PartHasher(part_size=4).finish() == [hashlib.md5(b"").hexdigest()]


def test_versions_pin_reads_and_identify_uploads() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    versioned = ObjectVersion("b", "k", "e" * 32, 3, "v1", at)
    plain = ObjectVersion("b", "k", "e" * 32, 3, None, at)
    assert versioned.pin() == {"VersionId": "v1"} and versioned.token == "v:v1"
    assert plain.pin() == {"IfMatch": '"' + "e" * 32 + '"'} and plain.token.startswith("e:" + "e" * 32)
    assert plain.plain_md5 == "e" * 32 and ObjectVersion("b", "k", "ab-2", 3).plain_md5 is None
    assert versioned.copy_source() == {"Bucket": "b", "Key": "k", "VersionId": "v1"}
