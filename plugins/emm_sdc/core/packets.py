"""SDC-defined Level 0 / housekeeping content: CCSDS space packets.

Every L0 (``l0``) and housekeeping (``hk``) file is a plain concatenation of
CCSDS space packets (CCSDS 133.0-B-2), each with a secondary header. The
layout is documented in ``docs/l0_format.md``; this module holds the
constants and a streaming framing check that shares the checksum's single
pass over the bytes and finds truncated, padded or foreign content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Final

import numpy as np

PRIMARY_HEADER_LEN: Final = 6
SECONDARY_HEADER_LEN: Final = 8  # coarse u32 seconds since 2000-01-01T00:00:00Z, fine u16, obs id u16
SECONDARY_HEADER_FMT: Final = ">IHH"
#: Epoch of the secondary header's coarse time (POSIX-style, no leap seconds).
EPOCH_UNIX: Final = 946684800


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


@dataclass
class PacketFramer:
    """Walks packet boundaries over a byte stream fed in arbitrary chunks.

    Use as a :class:`~emm_sdc.core.checksums.StreamDigest` observer, then call
    :meth:`finish` for the list of problems (empty when the framing is sound).
    Runs of equal-length packets are checked vectorised, so the pass stays
    close to the speed of the MD5 it rides beside.
    """

    allowed: dict[int, int]
    packets: int = 0
    offset: int = 0
    problems: list[str] = field(default_factory=list)
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
        w0, _w1, length = struct.unpack(">HHH", header)
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
        ok = ((w0 & 0xF800) == 0x0800) & (w2 == plen - PRIMARY_HEADER_LEN - 1)
        ok &= np.isin(apids, [a for a, ln in self.allowed.items() if ln == plen])
        good = count if ok.all() else int(np.argmin(ok))
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
