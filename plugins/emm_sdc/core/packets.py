"""SDC-defined Level 0 / housekeeping content: CCSDS space packets.

Every L0 (``l0``) and housekeeping (``hk``) file is a plain concatenation of
CCSDS space packets (CCSDS 133.0-B-2), each with a secondary header. The
layout is documented in ``docs/l0_format.md``; this module holds the
constants and a streaming framing check that shares the checksum's single
pass over the bytes and finds truncated, padded or foreign content, and
checks each APID's sequence counts for gaps, repeats and out-of-order packets.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

PRIMARY_HEADER_LEN: Final = 6
SECONDARY_HEADER_LEN: Final = 8  # coarse u32 seconds since 2000-01-01T00:00:00Z, fine u16, obs id u16
SECONDARY_HEADER_FMT: Final = ">IHH"
#: Epoch of the secondary header's coarse time (POSIX-style, no leap seconds).
EPOCH_UNIX: Final = 946684800
#: The 14-bit packet sequence count wraps to 0 after 16383.
SEQ_MODULO: Final = 1 << 14
_SEQ_HALF: Final = SEQ_MODULO // 2


@dataclass(frozen=True)
class PacketType:
    """One APID's fixed layout."""

    apid: int
    instrument: str
    kind: str  # "science" or "hk"
    payload_len: int
    description: str

    @property
    def packet_len(self) -> int:
        return PRIMARY_HEADER_LEN + SECONDARY_HEADER_LEN + self.payload_len


EXI_FILTER_APIDS: Final = {
    "f220": 0x110, "f260": 0x111, "f320": 0x112, "f437": 0x113, "f546": 0x114, "f635": 0x115,
}
EXI_IMAGE_SIZE: Final = 256  # pixels per row and rows per image
EMU_SPECTRAL_BINS: Final = 512
EMU_SPATIAL_ROWS: Final = 32
EMR_SPECTRAL_BINS: Final = 256
HK_CHANNELS: Final = 8

_TYPES: list[PacketType] = [
    *(
        PacketType(apid, "exi", "science", 4 + 2 * EXI_IMAGE_SIZE,
                   f"EXI {filt} image row: row u16, image id u16, {EXI_IMAGE_SIZE} x u16 DN")
        for filt, apid in EXI_FILTER_APIDS.items()
    ),
    PacketType(0x120, "emu", "science", 4 + 2 * EMU_SPECTRAL_BINS,
               f"EMUS spectrum: integration u16, spatial row u16, {EMU_SPECTRAL_BINS} x u16 counts"),
    PacketType(0x130, "emr", "science", 4 + 2 * EMR_SPECTRAL_BINS,
               f"EMIRS spectrum: scan u16, detector u16, {EMR_SPECTRAL_BINS} x u16 DN"),
    *(
        PacketType(apid, inst, "hk", 2 * HK_CHANNELS,
                   f"{inst} housekeeping: {HK_CHANNELS} x i16 (temperatures cK, voltages mV, currents mA)")
        for inst, apid in (("exi", 0x11F), ("emu", 0x12F), ("emr", 0x13F))
    ),
]
PACKET_TYPES: Final[dict[int, PacketType]] = {t.apid: t for t in _TYPES}


def allowed_apids(instrument: str, level: str) -> dict[int, int]:
    """APID -> packet length accepted in a file of this instrument and level."""
    kind = "hk" if level == "hk" else "science"
    return {t.apid: t.packet_len for t in _TYPES if t.instrument == instrument and t.kind == kind}


def pack_packet(apid: int, seq: int, coarse: int, fine: int, obs_id: int, payload: bytes) -> bytes:
    """Build one packet (used by the synthetic MOC generator and tests)."""
    ptype = PACKET_TYPES[apid]
    if len(payload) != ptype.payload_len:
        raise ValueError(f"APID {apid:#x} payload is {ptype.payload_len} bytes, got {len(payload)}")
    data_len = SECONDARY_HEADER_LEN + len(payload) - 1
    header = struct.pack(">HHH", 0x0800 | apid, 0xC000 | (seq & 0x3FFF), data_len)
    return header + struct.pack(SECONDARY_HEADER_FMT, coarse, fine, obs_id) + payload


#: Open gaps remembered per APID (bounded memory for any file).
MAX_OPEN_GAPS: Final = 10_000
#: Anomalies described by position in a file's report (the counts are always complete).
MAX_EXAMPLES: Final = 5


