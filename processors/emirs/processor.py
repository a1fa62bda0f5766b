#!/usr/bin/env python3
"""EMM EMIRS reference processor: l0 -> l1 (DN spectra), l1 -> l2 (radiance, BT), l2 -> l2ql (PNG plot).

l2 holds the radiance and brightness-temperature spectra; l2ql plots the mean spectrum.

Runs one job per the SDC processor contract (``docs/itf_container_contract.md``):
``python processors/launch.py processors/emirs/processor.py`` from the repository,
``python3 /opt/emm/processor.py`` in the image (where ``emmref`` is installed). See ``processors/README.md``.
"""

from __future__ import annotations

import numpy as np

from emmref import contract
from emmref.contract import BadInput, InputFile, Job, Outputs, Processor, Step

PROCESSOR = Processor(name="emm-emr-ref", version="1.0.0", instrument="emr")

# Nominal calibration (the synthetic instrument model's values).
SPECTRAL_BINS = 256
WAVENUMBER_RANGE = (200.0, 1600.0)  # cm^-1
DN_OFFSET = 2000.0
PLANCK_C1 = 1.191042e-8  # W m^-2 sr^-1 (cm^-1)^-4
PLANCK_C2 = 1.4387769  # cm K
SURFACE_WINDOW = (1250.0, 1350.0)  # cm^-1, away from the CO2 and dust bands
CO2_CORE = (650.0, 685.0)  # cm^-1, 15 um band core
RADIANCE_UNIT = "W m-2 sr-1 (cm-1)-1"
TIME_EPOCH = "2000-01-01T00:00:00"


def wavenumbers() -> np.ndarray:
    """Wavenumber (cm^-1) of each spectral bin."""
    return np.linspace(*WAVENUMBER_RANGE, SPECTRAL_BINS)


def gain(nu: np.ndarray) -> np.ndarray:
    """Responsivity, DN per W m^-2 sr^-1 (cm^-1)^-1."""
    return 2.0e5 * (0.55 + 0.45 * np.exp(-(((nu - 700.0) / 500.0) ** 2)))


def brightness_temperature(nu: np.ndarray, radiance: np.ndarray) -> np.ndarray:
    """Inverse Planck (K); NaN where the radiance is not positive."""
    with np.errstate(divide="ignore", invalid="ignore"):
        bt = PLANCK_C2 * nu / np.log1p(PLANCK_C1 * nu**3 / radiance)
    return np.where(radiance > 0, bt, np.nan)


def _band_mean(nu: np.ndarray, values: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    sel = (nu >= band[0]) & (nu <= band[1])
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isfinite(values[:, sel]), values[:, sel], np.nan), axis=1)


