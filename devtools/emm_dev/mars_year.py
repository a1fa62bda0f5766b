"""One Martian year (687 days) of MOC deliveries for EXI, EMUS and EMIRS, as a cheap timeline (issue 16).

:func:`timeline` yields a :class:`Delivery` record (when the MOC delivers it, the area, the EMM file name, a
mission-like size in bytes, the level) for every file the MOC would deliver over one Martian year from
:data:`emm_dev.synthetic.ORBIT_EPOCH`; no bytes are made, so the whole year (~10,000 records) costs well
under a second. :func:`write_window` writes the real synthetic files (CCSDS packets and md5sum sidecars,
through :mod:`emm_dev.synthetic`'s instrument models and :mod:`emm_dev.synthetic_spice`) for a chosen window,
named exactly as the timeline names them. :func:`summary` counts files and bytes per instrument/level and per
calendar quarter, with the products every chain level would make (:func:`products`).

Rates (mission-like; EMM's science orbit is ~20,000 x 43,000 km with a 55 h period, chosen so that each
instrument sees the whole disk several times per orbit at different local times):

* **Orbits**: ``ORBIT_PERIOD`` = 55 h, so 687 days hold 300 orbit starts (687 * 24 / 55 = 299.8).
* **EXI** (imager): :data:`OBS_PER_ORBIT` ``exi`` = 6 imaging sequences per orbit, every ~8 h around the
  orbit, alternating the visible (``xos1``) and UV (``xos2``) filter sets: a few global images per orbit
  for the diurnal cycle of dust, clouds and ozone. ~48 MB each (three 12 Mpixel 12-bit frames, compressed).
* **EMUS** (FUV spectrograph): 4 observations per orbit (``os1`` disk scan, two ``os2`` disk scans,
  ``os3`` exosphere/corona), ~30 MB each (long integrations of a 2-D detector).
* **EMIRS** (thermal-IR spectrometer): 8 scan blocks per orbit (every ~6.9 h: it maps the disk
  continuously; the MOC cuts its stream into blocks), ~15 MB each.
* **Housekeeping**: exactly one HK file per instrument per UTC day (the MOC's daily HK dump), ~2 MB.
* **SPICE**: the generic kernels (LSK, PCK, SCLK, planetary SPK) once at the start, then every 7 days a
  reconstructed Hope SPK and CK over the past week (class ``r``) and a predicted SPK over the next two weeks
  (class ``p``).

L0 files reach the SDC :data:`DOWNLINK_HOURS` after the observation (a seeded 4-16 h: downlink passes and
the MOC's processing). Everything is a pure function of ``seed``.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np

from emm_dev import synthetic
from emm_dev.synthetic import ORBIT_EPOCH, ORBIT_PERIOD, Delivered, orbit_of, orbit_start
from emm_sdc.core import kernels, naming

MARS_YEAR_DAYS: Final = 687
INSTRUMENTS: Final = ("exi", "emu", "emr")
#: Observations per orbit per instrument and the mode of each (None: EMIRS carries no mode).
OBS_MODES: Final[dict[str, tuple[str | None, ...]]] = {
    "exi": ("xos1", "xos2", "xos1", "xos2", "xos1", "xos2"),
    "emu": ("os1", "os2", "os2", "os3"),
    "emr": (None,) * 8,
}
OBS_PER_ORBIT: Final = {inst: len(modes) for inst, modes in OBS_MODES.items()}
#: Mission-like mean size of one delivered file (bytes); each file varies by +-10 % (seeded).
L0_BYTES: Final = {"exi": 48_000_000, "emu": 30_000_000, "emr": 15_000_000}
HK_BYTES: Final = 2_000_000
KERNEL_BYTES: Final = {"spk": 1_500_000, "ck": 6_000_000, "lsk": 5_300, "pck": 4_000, "sclk": 2_000,
                       "pln": 800_000}
#: Each chain level's product size as a fraction of its L0's (float images/spectra are larger than 12-bit
#: counts; quicklooks are small PNGs); the levels are the ITF YAMLs' chains.
PRODUCT_FACTOR: Final[dict[str, dict[str, float]]] = {
    "exi": {"l1": 2.0, "l2a": 2.0, "l1ql": 0.02},
    "emu": {"l1": 2.0, "l2a": 1.0, "l2b": 0.05},
    "emr": {"l1": 1.5, "l2": 1.0, "l2ql": 0.02},
}
#: EXI products above L0 name a filter: the first of the sequence's set (as the stub processor does).
EXI_FILTER: Final = {mode: filters[0] for mode, filters in synthetic.EXI_SEQUENCES.items()}
DOWNLINK_HOURS: Final = (4.0, 16.0)
KERNEL_EVERY: Final = timedelta(days=7)
_STREAM: Final = {"exi": 1, "emu": 2, "emr": 3, "spice": 4}


@dataclass(frozen=True)
class Delivery:
    """One file the MOC delivers: when, into which inbox area, its name, size and level.

    ``start`` is the observation's (or the kernel coverage's) start, ``orbit`` its orbit (None for kernels).
    ``level`` is ``l0``/``hk`` for instruments and the kernel type (``spk``, ``ck``, ``lsk``...) for ``spice``.
    """

    time: datetime
    area: str
    level: str
    file_name: str
    size: int
    start: datetime
    orbit: int | None
    mode: str | None = None


def year_end(start: datetime = ORBIT_EPOCH, days: float = MARS_YEAR_DAYS) -> datetime:
    return start + timedelta(days=days)


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, *stream])


def _size(rng: np.random.Generator, mean: int) -> int:
    return int(mean * rng.uniform(0.9, 1.1))


def observations(orbit: int, instrument: str, seed: int = 0) -> list[tuple[datetime, str | None]]:
    """(start, mode) of each observation of one orbit: evenly spread over the orbit, jittered by up to 30 min."""
    rng = _rng(seed, orbit, _STREAM[instrument], 0)
    modes = OBS_MODES[instrument]
    step = ORBIT_PERIOD / len(modes)
    t0 = orbit_start(orbit)
    return [(t0 + step * k + timedelta(minutes=30) + timedelta(seconds=int(rng.integers(0, 1800))), mode)
            for k, mode in enumerate(modes)]


def _kernel_records(start: datetime, end: datetime, seed: int) -> Iterator[Delivery]:
    rng = _rng(seed, _STREAM["spice"])
    for ktype, name in _generic_names().items():
        yield Delivery(start, "spice", ktype, name, KERNEL_BYTES[ktype], start, None)
    t = start + KERNEL_EVERY
    while t < end:
        at = t.replace(hour=6, minute=0, second=0, microsecond=0)
        week = [(("spk", "r"), t - KERNEL_EVERY, t - timedelta(days=1)), (("ck", "r"), t - KERNEL_EVERY,
                t - timedelta(days=1)), (("spk", "p"), t, t + 2 * KERNEL_EVERY - timedelta(days=1))]
        for (ktype, cls), lo, hi in week:
            name = kernels.KernelName(ktype, cls, 1, kernels.TIME_BOUND[ktype], lo.date(), hi.date()).file_name
            yield Delivery(at, "spice", ktype, name, _size(rng, KERNEL_BYTES[ktype]), lo, None)
        t += KERNEL_EVERY


def _generic_names() -> dict[str, str]:
    from emm_dev.synthetic_spice import GENERIC_NAMES

    return dict(GENERIC_NAMES)


def timeline(seed: int = 0, *, start: datetime = ORBIT_EPOCH, days: float = MARS_YEAR_DAYS,
             instruments: Iterable[str] = INSTRUMENTS, spice: bool = True) -> Iterator[Delivery]:
    """Every delivery of ``days`` days from ``start`` (default: one Martian year of the science phase), in
    delivery-time order: L0 of every observation that starts in the span, one HK per instrument per UTC day,
    kernels weekly. Cheap: names and sizes only."""
    end = year_end(start, days)
    records: list[Delivery] = []
    insts = tuple(instruments)
    first, last = orbit_of(start), orbit_of(end - timedelta(microseconds=1))
    for orbit in range(max(first, 0), last + 1):
        for inst in insts:
            rng = _rng(seed, orbit, _STREAM[inst], 1)
            for obs_start, mode in observations(orbit, inst, seed):
                lag = timedelta(hours=float(rng.uniform(*DOWNLINK_HOURS)))
                size = _size(rng, L0_BYTES[inst])
                if not start <= obs_start < end:
                    continue
                name = synthetic.raw_name(inst, "l0", obs_start, orbit, mode)
                records.append(Delivery(obs_start + lag, inst, "l0", name, size, obs_start, orbit, mode))
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < end:
        hk_start = max(day, start) + timedelta(seconds=17)
        for inst in insts:
            rng = _rng(seed, day.toordinal(), _STREAM[inst], 9)
            name = synthetic.raw_name(inst, "hk", hk_start, orbit_of(hk_start), None)
            records.append(Delivery(day + timedelta(days=1, hours=2), inst, "hk", name, _size(rng, HK_BYTES),
                                    hk_start, orbit_of(hk_start)))
        day += timedelta(days=1)
    if spice:
        records += _kernel_records(start, end, seed)
    # kernels first at equal times: processing needs them
    records.sort(key=lambda d: (d.time, d.area != "spice", d.file_name))
    yield from records


@cache
def chain_inputs(instrument: str) -> dict[str, str]:
    """Each chain level of ``instrument`` and the level it is made from, read from its ITF YAML's chain."""
    from emm_sdc.core.config import load_instrument

    return {step.level: step.inputs[0] for step in load_instrument(instrument).processing.chain}