@dataclass
class ApidSequence:
    """Sequence-count continuity of one APID in one file.

    Counts are *unwrapped* (they go on past 16383 instead of wrapping to 0):
    each packet's count is taken as the nearest one, forward or back, to its
    predecessor's (a step of 8192 or more is read as a step back). The
    packets expected are every count from the lowest to the highest seen;
    one never seen is *missing* (a *gap* is a run of them), one seen twice is
    a *repeat*, and one that comes after a higher count of its APID is *out
    of order* (it fills a gap it left). Open gaps are kept as sorted ranges,
    at most :data:`MAX_OPEN_GAPS`; older ones stay counted as gaps, and a
    packet filling one that late counts as a repeat.
    """

    apid: int
    packets: int = 0
    first_count: int = 0
    last_count: int = 0
    repeats: int = 0
    out_of_order: int = 0
    #: Repeats and out-of-order packets as ``(byte offset, description)``, the first MAX_EXAMPLES.
    examples: list[tuple[int, str]] = field(default_factory=list)
    _prev: int = 0  # unwrapped count of the previous packet
    _top: int = 0  # highest unwrapped count seen
    _low: int = 0  # lowest unwrapped count seen
    _open: list[list[int]] = field(default_factory=list)  # missing [lo, hi, byte found], sorted, disjoint
    _closed_gaps: int = 0
    _closed_missing: int = 0

    @property
    def gaps(self) -> int:
        return self._closed_gaps + len(self._open)

    @property
    def missing(self) -> int:
        return self._closed_missing + sum(hi - lo + 1 for lo, hi, _ in self._open)

    def _start(self, count: int) -> None:
        """The first packet: as if its predecessor had been the count before it."""
        self.first_count = self._low = count
        self._prev = self._top = count - 1

    def observe(self, count: int, where: int) -> None:
        """One packet's count (0-16383) at byte offset ``where``."""
        if not self.packets:
            self._start(count)
        step = (count - self._prev + _SEQ_HALF) % SEQ_MODULO - _SEQ_HALF
        u = self._prev + step
        if u != self._top + 1:
            self._anomaly(u, self._top, where)
        self._top = max(self._top, u)
        self._prev = u
        self.packets += 1
        self.last_count = count

    def observe_run(self, counts: np.ndarray, where: np.ndarray | int, plen: int) -> None:
        """Counts of consecutive packets of this APID (vectorised; anomalies one by one).

        ``where``: the byte offset of each packet, or of the first when they are back to back (``plen`` apart).
        """
        if not len(counts):
            return
        if not self.packets:
            self._start(int(counts[0]))
        expected = (self._prev + 1 + np.arange(len(counts), dtype=np.int64)) % SEQ_MODULO
        if self._prev == self._top and np.array_equal(counts, expected):
            self._top = self._prev = self._prev + len(counts)  # the usual case: each follows the one before
        else:
            c = counts.astype(np.int64)
            step = (np.diff(c, prepend=self._prev % SEQ_MODULO) + _SEQ_HALF) % SEQ_MODULO - _SEQ_HALF
            u = self._prev + np.cumsum(step)
            top_before = np.maximum.accumulate(np.concatenate(([self._top], u)))[:-1]
            for k in np.flatnonzero(u != top_before + 1):
                at = int(where[k]) if isinstance(where, np.ndarray) else where + int(k) * plen
                self._anomaly(int(u[k]), int(top_before[k]), at)
            self._top = max(self._top, int(u.max()))
            self._prev = int(u[-1])
        self.packets += len(counts)
        self.last_count = int(counts[-1])

    def _anomaly(self, u: int, top: int, where: int) -> None:
        if u > top + 1:  # a jump forward: a gap opens (out-of-order packets may fill it later)
            self._open.append([top + 1, u - 1, where])
            if len(self._open) > MAX_OPEN_GAPS:
                lo, hi, _ = self._open.pop(0)
                self._closed_gaps += 1
                self._closed_missing += hi - lo + 1
            return
        count, after = u % SEQ_MODULO, top % SEQ_MODULO
        if u < self._low:
            if u + 1 < self._low:
                self._open.insert(0, [u + 1, self._low - 1, where])
            self._low = u
            self.out_of_order += 1
            what = f"out of order: count {count} after {after}, before the file's first count {self.first_count}"
        else:
            i = bisect.bisect_right(self._open, u, key=lambda r: r[0]) - 1
            if i >= 0 and self._open[i][1] >= u:
                lo, hi, found = self._open[i]
                self._open[i : i + 1] = [r for r in ([lo, u - 1, found], [u + 1, hi, found]) if r[0] <= r[1]]
                self.out_of_order += 1
                what = f"out of order: count {count} after {after}"
            else:
                self.repeats += 1
                what = f"repeat: count {count} again (after {after})"
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append((where, f"APID {self.apid:#05x} {what}"))

    def gap_examples(self) -> list[tuple[int, str]]:
        """The first open gaps as ``(byte offset of the packet after it, description)``."""
        return [(where, f"APID {self.apid:#05x} gap: {hi - lo + 1} packet(s) missing, counts "
                        + (f"{lo % SEQ_MODULO}" if lo == hi else f"{lo % SEQ_MODULO}-{hi % SEQ_MODULO}"))
                for lo, hi, where in self._open[:MAX_EXAMPLES]]

    def to_dict(self) -> dict[str, int]:
        return {"apid": self.apid, "packets": self.packets, "first_count": self.first_count,
                "last_count": self.last_count, "gaps": self.gaps, "missing": self.missing,
                "repeats": self.repeats, "out_of_order": self.out_of_order}