def _open(inp: InputFile, required: tuple[str, ...]) -> tuple[object, np.ndarray]:
    from emmref import fitsio

    hdul = fitsio.open_product(inp.path, inp.file_name, required)
    data = np.asarray(hdul[0].data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != SPECTRAL_BINS:
        raise BadInput(f"input {inp.file_name}: expected (spectra, {SPECTRAL_BINS}) data, got {data.shape}")
    return hdul, data


def _copy_table(hdul: object, name: str) -> object:
    from astropy.io import fits

    return fits.BinTableHDU(hdul[name].data, hdul[name].header, name=name)


def make_l1(job: Job, out: Outputs) -> None:
    """One L1 per L0: DN spectra in time order, their times/scan/detector, and the wavenumber axis."""
    from astropy.io import fits

    from emmref import ccsds, fitsio, hk

    hks = hk.load(job.inputs_at("hk"), "emr")
    nu = wavenumbers()
    for inp in job.inputs_at("l0"):
        try:
            pk = ccsds.read(inp.path, "emr", "l0", inp.file_name)[ccsds.EMR_APID]
        except ccsds.DecodeError as exc:
            raise BadInput(str(exc)) from None
        order = np.argsort(pk.time, kind="stable")
        time = pk.time[order]
        t0, t1 = float(time[0]), float(time[-1])
        name = job.product_name(inp.name, start=ccsds.start_of(t0))
        temp, hk_used = hk.detector_temperature(hks, t0, t1)
        parents = [inp.file_name, *hk_used]
        extra = {
            "BUNIT": ("DN", "raw spectra"),
            "NSPECTRA": (len(time), "number of spectra"),
            "OBS_ID": (int(pk.fields["OBS_ID"][0]), "observation id"),
        }
        if temp is not None:
            extra["DETTEMP"] = (temp, "[K] mean detector temperature from HK")
        header = fitsio.product_header(job, PROCESSOR, name, date_obs=ccsds.iso(t0), date_end=ccsds.iso(t1),
                                       parents=parents, extra=extra)
        spectra = fits.BinTableHDU.from_columns([
            fits.Column(name="TIME", format="D", unit="s", array=time),
            fits.Column(name="UTC", format="23A", array=[ccsds.iso(t) for t in time]),
            fits.Column(name="SCAN", format="J", array=pk.fields["SCAN"][order].astype(np.int32)),
            fits.Column(name="DETECTOR", format="J", array=pk.fields["DETECTOR"][order].astype(np.int32)),
            fits.Column(name="SEQCOUNT", format="J",
                        array=pk.fields["CCSDS_SEQUENCE_COUNT"][order].astype(np.int32)),
        ], name="SPECTRA")
        spectra.header["TEPOCH"] = (TIME_EPOCH, "TIME is seconds since this UTC epoch")
        axis = fits.BinTableHDU.from_columns([
            fits.Column(name="BIN", format="J", array=np.arange(SPECTRAL_BINS, dtype=np.int32)),
            fits.Column(name="WAVENUMBER", format="D", unit="cm-1", array=nu),
        ], name="WAVENUMBER")
        dn = pk.fields["DN"][order].astype(np.uint16)
        fitsio.write(out.path(name), fits.PrimaryHDU(dn, header), spectra, axis)
        out.add(name, parents)


def make_l2(job: Job, out: Outputs) -> None:
    """L2 per L1: radiance and brightness-temperature spectra, surface and CO2-band temperatures."""
    from astropy.io import fits

    from emmref import fitsio

    for inp in job.inputs_at("l1"):
        hdul, dn = _open(inp, ("SPECTRA", "WAVENUMBER"))
        nu = np.asarray(hdul["WAVENUMBER"].data["WAVENUMBER"], dtype=np.float64)
        table = hdul["SPECTRA"].data
        if len(table) != dn.shape[0] or nu.shape != (SPECTRAL_BINS,):
            raise BadInput(f"input {inp.file_name}: SPECTRA/WAVENUMBER tables do not match the data")
        radiance = (dn - DN_OFFSET) / gain(nu)
        bt = brightness_temperature(nu, radiance)
        t_surface, t_co2 = _band_mean(nu, bt, SURFACE_WINDOW), _band_mean(nu, bt, CO2_CORE)
        name = job.product_name(inp.name)
        extra = {
            "BUNIT": (RADIANCE_UNIT, "spectral radiance"),
            "NSPECTRA": (dn.shape[0], "number of spectra"),
            "CALOFFS": (DN_OFFSET, "[DN] offset subtracted"),
            "CALGAIN": ("nominal", "responsivity curve used"),
        }
        if "DETTEMP" in hdul[0].header:
            extra["DETTEMP"] = (hdul[0].header["DETTEMP"], "[K] mean detector temperature from HK")
        header = fitsio.product_header(
            job, PROCESSOR, name, parents=[inp.file_name], extra=extra,
            date_obs=fitsio.header_value(hdul, "DATE-OBS", inp.file_name),
            date_end=fitsio.header_value(hdul, "DATE-END", inp.file_name),
        )
        fmt = f"{SPECTRAL_BINS}E"
        spectra = fits.BinTableHDU.from_columns([
            *(table.columns[c] for c in ("TIME", "UTC", "SCAN", "DETECTOR")),
            fits.Column(name="RADIANCE", format=fmt, unit=RADIANCE_UNIT, array=radiance.astype(np.float32)),
            fits.Column(name="BT", format=fmt, unit="K", array=bt.astype(np.float32)),
            fits.Column(name="TSURF", format="E", unit="K", array=t_surface.astype(np.float32)),
            fits.Column(name="TCO2", format="E", unit="K", array=t_co2.astype(np.float32)),
        ], name="SPECTRA")
        spectra.header["TEPOCH"] = (TIME_EPOCH, "TIME is seconds since this UTC epoch")
        spectra.header["TSURFWIN"] = (f"{SURFACE_WINDOW[0]:g}-{SURFACE_WINDOW[1]:g}", "[cm-1] TSURF band")
        spectra.header["TCO2WIN"] = (f"{CO2_CORE[0]:g}-{CO2_CORE[1]:g}", "[cm-1] TCO2 band (15 um core)")
        fitsio.write(out.path(name), fits.PrimaryHDU(radiance.astype(np.float32), header), spectra,
                     _copy_table(hdul, "WAVENUMBER"))
        out.add(name, [inp.file_name])


def make_l2ql(job: Job, out: Outputs) -> None:
    """A PNG per L2: mean radiance and mean brightness temperature against wavenumber."""
    from emmref import fitsio, quicklook

    for inp in job.inputs_at("l2"):
        hdul, radiance = _open(inp, ("SPECTRA", "WAVENUMBER"))
        nu = np.asarray(hdul["WAVENUMBER"].data["WAVENUMBER"], dtype=np.float64)
        mean_radiance = radiance.mean(axis=0)
        mean_bt = brightness_temperature(nu, mean_radiance)
        date_obs = fitsio.header_value(hdul, "DATE-OBS", inp.file_name)
        name = job.product_name(inp.name, extension=".png")
        title = f"EMIRS orbit {inp.name.orbit:04d}  {date_obs[:19]} UTC  mean of {radiance.shape[0]} spectra"
        metadata = {
            "Title": name, "Source": inp.file_name, "Software": f"{PROCESSOR.name} {PROCESSOR.version}",
            "Comment": f"run {job.processing_run_id} ({job.environment})",
        }
        axis = "wavenumber (cm-1)"
        quicklook.plot_png(out.path(name), title, [
            quicklook.Panel(nu, mean_radiance * 1e3, axis, "radiance (mW m-2 sr-1 (cm-1)-1)"),
            quicklook.Panel(nu, mean_bt, axis, "brightness temperature (K)", color=(214, 39, 40)),
        ], metadata)
        out.add(name, [inp.file_name])


STEPS = {
    "l1": Step("l0", make_l1, auxiliary_levels=("hk",)),
    "l2": Step("l1", make_l2),
    "l2ql": Step("l2", make_l2ql),
}


if __name__ == "__main__":
    contract.main(PROCESSOR, STEPS)
