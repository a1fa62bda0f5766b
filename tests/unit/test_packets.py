"""CCSDS packet framing that rides the checksum pass."""

from __future__ import annotations

import struct

import pytest

from emm_sdc.core import packets

EXI = packets.allowed_apids("exi", "l0")


def _stream(n: int, apid: int = 0x110) -> bytes:
    payload = bytes(packets.PACKET_TYPES[apid].payload_len)
    return b"".join(packets.pack_packet(apid, i, 700_000_000 + i, 0, 1, payload) for i in range(n))


def _frame(data: bytes, chunk: int, allowed: dict[int, int] = EXI) -> packets.PacketFramer:
    f = packets.PacketFramer(allowed)
    for i in range(0, len(data), chunk):
        f(data[i : i + chunk])
    f.finish()
    return f


@pytest.mark.parametrize("chunk", [1, 3, 6, 529, 530, 531, 4096, 1 << 20])
def test_any_chunking_frames_every_packet(chunk: int) -> None:
    f = _frame(_stream(300), chunk)
    assert f.problems == [] and f.packets == 300


def test_mixed_apids_and_lengths_in_one_file() -> None:
    data = _stream(5, 0x110) + _stream(3, 0x115) + _stream(4, 0x110)
    assert _frame(data, 1000).packets == 12


def test_truncated_file_is_reported_with_counts() -> None:
    f = _frame(_stream(10)[:-100], 4096)
    assert f.problems == ["truncated: the last packet ends 100 byte(s) past the end of the file (5200 bytes, "
                          "9 whole packets)"]


def test_truncated_inside_a_header() -> None:
    f = _frame(_stream(2)[:533], 64)
    assert "truncated" in f.problems[0] and "3 byte(s)" in f.problems[0]


def test_foreign_apid_rejected() -> None:
    f = _frame(_stream(3, 0x120), 4096)
    assert "APID 0x120 does not belong" in f.problems[0]


def test_corrupt_header_in_a_fast_run_is_found_at_its_offset() -> None:
    data = bytearray(_stream(50))
    data[530 * 20] = 0xFF  # version bits of packet 20
    f = _frame(bytes(data), 1 << 20)
    assert f.problems and f.problems[0].startswith(f"byte {530 * 20}:")
    assert f.packets == 20


def test_wrong_declared_length() -> None:
    data = bytearray(_stream(2))
    struct.pack_into(">H", data, 4, 100)
    f = _frame(bytes(data), 4096)
    assert "declares 107 bytes, its layout has 530" in f.problems[0]


def test_empty_stream() -> None:
    assert _frame(b"", 10).problems == ["no packets: the file holds no CCSDS packet"]


def test_hk_and_science_apids_are_separate() -> None:
    assert set(packets.allowed_apids("emr", "hk")) == {0x13F}
    assert set(packets.allowed_apids("emu", "l0")) == {0x120}
    with pytest.raises(ValueError, match="payload is"):
        packets.pack_packet(0x13F, 0, 0, 0, 0, b"short")
