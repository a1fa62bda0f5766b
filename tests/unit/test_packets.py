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


# ----------------------------------------------------------------- sequence counts (per APID, 14 bits)


def _counts(seq: list[int] | range, apid: int = 0x110) -> bytes:
    payload = bytes(packets.PACKET_TYPES[apid].payload_len)
    return b"".join(packets.pack_packet(apid, c, 700_000_000, 0, 1, payload) for c in seq)


def _interleave(*streams: tuple[int, list[int] | range], block: int = 256) -> bytes:
    """EXI-like: ``block`` packets of each APID in turn, each APID with its own counts."""
    parts, pos = [], [0] * len(streams)
    while any(p < len(seq) for p, (_, seq) in zip(pos, streams, strict=True)):
        for k, (apid, seq) in enumerate(streams):
            parts.append(_counts(list(seq)[pos[k] : pos[k] + block], apid))
            pos[k] += block
    return b"".join(parts)


def _sequence(data: bytes, chunk: int) -> packets.SequenceReport:
    f = _frame(data, chunk)
    assert f.problems == []
    return f.sequence.report()


def _one(report: packets.SequenceReport) -> dict[str, int]:
    [apid] = report.apids
    return {k: apid[k] for k in ("gaps", "missing", "repeats", "out_of_order")}


#: Chunkings that exercise the per-packet path (1 byte), runs split across chunks, and whole-file vector runs.
CHUNKS = [1, 530 * 3 + 7, 1 << 20]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_continuous_counts_are_clean(chunk: int) -> None:
    report = _sequence(_counts(range(40)), chunk)
    assert not report.anomalies and report.examples == []
    assert report.apids == [{"apid": 0x110, "packets": 40, "first_count": 0, "last_count": 39, "gaps": 0,
                             "missing": 0, "repeats": 0, "out_of_order": 0}]
    assert report.describe() == "sequence counts continuous (40 packets)"


@pytest.mark.parametrize("chunk", CHUNKS)
def test_wrap_around_from_16383_to_0_is_continuous(chunk: int) -> None:
    report = _sequence(_counts([c % 16384 for c in range(16370, 16400)]), chunk)
    assert not report.anomalies
    assert (report.apids[0]["first_count"], report.apids[0]["last_count"]) == (16370, 15)


def test_a_file_longer_than_the_counter_wraps_many_times() -> None:
    hk = packets.allowed_apids("emr", "hk")
    data = _counts(range(3 * 16384 + 10), 0x13F)
    f = packets.PacketFramer(hk)
    for i in range(0, len(data), 1 << 20):
        f(data[i : i + (1 << 20)])
    assert f.finish() == [] and not f.sequence.report().anomalies and f.packets == 3 * 16384 + 10


@pytest.mark.parametrize("chunk", CHUNKS)
def test_gap_counts_the_missing_packets_and_says_where(chunk: int) -> None:
    report = _sequence(_counts([0, 1, 2, 5, 6, 7, 20, 21]), chunk)
    assert _one(report) == {"gaps": 2, "missing": 2 + 12, "repeats": 0, "out_of_order": 0}
    assert report.examples == ["byte 1590: APID 0x110 gap: 2 packet(s) missing, counts 3-4",
                               "byte 3180: APID 0x110 gap: 12 packet(s) missing, counts 8-19"]
    assert report.describe().startswith("APID 0x110: 2 gap(s) (14 packet(s) missing) in 8 packets; first: byte 1590")


@pytest.mark.parametrize("chunk", CHUNKS)
def test_gap_across_the_wrap(chunk: int) -> None:
    report = _sequence(_counts([16381, 16382, 1, 2]), chunk)
    assert _one(report) == {"gaps": 1, "missing": 2, "repeats": 0, "out_of_order": 0}
    assert report.examples == ["byte 1060: APID 0x110 gap: 2 packet(s) missing, counts 16383-0"]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_repeats_adjacent_and_later(chunk: int) -> None:
    report = _sequence(_counts([0, 1, 1, 2, 3, 1, 4]), chunk)
    assert _one(report) == {"gaps": 0, "missing": 0, "repeats": 2, "out_of_order": 0}
    assert report.examples == ["byte 1060: APID 0x110 repeat: count 1 again (after 1)",
                               "byte 2650: APID 0x110 repeat: count 1 again (after 3)"]


