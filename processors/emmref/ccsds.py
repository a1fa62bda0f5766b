"""The ITF's own L0/HK decoder: CCSDS packet definitions for ccsdspy and a strict framing walk.

The layout is the SDC's (``docs/l0_format.md``); the constants are duplicated
here on purpose, as an instrument team's decoder would own them.

A file is first walked packet by packet (version bits, allowed APIDs, fixed
lengths, no truncation): ccsdspy alone would only warn on a truncated file.
The packets of each APID are then decoded with a ``ccsdspy.FixedLength``
definition.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

# ccsdspy creates (and insists on writing to) a config directory on import. Use a per-user
# directory under the temp dir: containers run as an unprivileged user with no home, and on a
# shared host another user's directory would not be writable. It also keeps decoding
# independent of any personal ccsdspy configuration.
os.environ.setdefault("ccsdspy_CONFIGDIR", os.path.join(tempfile.gettempdir(), f"ccsdspy-{os.getuid()}"))
import ccsdspy
from ccsdspy import PacketArray, PacketField

ccsdspy.log.setLevel(logging.WARNING)

PRIMARY_HEADER_LEN = 6
SECONDARY_HEADER_LEN = 8
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # coarse time: seconds since, no leap seconds
FINE_UNITS = 65536

EXI_FILTER_APIDS = {"f220": 0x110, "f260": 0x111, "f320": 0x112, "f437": 0x113, "f546": 0x114, "f635": 0x115}
EXI_APID_FILTERS = {apid: filt for filt, apid in EXI_FILTER_APIDS.items()}
EXI_IMAGE_SIZE = 256
EMU_APID, EMU_SPECTRAL_BINS, EMU_SPATIAL_ROWS = 0x120, 512, 32
EMR_APID, EMR_SPECTRAL_BINS = 0x130, 256
HK_APIDS = {"exi": 0x11F, "emu": 0x12F, "emr": 0x13F}
HK_CHANNELS = 8

SCIENCE_APIDS = {"exi": tuple(EXI_FILTER_APIDS.values()), "emu": (EMU_APID,), "emr": (EMR_APID,)}


class DecodeError(ValueError):
    """The file's bytes are not the packets its name promises."""


def _secondary_header() -> list[PacketField]:
    return [
        PacketField(name="COARSE", data_type="uint", bit_length=32),
        PacketField(name="FINE", data_type="uint", bit_length=16),
        PacketField(name="OBS_ID", data_type="uint", bit_length=16),
    ]


def definition(apid: int) -> ccsdspy.FixedLength:
    """The ccsdspy packet definition (secondary header + payload) of one APID."""
    if apid in EXI_APID_FILTERS:
        payload = [
            PacketField(name="ROW", data_type="uint", bit_length=16),
            PacketField(name="IMAGE_ID", data_type="uint", bit_length=16),
            PacketArray(name="PIXELS", data_type="uint", bit_length=16, array_shape=EXI_IMAGE_SIZE),
        ]
    elif apid == EMU_APID:
        payload = [
            PacketField(name="INTEGRATION", data_type="uint", bit_length=16),
            PacketField(name="SPATIAL_ROW", data_type="uint", bit_length=16),
            PacketArray(name="COUNTS", data_type="uint", bit_length=16, array_shape=EMU_SPECTRAL_BINS),
        ]
    elif apid == EMR_APID:
        payload = [
            PacketField(name="SCAN", data_type="uint", bit_length=16),
            PacketField(name="DETECTOR", data_type="uint", bit_length=16),
            PacketArray(name="DN", data_type="uint", bit_length=16, array_shape=EMR_SPECTRAL_BINS),
        ]
    elif apid in HK_APIDS.values():
        payload = [PacketArray(name="CHANNELS", data_type="int", bit_length=16, array_shape=HK_CHANNELS)]
    else:
        raise KeyError(f"no packet definition for APID {apid:#05x}")
    return ccsdspy.FixedLength(_secondary_header() + payload, apid=apid)