def products(d: Delivery, *, revision: int = 0, kernel: str = "p") -> list[tuple[str, str, int, str]]:
    """(level, file name, size, input level) of the product each chain level makes from L0 delivery ``d``:
    one per level, as the stub processor makes them (EXI products name their mode's first filter);
    ``revision`` and ``kernel`` as a reprocessing names them."""
    if d.level != "l0" or d.area not in INSTRUMENTS:
        return []
    src = naming.parse(d.file_name)
    out = []
    for level, input_level in chain_inputs(d.area).items():
        ext = ".png" if level.endswith("ql") else ".fits"
        descriptor = EXI_FILTER[src.mode or "xos1"] if d.area == "exi" else src.descriptor
        name = naming.EmmName(instrument=src.instrument, level=level, start=src.start, orbit=src.orbit,
                              mode=src.mode, descriptor=descriptor, kernel=kernel, version=1,
                              revision=revision, extension=ext).file_name
        out.append((level, name, max(1, int(d.size * PRODUCT_FACTOR[d.area][level])), input_level))
    return out


def quarter(t: datetime | date) -> str:
    return f"{t.year}Q{(t.month - 1) // 3 + 1}"


@dataclass
class Summary:
    """Files and bytes by (area, level) and by calendar quarter (delivered; products of every chain level)."""

    files: Counter[tuple[str, str]]
    bytes: Counter[tuple[str, str]]
    quarter_delivered: Counter[str]
    quarter_products: Counter[str]
    quarter_files: Counter[str]
    orbits: int
    days: float

    def lines(self) -> list[str]:
        out = [f"{self.days:g} days, {self.orbits} orbits"]
        for key in sorted(self.files):
            out.append(f"  {key[0]:5} {key[1]:5} {self.files[key]:7,d} files {self.bytes[key] / 1e9:9.2f} GB")
        for q in sorted(self.quarter_delivered):
            out.append(f"  {q}: delivered {self.quarter_delivered[q] / 1e9:7.1f} GB, products "
                       f"{self.quarter_products[q] / 1e9:7.1f} GB, {self.quarter_files[q]:,d} files")
        return out