@pytest.mark.parametrize("chunk", CHUNKS)
def test_out_of_order_fills_the_gap_it_left(chunk: int) -> None:
    report = _sequence(_counts([0, 1, 3, 2, 4, 7, 5, 6, 8]), chunk)
    assert _one(report) == {"gaps": 0, "missing": 0, "repeats": 0, "out_of_order": 3}
    assert report.examples[0] == "byte 1590: APID 0x110 out of order: count 2 after 3"


@pytest.mark.parametrize("chunk", CHUNKS)
def test_late_packet_before_the_first_count(chunk: int) -> None:
    report = _sequence(_counts([5, 6, 3, 7]), chunk)
    assert _one(report) == {"gaps": 1, "missing": 1, "repeats": 0, "out_of_order": 1}  # 4 never came
    assert "before the file's first count 5" in report.describe()


def test_a_late_packet_that_was_already_received_is_a_repeat_not_out_of_order() -> None:
    report = _sequence(_counts([0, 1, 3, 2, 2, 4]), 4096)
    assert _one(report) == {"gaps": 0, "missing": 0, "repeats": 1, "out_of_order": 1}


@pytest.mark.parametrize("chunk", CHUNKS)
def test_interleaved_apids_are_counted_separately(chunk: int) -> None:
    wrapping = [c % 16384 for c in range(16300, 16900)]
    clean = _interleave((0x113, range(600)), (0x114, range(100, 700)), (0x115, wrapping))
    report = _sequence(clean, chunk)
    assert not report.anomalies and [a["packets"] for a in report.apids] == [600, 600, 600]
    broken = list(range(600))
    broken[300], broken[301] = 301, 300
    bad = _interleave((0x113, range(600)), (0x114, broken[:450] + broken[452:]), (0x115, range(600)))
    report = _sequence(bad, chunk)
    by_apid = {a["apid"]: a for a in report.apids}
    assert by_apid[0x113]["out_of_order"] == by_apid[0x115]["out_of_order"] == 0
    assert (by_apid[0x114]["gaps"], by_apid[0x114]["missing"], by_apid[0x114]["out_of_order"]) == (1, 2, 1)
    assert report.describe().startswith("APID 0x114: 1 gap(s) (2 packet(s) missing), 1 out of order in 598 packets")


def test_each_anomaly_found_whatever_the_chunking() -> None:
    seq = list(range(5000))
    seq[1000:1003] = []  # gap
    seq.insert(2000, seq[1999])  # repeat
    seq[3000], seq[3001] = seq[3001], seq[3000]  # out of order
    data = _counts(seq)
    results = {str(_sequence(data, chunk)) for chunk in (1, 97, 530, 4096, 65536, 1 << 20)}
    assert len(results) == 1
    assert _one(_sequence(data, 65536)) == {"gaps": 1, "missing": 3, "repeats": 1, "out_of_order": 1}


def test_examples_are_capped_but_counts_are_complete() -> None:
    report = _sequence(_counts(range(0, 400, 2)), 4096)  # every other packet missing
    assert _one(report) == {"gaps": 199, "missing": 199, "repeats": 0, "out_of_order": 0}
    assert len(report.examples) == packets.MAX_EXAMPLES


def test_open_gaps_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packets, "MAX_OPEN_GAPS", 3)
    report = _sequence(_counts([0, 2, 4, 6, 8, 10, 1]), 4096)  # count 1 comes after its gap was forgotten
    assert _one(report) == {"gaps": 5, "missing": 5, "repeats": 1, "out_of_order": 0}


def test_report_to_dict_totals_over_apids() -> None:
    data = _counts([0, 2], 0x113) + _counts([0, 0], 0x114)
    found = _sequence(data, 4096).to_dict()
    assert {k: found[k] for k in ("packets", "gaps", "missing", "repeats", "out_of_order")} == {
        "packets": 4, "gaps": 1, "missing": 1, "repeats": 1, "out_of_order": 0}
    assert [a["apid"] for a in found["apids"]] == [0x113, 0x114]