@dataclass
class SequenceChecker:
    """Per-APID sequence-count continuity over a file's packets, fed by :class:`PacketFramer`."""

    apids: dict[int, ApidSequence] = field(default_factory=dict)

    def _of(self, apid: int) -> ApidSequence:
        seq = self.apids.get(apid)
        if seq is None:
            seq = self.apids[apid] = ApidSequence(apid)
        return seq

    def observe(self, apid: int, count: int, where: int) -> None:
        self._of(apid).observe(count, where)

    def observe_block(self, apids: np.ndarray, counts: np.ndarray, start: int, plen: int,
                      candidates: list[int]) -> None:
        """Back-to-back packets of one length starting at byte ``start``, each of one of the ``candidates``
        APIDs; the APIDs may interleave."""
        first = int(apids[0])
        if first == int(apids[-1]) and (apids == first).all():
            self._of(first).observe_run(counts, start, plen)
            return
        for apid in candidates:
            rows = np.flatnonzero(apids == apid)
            if len(rows):
                self._of(apid).observe_run(counts[rows], start + rows * plen, plen)

    def report(self) -> SequenceReport:
        seqs = [s for _, s in sorted(self.apids.items())]
        found = sorted(e for s in seqs for e in [*s.examples, *s.gap_examples()])[:MAX_EXAMPLES]
        return SequenceReport([s.to_dict() for s in seqs], [f"byte {at}: {what}" for at, what in found])


@dataclass(frozen=True)
class SequenceReport:
    """A file's sequence-count findings: one entry per APID, totals, and the first anomalies by position."""

    apids: list[dict[str, int]]
    examples: list[str]

    def total(self, key: str) -> int:
        return sum(a[key] for a in self.apids)

    @property
    def anomalies(self) -> bool:
        return any(a["gaps"] or a["repeats"] or a["out_of_order"] for a in self.apids)

    def describe(self) -> str:
        """One line: what is wrong per APID, then where the first anomalies are."""
        if not self.anomalies:
            return f"sequence counts continuous ({self.total('packets')} packets)"
        parts = []
        for a in self.apids:
            found = [f"{a['gaps']} gap(s) ({a['missing']} packet(s) missing)" if a["gaps"] else "",
                     f"{a['repeats']} repeat(s)" if a["repeats"] else "",
                     f"{a['out_of_order']} out of order" if a["out_of_order"] else ""]
            if any(found):
                parts.append(f"APID {a['apid']:#05x}: {', '.join(f for f in found if f)} in {a['packets']} packets")
        return "; ".join(parts) + "; first: " + "; ".join(self.examples)

    def to_dict(self) -> dict[str, Any]:
        return {"packets": self.total("packets"), "gaps": self.total("gaps"), "missing": self.total("missing"),
                "repeats": self.total("repeats"), "out_of_order": self.total("out_of_order"),
                "apids": self.apids, "examples": self.examples}