def summary(records: Iterable[Delivery], days: float = MARS_YEAR_DAYS) -> Summary:
    """Counts per (area, level), including the products each L0 makes (one revision), and bytes per quarter."""
    files: Counter[tuple[str, str]] = Counter()
    size: Counter[tuple[str, str]] = Counter()
    qd: Counter[str] = Counter()
    qp: Counter[str] = Counter()
    qf: Counter[str] = Counter()
    orbits: set[int] = set()
    for d in records:
        files[(d.area, d.level)] += 1
        size[(d.area, d.level)] += d.size
        q = quarter(d.time)
        qd[q] += d.size
        qf[q] += 1
        if d.level == "l0" and d.orbit is not None:
            orbits.add(d.orbit)
        for level, _name, n, _ in products(d):
            files[(d.area, level)] += 1
            size[(d.area, level)] += n
            qp[q] += n
            qf[q] += 1
    return Summary(files, size, qd, qp, qf, len(orbits), days)


def per_day(records: Iterable[Delivery]) -> dict[date, Counter[str]]:
    """Deliveries per UTC delivery day and area/level (``exi/l0``...)."""
    days: dict[date, Counter[str]] = defaultdict(Counter)
    for d in records:
        days[d.time.date()][f"{d.area}/{d.level}"] += 1
    return dict(days)