def packet_length(apid: int) -> int:
    """Whole packet length in bytes."""
    payload = {EMU_APID: 4 + 2 * EMU_SPECTRAL_BINS, EMR_APID: 4 + 2 * EMR_SPECTRAL_BINS}.get(apid)
    if payload is None:
        payload = 4 + 2 * EXI_IMAGE_SIZE if apid in EXI_APID_FILTERS else 2 * HK_CHANNELS
    return PRIMARY_HEADER_LEN + SECONDARY_HEADER_LEN + payload


def allowed_apids(instrument: str, level: str) -> tuple[int, ...]:
    """APIDs a file of this instrument and level (``l0`` or ``hk``) may hold."""
    return (HK_APIDS[instrument],) if level == "hk" else SCIENCE_APIDS[instrument]


def split(data: bytes, allowed: tuple[int, ...], file_name: str) -> dict[int, bytes]:
    """Walk the packets; return each APID's packets concatenated. Raises DecodeError on bad framing."""
    streams: dict[int, list[bytes]] = {}
    offset, size = 0, len(data)
    if size == 0:
        raise DecodeError(f"{file_name}: empty file, no packets")
    while offset < size:
        if size - offset < PRIMARY_HEADER_LEN:
            raise DecodeError(f"{file_name}: truncated primary header at byte {offset}")
        w0, _w1, length = struct.unpack_from(">HHH", data, offset)
        apid = w0 & 0x07FF
        if w0 & 0xF800 != 0x0800:
            raise DecodeError(f"{file_name}: byte {offset} does not start a telemetry packet with a "
                              "secondary header")
        if apid not in allowed:
            raise DecodeError(f"{file_name}: byte {offset}: APID {apid:#05x} does not belong in this file")
        total = PRIMARY_HEADER_LEN + length + 1
        if total != packet_length(apid):
            raise DecodeError(f"{file_name}: byte {offset}: APID {apid:#05x} packet declares {total} bytes, "
                              f"its layout has {packet_length(apid)}")
        if offset + total > size:
            raise DecodeError(f"{file_name}: truncated: the packet at byte {offset} needs {total} bytes, "
                              f"{size - offset} remain")
        streams.setdefault(apid, []).append(data[offset : offset + total])
        offset += total
    return {apid: b"".join(chunks) for apid, chunks in streams.items()}


@dataclass(frozen=True)
class Packets:
    """Decoded packets of one APID: ccsdspy field arrays plus TIME (seconds since 2000, float64)."""

    apid: int
    fields: dict[str, np.ndarray]

    @property
    def time(self) -> np.ndarray:
        return self.fields["COARSE"].astype(np.float64) + self.fields["FINE"] / FINE_UNITS

    def __len__(self) -> int:
        return len(self.fields["COARSE"])


def read(path: Path, instrument: str, level: str, file_name: str | None = None) -> dict[int, Packets]:
    """Decode an L0 or HK file into per-APID packet arrays. Raises DecodeError."""
    label = file_name or path.name
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DecodeError(f"{label}: unreadable: {exc}") from None
    result = {}
    for apid, stream in split(data, allowed_apids(instrument, level), label).items():
        try:
            fields = definition(apid).load(io.BytesIO(stream), include_primary_header=True)
        except Exception as exc:  # ccsdspy raises assorted errors on content it cannot decode
            raise DecodeError(f"{label}: APID {apid:#05x} packets do not decode: {exc}") from None
        result[apid] = Packets(apid, {k: np.asarray(v) for k, v in fields.items()})
    return result


def to_datetime(seconds: float) -> datetime:
    """UTC datetime of a packet time (seconds since 2000-01-01T00:00:00Z)."""
    return EPOCH + timedelta(seconds=float(seconds))


def iso(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. ``2021-06-17T11:02:39.000``."""
    return to_datetime(seconds).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]


def start_of(seconds: float) -> datetime:
    """Observation start for a product name: the packet time truncated to the second."""
    return to_datetime(np.floor(seconds))
