"""Synthetic MOC deliveries: deterministic L0 science and housekeeping files, and anomalies.

Plain Python (no Airflow). Used by tests, demos and the reference processors' tests to
stand in for what the Mission Operations Center delivers into the SDC inbox:

* :func:`generate` writes, per orbit and instrument, L0 science files and one
  housekeeping file, each a concatenation of CCSDS packets (``docs/l0_format.md``)
  with an ``md5sum``-format sidecar ``<file>.md5``.
* The anomaly helpers (:func:`corrupt`, :func:`misnamed`, :func:`truncated`,
  :func:`zero_byte`, :func:`missing_sidecar`, :func:`conflicting`) each write one
  bad delivery derived from a valid one, broken so that exactly one ingest rule
  catches it.

The instrument models (a lit Mars disk for EXI, FUV airglow lines for EMUS, a
thermal-IR spectrum with the CO2 15 um band for EMIRS) use the nominal
calibration constants below; the reference ITF processors (``processors/``)
carry their own copy of them, as an instrument team would.

Everything is a pure function of ``seed``, orbit and instrument: the same call
writes byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import struct
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import numpy as np

from emm_sdc.core import checksums, naming, packets

# --------------------------------------------------------------------------- orbit model

#: Start of orbit 0000 (synthetic science-phase numbering).
ORBIT_EPOCH: Final = datetime(2021, 5, 23, tzinfo=UTC)
#: Orbital period of the science orbit (~20,000 x 43,000 km, ~55 h).
ORBIT_PERIOD: Final = timedelta(hours=55)


def orbit_start(n: int) -> datetime:
    """UTC start of orbit ``n``."""
    if n < 0:
        raise ValueError(f"orbit number must be >= 0, got {n}")
    return ORBIT_EPOCH + n * ORBIT_PERIOD


def orbit_of(t: datetime) -> int:
    """Orbit number holding UTC time ``t``."""
    return int((t - ORBIT_EPOCH) // ORBIT_PERIOD)


# --------------------------------------------------------------------------- instrument models
# Nominal calibration shared (by copy) with the reference processors.

EXI_SEQUENCES: Final = {"xos1": ("f437", "f546", "f635"), "xos2": ("f220", "f260", "f320")}
EXI_DARK_DN: Final = 100.0
#: DN per unit I/F at the centre of the flat field, per filter.
EXI_SCALE_DN: Final = {
    "f220": 40000.0, "f260": 30000.0, "f320": 25000.0, "f437": 15000.0, "f546": 9000.0, "f635": 7000.0,
}
#: Mean disk reflectance (I/F) per filter: Mars is dark in the UV and red in the visible.
EXI_REFLECTANCE: Final = {
    "f220": 0.05, "f260": 0.06, "f320": 0.08, "f437": 0.12, "f546": 0.22, "f635": 0.32,
}
#: Contrast of surface albedo features and brightening of the polar cap, per filter.
EXI_CONTRAST: Final = {"f220": 0.15, "f260": 0.2, "f320": 0.3, "f437": 0.5, "f546": 0.8, "f635": 1.0}
EXI_CAP_BOOST: Final = {"f220": 1.2, "f260": 1.2, "f320": 1.2, "f437": 1.2, "f546": 0.8, "f635": 0.6}
EXI_VIGNETTING: Final = 0.15  # flat = 1 - 0.15 * (r / 128 px)^2
EXI_IMAGE_CADENCE_S: Final = 20.0
EXI_ROW_TIME_S: Final = 0.02

EMU_MODE: Final = "os2"
EMU_INTEGRATIONS: Final = 20
EMU_INTEGRATION_S: Final = 10.0
EMU_CADENCE_S: Final = 60.0
EMU_ROW_TIME_S: Final = 0.05
EMU_DARK_COUNTS: Final = 2.0
EMU_WAVELENGTH_RANGE_NM: Final = (100.0, 170.0)
EMU_LINE_FWHM_NM: Final = 1.5
#: (centre nm, nominal brightness in rayleighs) of the modelled FUV emissions.
EMU_LINES: Final = ((121.567, 5000.0), (130.4, 800.0), (135.6, 200.0))

EMR_FILES_PER_ORBIT: Final = 2
EMR_SCANS: Final = 20
EMR_DETECTORS: Final = 3
EMR_SCAN_CADENCE_S: Final = 10.0
EMR_WAVENUMBER_RANGE: Final = (200.0, 1600.0)  # cm^-1
EMR_DN_OFFSET: Final = 2000.0
PLANCK_C1: Final = 1.191042e-8  # W m^-2 sr^-1 (cm^-1)^-4
PLANCK_C2: Final = 1.4387769  # cm K

HK_CADENCE_S: Final = 300.0


def emu_wavelengths() -> np.ndarray:
    """Centre wavelength (nm) of each EMUS spectral bin."""
    lo, hi = EMU_WAVELENGTH_RANGE_NM
    return lo + (np.arange(packets.EMU_SPECTRAL_BINS) + 0.5) * (hi - lo) / packets.EMU_SPECTRAL_BINS


def emu_sensitivity(wavelength_nm: np.ndarray) -> np.ndarray:
    """EMUS nominal sensitivity, counts s^-1 per (R/nm)."""
    return 0.02 * (0.3 + np.exp(-0.5 * ((wavelength_nm - 128.0) / 18.0) ** 2))


def emr_wavenumbers() -> np.ndarray:
    """Wavenumber (cm^-1) of each EMIRS spectral bin."""
    return np.linspace(*EMR_WAVENUMBER_RANGE, packets.EMR_SPECTRAL_BINS)


def emr_gain(wavenumber: np.ndarray) -> np.ndarray:
    """EMIRS nominal responsivity, DN per W m^-2 sr^-1 (cm^-1)^-1."""
    return 2.0e5 * (0.55 + 0.45 * np.exp(-(((wavenumber - 700.0) / 500.0) ** 2)))


def planck(wavenumber: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    """Planck radiance, W m^-2 sr^-1 (cm^-1)^-1."""
    return PLANCK_C1 * wavenumber**3 / np.expm1(PLANCK_C2 * wavenumber / temperature)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Delivered:
    """One file written as if delivered by the MOC.

    ``md5`` and ``size`` describe the bytes on disk; the checksum the sidecar
    declares is :meth:`declared_md5` (they differ for ``kind == "corrupt"``).
    ``kind`` is ``"valid"`` or the anomaly's name.
    """

    file_name: str
    path: Path
    sidecar_path: Path | None
    md5: str
    size: int
    instrument: str
    level: str
    kind: str = "valid"

    def declared_md5(self) -> str | None:
        """The MD5 the sidecar declares, or None without a sidecar."""
        if self.sidecar_path is None:
            return None
        return checksums.parse_sidecar(self.sidecar_path.read_text(), self.file_name)


# --------------------------------------------------------------------------- packet helpers


def _seconds(t: datetime) -> float:
    """Seconds since 2000-01-01T00:00:00Z (the secondary header's epoch, no leap seconds)."""
    return t.timestamp() - packets.EPOCH_UNIX


def _coarse_fine(seconds: float) -> tuple[int, int]:
    coarse = int(np.floor(seconds))
    fine = min(round((seconds - coarse) * 65536), 65535)
    return coarse, fine


def _pack_stream(records: Iterable[tuple[int, float, int, bytes]]) -> bytes:
    """Pack ``(apid, seconds since 2000, obs id, payload)`` records, counting sequences per APID."""
    seq: dict[int, int] = {}
    out = bytearray()
    for apid, seconds, obs_id, payload in records:
        count = seq.get(apid, 0)
        seq[apid] = count + 1
        coarse, fine = _coarse_fine(seconds)
        out += packets.pack_packet(apid, count, coarse, fine, obs_id & 0xFFFF, payload)
    return bytes(out)


def _u16(values: np.ndarray) -> bytes:
    return np.clip(np.rint(values), 0, 65535).astype(">u2").tobytes()


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _packet_offsets(data: bytes) -> list[int]:
    """Byte offsets of every whole packet (the data must frame cleanly up to its end)."""
    offsets, i = [], 0
    while i + packets.PRIMARY_HEADER_LEN <= len(data):
        (length,) = struct.unpack_from(">H", data, i + 4)
        end = i + packets.PRIMARY_HEADER_LEN + length + 1
        if end > len(data):
            break
        offsets.append(i)
        i = end
    return offsets


def _first_time(data: bytes) -> datetime:
    (coarse,) = struct.unpack_from(">I", data, packets.PRIMARY_HEADER_LEN)
    return datetime.fromtimestamp(coarse + packets.EPOCH_UNIX, tz=UTC)


# --------------------------------------------------------------------------- instrument content


def _exi_sequence(rng: np.random.Generator, start: datetime, mode: str, obs_id: int) -> bytes:
    """One EXI imaging sequence: one 256x256 image per filter, one packet per row."""
    size = packets.EXI_IMAGE_SIZE
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    flat = 1.0 - EXI_VIGNETTING * ((xx - size / 2) ** 2 + (yy - size / 2) ** 2) / (size / 2) ** 2
    cx, cy = size / 2 + rng.uniform(-12, 12, 2)
    radius = rng.uniform(70, 100)
    phase, az = np.radians(rng.uniform(20, 60)), rng.uniform(0, 2 * np.pi)
    sun = np.array([np.sin(phase) * np.cos(az), np.sin(phase) * np.sin(az), np.cos(phase)])
    lon0, p1, p2, p3 = rng.uniform(0, 2 * np.pi, 4)
    start_s = _seconds(start)
    records: list[tuple[int, float, int, bytes]] = []
    for k, filt in enumerate(EXI_SEQUENCES[mode]):
        jx, jy = rng.normal(0, 0.7, 2)  # pointing jitter between filters
        x, y = (xx - cx - jx) / radius, (cy + jy - yy) / radius
        rho2 = x * x + y * y
        on = rho2 < 1.0
        z = np.sqrt(np.clip(1.0 - rho2, 0.0, None))
        mu0 = np.clip(x * sun[0] + y * sun[1] + z * sun[2], 0.0, None)
        mu = np.clip(z, 0.05, None)
        lat, lon = np.arcsin(np.clip(y, -1, 1)), np.arctan2(x, z) + lon0
        # dark albedo regions (strongest in the red, washed out by haze in the UV) and a polar cap
        pattern = (0.6 * np.sin(2 * lon + p1) * np.cos(lat) + 0.4 * np.sin(3 * lon + 2 * lat + p2)
                   + 0.3 * np.sin(5 * lon - 3 * lat + p3))
        albedo = 1.0 - EXI_CONTRAST[filt] * 0.45 / (1.0 + np.exp(-4.0 * pattern))
        cap = 1.0 + EXI_CAP_BOOST[filt] / (1.0 + np.exp(-(np.degrees(lat) - 66.0)))
        i_over_f = np.where(on, EXI_REFLECTANCE[filt] * albedo * cap * mu0**0.9 * mu**-0.1, 0.0)
        signal = flat * EXI_SCALE_DN[filt] * i_over_f
        dn = EXI_DARK_DN + rng.poisson(signal) + rng.normal(0.0, 4.0, signal.shape)
        dn = np.clip(dn, 0, 4095)
        apid = packets.EXI_FILTER_APIDS[filt]
        image_id = (obs_id * 8 + k) & 0xFFFF
        t0 = start_s + k * EXI_IMAGE_CADENCE_S
        for row in range(size):
            payload = struct.pack(">HH", row, image_id) + _u16(dn[row])
            records.append((apid, t0 + row * EXI_ROW_TIME_S, obs_id, payload))
    return _pack_stream(records)


def _emu_observation(rng: np.random.Generator, start: datetime, obs_id: int) -> bytes:
    """One EMUS observation: integrations x spatial rows of FUV spectra."""
    wl = emu_wavelengths()
    sens = emu_sensitivity(wl)
    sigma = EMU_LINE_FWHM_NM / (2 * np.sqrt(2 * np.log(2)))
    rows = np.arange(packets.EMU_SPATIAL_ROWS)
    centre = rng.uniform(12, 20)
    disk = 0.4 + 0.6 * np.exp(-(((rows - centre) / 9.0) ** 2))  # dayglow brighter on the disk
    start_s = _seconds(start)
    records = []
    for i in range(EMU_INTEGRATIONS):
        drift = 1.0 + 0.1 * np.sin(2 * np.pi * i / EMU_INTEGRATIONS + rng.uniform(-0.2, 0.2))
        for j in rows:
            radiance = 10.0 + 0.05 * (wl - 100.0)  # continuum + scattered light, R/nm
            for k, (line, brightness) in enumerate(EMU_LINES):
                scale = (0.8 + 0.2 * disk[j]) if k == 0 else disk[j]
                profile = np.exp(-0.5 * ((wl - line) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
                radiance = radiance + brightness * scale * drift * profile
            counts = rng.poisson(EMU_DARK_COUNTS + EMU_INTEGRATION_S * sens * radiance)
            payload = struct.pack(">HH", i, int(j)) + _u16(counts)
            records.append((0x120, start_s + i * EMU_CADENCE_S + j * EMU_ROW_TIME_S, obs_id, payload))
    return _pack_stream(records)


def _emr_observation(rng: np.random.Generator, start: datetime, obs_id: int) -> bytes:
    """One EMIRS observation: scans x detectors of thermal-IR interferometer spectra (DN)."""
    nu = emr_wavenumbers()
    gain = emr_gain(nu)
    co2 = 8.0 * np.exp(-(((nu - 667.0) / 25.0) ** 2)) + 1.5 * np.exp(-(((nu - 667.0) / 80.0) ** 2))
    dust = rng.uniform(0.1, 0.4) * np.exp(-(((nu - 1075.0) / 120.0) ** 2))
    transmission = np.exp(-(co2 + dust))
    t_surface = rng.uniform(215.0, 265.0)
    t_air = rng.uniform(180.0, 200.0)
    start_s = _seconds(start)
    records = []
    for s in range(EMR_SCANS):
        for d in range(EMR_DETECTORS):
            ts = t_surface + 3.0 * np.sin(s / 3.0) + (d - 1) * 1.0
            radiance = 0.97 * planck(nu, ts) * transmission + planck(nu, t_air) * (1 - transmission)
            dn = EMR_DN_OFFSET + gain * radiance + rng.normal(0.0, 15.0, nu.shape)
            payload = struct.pack(">HH", s, d) + _u16(dn)
            records.append((0x130, start_s + s * EMR_SCAN_CADENCE_S + d * 0.5, obs_id, payload))
    return _pack_stream(records)


_HK_APIDS: Final = {"exi": 0x11F, "emu": 0x12F, "emr": 0x13F}
_HK_DETECTOR_CK: Final = {"exi": 26315.0, "emu": 29315.0, "emr": 29815.0}


def _housekeeping(rng: np.random.Generator, instrument: str, start: datetime, duration_s: float) -> bytes:
    """Instrument housekeeping over an orbit: temperatures (cK), rails (mV), currents (mA)."""
    n = int(duration_s // HK_CADENCE_S)
    t = np.arange(n) * HK_CADENCE_S
    phase = 2 * np.pi * t / ORBIT_PERIOD.total_seconds()
    noise = rng.normal(0.0, 1.0, (n, packets.HK_CHANNELS))
    heater = (np.sin(phase * 7) > 0).astype(float)
    channels = np.column_stack([
        _HK_DETECTOR_CK[instrument] + 150 * np.sin(phase) + 5 * noise[:, 0],  # detector temperature
        29315 + 300 * np.sin(phase + 0.5) + 5 * noise[:, 1],  # optics temperature
        30315 + 200 * np.sin(phase + 1.0) + 5 * noise[:, 2],  # electronics temperature
        5000 + 3 * noise[:, 3],  # +5 V rail
        3300 + 2 * noise[:, 4],  # +3.3 V rail
        28000 + 40 * noise[:, 5],  # 28 V bus
        400 + 20 * np.sin(phase * 3) + 4 * noise[:, 6],  # instrument current
        150 * heater + noise[:, 7],  # heater current
    ])
    values = np.clip(np.rint(channels), -32768, 32767).astype(">i2")
    start_s = _seconds(start)
    apid = _HK_APIDS[instrument]
    return _pack_stream((apid, start_s + ti, 0, row.tobytes()) for ti, row in zip(t, values, strict=True))


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Planned:
    instrument: str
    level: str
    mode: str | None
    start: datetime
    data: bytes


_INSTRUMENT_STREAM: Final = {"exi": 1, "emu": 2, "emr": 3}


def _plan(orbit: int, instrument: str, seed: int) -> Iterator[_Planned]:
    """Files one instrument delivers for one orbit (science first, then housekeeping)."""
    t0 = orbit_start(orbit)
    stream = _INSTRUMENT_STREAM[instrument]
    jitter = _rng(seed, orbit, stream, 0)

    def at(hours: float) -> datetime:
        return t0 + timedelta(hours=hours, seconds=int(jitter.integers(0, 1800)))

    if instrument == "exi":
        for k, (mode, hours) in enumerate((("xos1", 6.0), ("xos2", 30.0))):
            start = at(hours)
            data = _exi_sequence(_rng(seed, orbit, stream, 1 + k), start, mode, orbit * 4 + k)
            yield _Planned(instrument, "l0", mode, start, data)
    elif instrument == "emu":
        start = at(12.0)
        yield _Planned(instrument, "l0", EMU_MODE, start,
                       _emu_observation(_rng(seed, orbit, stream, 1), start, orbit * 4))
    else:
        for k in range(EMR_FILES_PER_ORBIT):
            start = at(3.0 + 37.0 * k)
            yield _Planned(instrument, "l0", None, start,
                           _emr_observation(_rng(seed, orbit, stream, 1 + k), start, orbit * 4 + k))
    hk_start = t0 + timedelta(seconds=17)
    yield _Planned(instrument, "hk", None, hk_start,
                   _housekeeping(_rng(seed, orbit, stream, 9), instrument, hk_start,
                                 ORBIT_PERIOD.total_seconds() - 60))


def raw_name(instrument: str, level: str, start: datetime, orbit: int, mode: str | None) -> str:
    """EMM name of an L0/HK delivery (kernel ``n``, ``v01-00``, ``.bin``)."""
    return naming.EmmName(
        instrument=instrument, level=level, start=start.replace(microsecond=0), orbit=orbit, mode=mode,
        descriptor=None, kernel="n", version=1, revision=0, extension=".bin",
    ).file_name


def _write(out_dir: Path, file_name: str, data: bytes, instrument: str, level: str, kind: str,
           sidecar_md5: str | None = None, sidecar: bool = True) -> Delivered:
    """Write a file and, unless ``sidecar`` is False, its sidecar with ``sidecar_md5`` or the real MD5."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    path.write_bytes(data)
    md5 = hashlib.md5(data).hexdigest()
    side_path = out_dir / naming.sidecar_name(file_name)
    if not sidecar:
        side_path.unlink(missing_ok=True)
        return Delivered(file_name, path, None, md5, len(data), instrument, level, kind)
    side_path.write_text(checksums.format_sidecar(sidecar_md5 or md5, file_name))
    return Delivered(file_name, path, side_path, md5, len(data), instrument, level, kind)


def generate(
    out_dir: str | Path,
    orbits: Sequence[int] = (11, 12),
    instruments: Sequence[str] = ("exi", "emu", "emr"),
    seed: int = 0,
) -> list[Delivered]:
    """Write valid L0 science and housekeeping deliveries (with sidecars) into ``out_dir``.

    Per orbit: EXI two L0 sequences (``xos1``: f437/f546/f635, ``xos2``: f220/f260/f320,
    ~410 kB each), EMUS one ``os2`` L0 (~670 kB), EMIRS two L0 (~32 kB), and one HK file
    per instrument (~20 kB). Files go flat into ``out_dir``; the same arguments always
    write the same bytes.
    """
    out = Path(out_dir)
    delivered = []
    for orbit in orbits:
        for inst in instruments:
            if inst not in naming.INSTRUMENTS:
                raise ValueError(f"unknown instrument {inst!r}; expected one of {naming.INSTRUMENTS}")
            for planned in _plan(orbit, inst, seed):
                name = raw_name(inst, planned.level, planned.start, orbit, planned.mode)
                delivered.append(_write(out, name, planned.data, inst, planned.level, "valid"))
    return delivered


# --------------------------------------------------------------------------- anomalies


def _restamp(data: bytes, shift_s: int) -> bytes:
    """Shift every packet's coarse time by ``shift_s`` seconds (framing unchanged)."""
    buf = bytearray(data)
    pos = packets.PRIMARY_HEADER_LEN
    for off in _packet_offsets(data):
        (coarse,) = struct.unpack_from(">I", buf, off + pos)
        struct.pack_into(">I", buf, off + pos, coarse + shift_s)
    return bytes(buf)


def _shifted(source: Delivered, shift_s: int) -> tuple[str, bytes]:
    """Name and content of ``source`` moved ``shift_s`` seconds later (a distinct valid delivery)."""
    name = naming.parse(source.file_name)
    data = source.path.read_bytes()
    if shift_s:
        data = _restamp(data, shift_s)
    start = _first_time(data) if data else name.start + timedelta(seconds=shift_s)
    return raw_name(name.instrument, name.level, start, name.orbit, name.mode), data


def _flip_payload_byte(data: bytes, packet_index: int) -> bytes:
    """XOR one payload byte of the given packet: content changes, framing does not."""
    offsets = _packet_offsets(data)
    off = offsets[packet_index % len(offsets)]
    pos = off + packets.PRIMARY_HEADER_LEN + packets.SECONDARY_HEADER_LEN + 5
    buf = bytearray(data)
    buf[pos] ^= 0x01
    return bytes(buf)


def corrupt(out_dir: str | Path, source: Delivered, *, shift_s: int = 101) -> Delivered:
    """A copy of ``source`` (re-stamped ``shift_s`` s later) changed after its sidecar was computed.

    Name and packet framing are valid; only the MD5 check catches it.
    """
    name, data = _shifted(source, shift_s)
    declared = hashlib.md5(data).hexdigest()
    damaged = _flip_payload_byte(data, len(_packet_offsets(data)) // 2)
    return _write(Path(out_dir), name, damaged, source.instrument, source.level, "corrupt", declared)


#: misnamed(rule=...) choices -> the naming.NameProblem rule each one breaks.
MISNAME_RULES: Final = {
    "orbit": "orbit",
    "instrument": "instrument",
    "level": "level",
    "timestamp": "timestamp",
    "kernel": "raw-kernel-class",
    "version": "version",
    "extension": "extension",
}


def misnamed(out_dir: str | Path, source: Delivered, *, rule: str = "orbit") -> Delivered:
    """``source``'s content under a name that breaks one naming rule (see :data:`MISNAME_RULES`).

    Content and sidecar (computed for the bad name) are sound; only the name check catches it.
    """
    if rule not in MISNAME_RULES:
        raise ValueError(f"rule must be one of {sorted(MISNAME_RULES)}, got {rule!r}")
    stem, ext = naming.split_extension(source.file_name)
    tokens = stem.split("_")
    if rule == "orbit":
        tokens[4] = tokens[4][1:]  # 3 digits
    elif rule == "instrument":
        tokens[1] = "emx"
    elif rule == "level":
        tokens[2] = "l9"
    elif rule == "timestamp":
        d, t = tokens[3][:8], tokens[3][9:]
        tokens[3] = f"{d[:4]}-{d[4:6]}-{d[6:]}T{t}"
    elif rule == "kernel":
        tokens[-2] = "r"
    elif rule == "version":
        tokens[-1] = "v1-0"
    else:
        ext = ".dat"
    bad = "_".join(tokens) + ext
    return _write(Path(out_dir), bad, source.path.read_bytes(), source.instrument, source.level, "misnamed")


def truncated(out_dir: str | Path, source: Delivered, *, shift_s: int = 202) -> Delivered:
    """A re-stamped copy of ``source`` cut in the middle of a packet, with a sidecar over the cut bytes.

    Name and MD5 are consistent; only the packet-framing check catches it.
    """
    name, data = _shifted(source, shift_s)
    offsets = _packet_offsets(data)
    mid = offsets[len(offsets) // 2]
    (length,) = struct.unpack_from(">H", data, mid + 4)
    cut = mid + (packets.PRIMARY_HEADER_LEN + length + 1) // 2
    return _write(Path(out_dir), name, data[:cut], source.instrument, source.level, "truncated")


def zero_byte(out_dir: str | Path, source: Delivered, *, shift_s: int = 303,
              with_sidecar: bool = True) -> Delivered:
    """An empty file under a valid name (``source``'s, ``shift_s`` s later), by default with a
    matching sidecar (the MD5 of no bytes), so only the size/framing check catches it."""
    name, _ = _shifted(source, shift_s)
    return _write(Path(out_dir), name, b"", source.instrument, source.level, "zero_byte",
                  sidecar=with_sidecar)


def missing_sidecar(out_dir: str | Path, source: Delivered, *, shift_s: int = 404) -> Delivered:
    """A sound, re-stamped copy of ``source`` delivered without its ``.md5`` sidecar."""
    name, data = _shifted(source, shift_s)
    return _write(Path(out_dir), name, data, source.instrument, source.level, "missing_sidecar",
                  sidecar=False)


def conflicting(out_dir: str | Path, source: Delivered) -> Delivered:
    """A delivery with ``source``'s exact name but different content and a matching sidecar.

    Name, MD5 and framing are all sound; only the "already archived with another
    checksum" rule catches it. ``out_dir`` must not be ``source``'s directory.
    """
    out = Path(out_dir)
    if (out / source.file_name).resolve() == source.path.resolve():
        raise ValueError("conflicting() would overwrite its source: write it into another directory")
    data = _flip_payload_byte(source.path.read_bytes(), 0)
    return _write(out, source.file_name, data, source.instrument, source.level, "conflicting")


ANOMALIES: Final = ("corrupt", "misnamed", "truncated", "zero_byte", "missing_sidecar", "conflicting")

#: sequence_break(kind=...) choices: what happens to the CCSDS sequence counts of one APID.
SEQUENCE_BREAKS: Final = ("gap", "repeat", "out-of-order")


def sequence_break(out_dir: str | Path, source: Delivered, *, kind: str = "gap", shift_s: int = 505) -> Delivered:
    """A re-stamped copy of ``source`` as a downlink with a sequence-count fault in the middle of the file, with a
    sidecar over the result: ``gap`` drops two packets of one APID, ``repeat`` sends one packet twice,
    ``out-of-order`` swaps a packet with the next one of its APID.

    Name, MD5 and framing are sound; only the sequence-count check (``ingest.packet_sequence``) catches it.
    """
    if kind not in SEQUENCE_BREAKS:
        raise ValueError(f"kind must be one of {list(SEQUENCE_BREAKS)}, got {kind!r}")
    name, data = _shifted(source, shift_s)
    pkts = [data[a:b] for a, b in itertools.pairwise([*_packet_offsets(data), len(data)])]
    k = len(pkts) // 2
    apid = struct.unpack_from(">H", pkts[k])[0] & 0x07FF
    same = [j for j in range(k + 1, len(pkts)) if struct.unpack_from(">H", pkts[j])[0] & 0x07FF == apid]
    if len(same) < 2:
        raise ValueError(f"{source.file_name} has too few packets of APID {apid:#05x} after its middle")
    if kind == "gap":
        pkts = [p for j, p in enumerate(pkts) if j not in (k, same[0])]
    elif kind == "repeat":
        pkts.insert(k + 1, pkts[k])
    else:
        pkts[k], pkts[same[0]] = pkts[same[0]], pkts[k]
    return _write(Path(out_dir), name, b"".join(pkts), source.instrument, source.level, f"sequence-{kind}")


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m emm_dev.synthetic OUT_DIR``: write deliveries and print their names."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--orbits", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--instruments", nargs="+", default=list(naming.INSTRUMENTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--anomalies", type=Path, default=None,
                        help="also write one of each anomaly, made from each instrument's first L0 file, "
                             "into this directory (must differ from OUT_DIR)")
    args = parser.parse_args(argv)
    made = generate(args.out_dir, args.orbits, args.instruments, args.seed)
    if args.anomalies is not None:
        bad_dir = args.anomalies
        for inst in args.instruments:
            first = next(d for d in made if d.instrument == inst and d.level == "l0")
            made += [corrupt(bad_dir, first), misnamed(bad_dir, first), truncated(bad_dir, first),
                     zero_byte(bad_dir, first), missing_sidecar(bad_dir, first), conflicting(bad_dir, first)]
    for d in made:
        print(f"{d.kind:16s} {d.size:9d} {d.file_name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