@dataclass
class PacketFramer:
    """Walks packet boundaries over a byte stream fed in arbitrary chunks.

    Use as a :class:`~emm_sdc.core.checksums.StreamDigest` observer, then call
    :meth:`finish` for the list of problems (empty when the framing is sound)
    and ``sequence.report()`` for the sequence counts of the packets framed.
    Runs of equal-length packets are checked vectorised, so the pass stays
    close to the speed of the MD5 it rides beside.
    """

    allowed: dict[int, int]
    packets: int = 0
    offset: int = 0
    problems: list[str] = field(default_factory=list)
    sequence: SequenceChecker = field(default_factory=SequenceChecker)
    _partial: bytes = b""
    _skip: int = 0
    _last_len: int = 0

    def __call__(self, chunk: bytes) -> None:
        self.feed(chunk)

    def feed(self, chunk: bytes) -> None:
        if self.problems:
            self.offset += len(chunk)
            return
        n = len(chunk)
        i = 0
        if self._skip:
            i = min(self._skip, n)
            self._skip -= i
        while i < n:
            if self._partial:
                need = PRIMARY_HEADER_LEN - len(self._partial)
                self._partial += chunk[i : i + need]
                i += need
                if len(self._partial) < PRIMARY_HEADER_LEN:
                    break
                header, self._partial = self._partial, b""
                start = self.offset + i - PRIMARY_HEADER_LEN
            else:
                if self._last_len:
                    i = self._fast_run(chunk, i)
                    if i >= n:
                        break
                if n - i < PRIMARY_HEADER_LEN:
                    self._partial = bytes(chunk[i:])
                    break
                header = chunk[i : i + PRIMARY_HEADER_LEN]
                start = self.offset + i
                i += PRIMARY_HEADER_LEN
            body = self._check_header(header, start)
            if body < 0:
                break
            take = min(body, n - i)
            i += take
            self._skip = body - take
        self.offset += n

    def _check_header(self, header: bytes, start: int) -> int:
        """Validate one primary header; return body length, or -1 after recording a problem."""
        w0, w1, length = struct.unpack(">HHH", header)
        apid = w0 & 0x07FF
        if w0 & 0xF800 != 0x0800:
            self.problems.append(
                f"byte {start}: not a CCSDS telemetry packet with secondary header "
                f"(version/type/flag bits {w0 >> 11:#07b}, expected 0b00001)"
            )
            return -1
        if apid not in self.allowed:
            self.problems.append(
                f"byte {start}: APID {apid:#05x} does not belong in this file "
                f"(allowed: {', '.join(f'{a:#05x}' for a in sorted(self.allowed))})"
            )
            return -1
        expected = self.allowed[apid]
        if length + 1 + PRIMARY_HEADER_LEN != expected:
            self.problems.append(
                f"byte {start}: APID {apid:#05x} packet declares {length + 1 + PRIMARY_HEADER_LEN} bytes, "
                f"its layout has {expected}"
            )
            return -1
        self.packets += 1
        self.sequence.observe(apid, w1 & 0x3FFF, start)
        self._last_len = expected
        return length + 1

    def _fast_run(self, chunk: bytes, i: int) -> int:
        """Accept whole packets of the last seen length in one vectorised check."""
        plen = self._last_len
        count = (len(chunk) - i) // plen
        if count < 2:
            return i
        block = np.frombuffer(chunk, dtype=np.uint8, count=count * plen, offset=i).reshape(count, plen)
        w0 = block[:, 0].astype(np.uint16) << 8 | block[:, 1]
        w2 = block[:, 4].astype(np.uint16) << 8 | block[:, 5]
        apids = w0 & 0x07FF
        candidates = [a for a, ln in self.allowed.items() if ln == plen]
        ok = ((w0 & 0xF800) == 0x0800) & (w2 == plen - PRIMARY_HEADER_LEN - 1)
        ok &= np.isin(apids, candidates)
        good = count if ok.all() else int(np.argmin(ok))
        if good:
            counts = (block[:good, 2].astype(np.uint16) << 8 | block[:good, 3]) & 0x3FFF
            self.sequence.observe_block(apids[:good], counts, self.offset + i, plen, candidates)
        self.packets += good
        return i + good * plen

    def finish(self) -> list[str]:
        """Problems found, including a truncated last packet or an empty stream."""
        if not self.problems:
            if self._partial or self._skip:
                missing = self._skip or (PRIMARY_HEADER_LEN - len(self._partial))
                whole = self.packets - (1 if self._skip else 0)
                self.problems.append(
                    f"truncated: the last packet ends {missing} byte(s) past the end of the file "
                    f"({self.offset} bytes, {whole} whole packets)"
                )
            elif self.packets == 0:
                self.problems.append("no packets: the file holds no CCSDS packet")
        return self.problems