# --------------------------------------------------------------------------- real files for a window


def write_window(out_dir: str | Path, start: datetime, end: datetime, *, seed: int = 0,
                 instruments: Iterable[str] = INSTRUMENTS, kernel_span: tuple[datetime, datetime] | None = None,
                 ) -> tuple[list[Delivered], list[Delivered]]:
    """Write the real synthetic files of the timeline's L0 and HK deliveries *observed* in [start, end) (names as
    :func:`timeline` gives them; contents from :mod:`emm_dev.synthetic`'s instrument models, so their sizes are
    the synthetic ones, 30-700 kB, not the mission-like sizes of the records), and one kernel delivery:
    the generic kernels and a predicted Hope SPK over ``kernel_span`` (default: the window plus a day each side),
    as :func:`emm_dev.synthetic_spice.kernel_delivery` names them. Returns (kernel files, instrument files)."""
    from emm_dev import synthetic_spice

    out = Path(out_dir)
    insts = tuple(instruments)
    made: list[Delivered] = []
    for d in timeline(seed, instruments=insts, spice=False):
        if not start <= d.start < end:
            continue
        made.append(_write_one(out / d.area, d, seed))
    lo, hi = kernel_span or (start - timedelta(days=1), end + timedelta(days=1))
    kern = synthetic_spice.kernel_delivery(out / "spice", start=lo, end=hi, spk_class="p", generic=True)
    return kern, made


def _write_one(out: Path, d: Delivery, seed: int) -> Delivered:
    """One delivery's bytes from the synthetic module's packet models (its private helpers: the same code the
    demo's files come from, not a copy of it)."""
    assert d.orbit is not None
    obs_id = (d.orbit * 8 + int(d.start.timestamp()) % 8) & 0xFFFF
    rng = synthetic._rng(seed, d.orbit, _STREAM[d.area], int(d.start.timestamp()) % 100_000)
    if d.level == "hk":
        data = synthetic._housekeeping(rng, d.area, d.start, 86400 - 60)
    elif d.area == "exi":
        data = synthetic._exi_sequence(rng, d.start, d.mode or "xos1", obs_id)
    elif d.area == "emu":
        data = synthetic._emu_observation(rng, d.start, obs_id)
    else:
        data = synthetic._emr_observation(rng, d.start, obs_id)
    return synthetic._write(out, d.file_name, data, d.area, d.level, "valid")


def main(argv: list[str] | None = None) -> int:
    """``python -m emm_dev.mars_year``: print the year's summary (``--write-days N`` also writes N days)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--days", type=float, default=MARS_YEAR_DAYS)
    ap.add_argument("--write-days", type=float, default=0, help="also write the first N days' files into --out")
    ap.add_argument("--out", type=Path, default=Path("mars-year"))
    args = ap.parse_args(argv)
    records = list(timeline(args.seed, days=args.days))
    print("\n".join(summary(records, args.days).lines()))
    if args.write_days:
        kern, files = write_window(args.out, ORBIT_EPOCH, ORBIT_EPOCH + timedelta(days=args.write_days),
                                   seed=args.seed)
        print(f"wrote {len(kern)} kernels and {len(files)} files into {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

