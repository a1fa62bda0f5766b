#!/usr/bin/env python3
"""EMM EMUS reference processor: l0 -> l1 (counts cube), l1 -> l2a (radiance), l2a -> l2b (line brightness).

Runs one job per the SDC processor contract (``docs/itf_container_contract.md``):
``python processors/launch.py processors/emus/processor.py`` from the repository,
``python3 /opt/emm/processor.py`` in the image (where ``emmref`` is installed). See ``processors/README.md``.
"""

from __future__ import annotations

import numpy as np

from emmref import contract
from emmref.contract import BadInput, InputFile, Job, Outputs, Processor, Step

PROCESSOR = Processor(name="emm-emu-ref", version="1.0.0", instrument="emu")

# Nominal calibration (the synthetic instrument model's values).
SPATIAL_ROWS, SPECTRAL_BINS = 32, 512
WAVELENGTH_RANGE_NM = (100.0, 170.0)
DARK_COUNTS = 2.0
INTEGRATION_S = {"os1": 10.0, "os2": 10.0, "os3": 10.0, "os4": 10.0, "osr": 10.0, "osp": 10.0}
DEFAULT_INTEGRATION_S = 10.0
LINE_FWHM_NM = 1.5
FIT_HALF_WIDTH_NM = 3.0
#: (column name, centre nm, label) of the fitted emissions.
LINES = (("HI_1216", 121.567, "H I Lyman-alpha 121.6 nm"),
         ("OI_1304", 130.4, "O I 130.4 nm"),
         ("OI_1356", 135.6, "O I 135.6 nm"))
TIME_EPOCH = "2000-01-01T00:00:00"


def wavelengths() -> np.ndarray:
    """Centre wavelength (nm) of each spectral bin."""
    lo, hi = WAVELENGTH_RANGE_NM
    return lo + (np.arange(SPECTRAL_BINS) + 0.5) * (hi - lo) / SPECTRAL_BINS


def sensitivity(wl: np.ndarray) -> np.ndarray:
    """Counts s^-1 per (R/nm)."""
    return 0.02 * (0.3 + np.exp(-0.5 * ((wl - 128.0) / 18.0) ** 2))


def _open(inp: InputFile, required: tuple[str, ...]) -> tuple[object, np.ndarray]:
    from emmref import fitsio

    hdul = fitsio.open_product(inp.path, inp.file_name, required)
    data = np.asarray(hdul[0].data, dtype=np.float64)
    if data.ndim != 3 or data.shape[1:] != (SPATIAL_ROWS, SPECTRAL_BINS):
        raise BadInput(f"input {inp.file_name}: expected an (integrations, {SPATIAL_ROWS}, {SPECTRAL_BINS}) "
                       f"cube, got {data.shape}")
    return hdul, data


def _mode_keywords(hdul: object, inp: InputFile) -> dict[str, tuple[object, str]]:
    from emmref import fitsio

    return {
        "EXPTIME": (fitsio.header_value(hdul, "EXPTIME", inp.file_name), "[s] integration time"),
        "NINTEG": (fitsio.header_value(hdul, "NINTEG", inp.file_name), "number of integrations"),
    }


def make_l1(job: Job, out: Outputs) -> None:
    """One L1 per L0: counts cube (integration, spatial row, spectral bin) + wavelength and time tables."""
    from astropy.io import fits

    from emmref import ccsds, fitsio, hk

    hks = hk.load(job.inputs_at("hk"), "emu")
    wl = wavelengths()
    for inp in job.inputs_at("l0"):
        if inp.name.mode is None:
            raise BadInput(f"input {inp.file_name}: EMUS L0 names carry the observation mode")
        try:
            pk = ccsds.read(inp.path, "emu", "l0", inp.file_name)[ccsds.EMU_APID]
        except ccsds.DecodeError as exc:
            raise BadInput(str(exc)) from None
        integ, rows = pk.fields["INTEGRATION"].astype(int), pk.fields["SPATIAL_ROW"].astype(int)
        time = pk.time
        if rows.max() >= SPATIAL_ROWS:
            raise BadInput(f"{inp.file_name}: spatial row {rows.max()} (rows are 0-{SPATIAL_ROWS - 1})")
        ids = sorted(set(integ.tolist()), key=lambda i: time[integ == i].min())
        cube = np.zeros((len(ids), SPATIAL_ROWS, SPECTRAL_BINS), dtype=np.uint16)
        row_time = np.full((len(ids), SPATIAL_ROWS), np.nan)
        for k, i in enumerate(ids):
            m = integ == i
            cube[k, rows[m]] = pk.fields["COUNTS"][m]
            row_time[k, rows[m]] = time[m]
        exptime = INTEGRATION_S.get(inp.name.mode, DEFAULT_INTEGRATION_S)
        t0, t1 = float(np.nanmin(row_time)), float(np.nanmax(row_time)) + exptime
        name = job.product_name(inp.name, start=ccsds.start_of(t0))
        temp, hk_used = hk.detector_temperature(hks, t0, t1)
        parents = [inp.file_name, *hk_used]
        extra = {
            "BUNIT": ("count", "detector counts per bin"),
            "EXPTIME": (exptime, "[s] integration time"),
            "NINTEG": (len(ids), "number of integrations"),
            "OBS_ID": (int(pk.fields["OBS_ID"][0]), "observation id"),
            "MISSROWS": (int(np.isnan(row_time).sum()), "spectra with no packet (filled with 0)"),
            "CTYPE1": ("WAVE", "spectral axis"), "CUNIT1": ("nm", ""), "CRPIX1": (1.0, ""),
            "CRVAL1": (float(wl[0]), "[nm] centre of the first bin"),
            "CDELT1": (float(wl[1] - wl[0]), "[nm] bin width"),
        }
        if temp is not None:
            extra["DETTEMP"] = (temp, "[K] mean detector temperature from HK")
        header = fitsio.product_header(job, PROCESSOR, name, date_obs=ccsds.iso(t0), date_end=ccsds.iso(t1),
                                       parents=parents, extra=extra)
        wave = fits.BinTableHDU.from_columns([
            fits.Column(name="BIN", format="J", array=np.arange(SPECTRAL_BINS, dtype=np.int32)),
            fits.Column(name="WAVELENGTH", format="D", unit="nm", array=wl),
        ], name="WAVELENGTH")
        start = np.nanmin(row_time, axis=1)
        integrations = fits.BinTableHDU.from_columns([
            fits.Column(name="INTEGRATION", format="J", array=np.array(ids, dtype=np.int32)),
            fits.Column(name="TIME", format="D", unit="s", array=start),
            fits.Column(name="UTC", format="23A", array=[ccsds.iso(t) for t in start]),
            fits.Column(name="NROWS", format="J", array=np.isfinite(row_time).sum(axis=1).astype(np.int32)),
        ], name="INTEGRATIONS")
        integrations.header["TEPOCH"] = (TIME_EPOCH, "TIME is seconds since this UTC epoch")
        fitsio.write(out.path(name), fits.PrimaryHDU(cube, header), wave, integrations)
        out.add(name, parents)


def make_l2a(job: Job, out: Outputs) -> None:
    """Calibrated L2a per L1: radiance (R/nm) = (counts - dark) / (t_int * sensitivity), with uncertainty."""
    from astropy.io import fits

    from emmref import fitsio

    for inp in job.inputs_at("l1"):
        hdul, counts = _open(inp, ("WAVELENGTH", "INTEGRATIONS"))
        wl = np.asarray(hdul["WAVELENGTH"].data["WAVELENGTH"], dtype=np.float64)
        extra = _mode_keywords(hdul, inp)
        exptime = float(extra["EXPTIME"][0])
        response = exptime * sensitivity(wl)
        radiance = ((counts - DARK_COUNTS) / response).astype(np.float32)
        uncertainty = (np.sqrt(np.maximum(counts, 1.0)) / response).astype(np.float32)
        name = job.product_name(inp.name)
        extra.update({
            "BUNIT": ("R/nm", "spectral radiance, rayleigh per nm"),
            "CALDARK": (DARK_COUNTS, "[count] dark level subtracted"),
            "CALSENS": ("nominal", "sensitivity curve used"),
        })
        for key in ("CTYPE1", "CUNIT1", "CRPIX1", "CRVAL1", "CDELT1", "DETTEMP"):
            if key in hdul[0].header:
                extra[key] = (hdul[0].header[key], hdul[0].header.comments[key])
        header = fitsio.product_header(
            job, PROCESSOR, name, parents=[inp.file_name], extra=extra,
            date_obs=fitsio.header_value(hdul, "DATE-OBS", inp.file_name),
            date_end=fitsio.header_value(hdul, "DATE-END", inp.file_name),
        )
        unc = fits.ImageHDU(uncertainty, name="UNCERTAINTY")
        unc.header["BUNIT"] = ("R/nm", "1-sigma uncertainty of the radiance")
        tables = [fits.BinTableHDU(hdul[t].data, hdul[t].header, name=t)
                  for t in ("WAVELENGTH", "INTEGRATIONS")]
        fitsio.write(out.path(name), fits.PrimaryHDU(radiance, header), unc, *tables)
        out.add(name, [inp.file_name])


def fit_lines(wl: np.ndarray, spectra: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Least-squares fit, per spectrum and line, of a fixed-width Gaussian on a linear background.

    Returns {line column: (brightness R, 1-sigma R)}; the Gaussian has unit area, so its
    amplitude is the line brightness in rayleighs.
    """
    sigma = LINE_FWHM_NM / (2 * np.sqrt(2 * np.log(2)))
    result = {}
    for column, centre, _ in LINES:
        window = np.abs(wl - centre) <= FIT_HALF_WIDTH_NM
        x = wl[window]
        design = np.column_stack([
            np.exp(-0.5 * ((x - centre) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi)),
            np.ones_like(x),
            x - centre,
        ])
        y = spectra[:, window].T  # (bins, spectra)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        dof = max(window.sum() - design.shape[1], 1)
        residual_var = ((y - design @ coef) ** 2).sum(axis=0) / dof
        cov00 = np.linalg.inv(design.T @ design)[0, 0]
        result[column] = (coef[0], np.sqrt(residual_var * cov00))
    return result


def make_l2b(job: Job, out: Outputs) -> None:
    """L2b per L2a: a binary table of fitted line brightnesses per integration and spatial row."""
    from astropy.io import fits

    from emmref import fitsio

    for inp in job.inputs_at("l2a"):
        hdul, radiance = _open(inp, ("WAVELENGTH", "INTEGRATIONS"))
        wl = np.asarray(hdul["WAVELENGTH"].data["WAVELENGTH"], dtype=np.float64)
        table = hdul["INTEGRATIONS"].data
        n_int = radiance.shape[0]
        if len(table) != n_int:
            raise BadInput(f"input {inp.file_name}: {len(table)} INTEGRATIONS rows for {n_int} integrations")
        fits_by_line = fit_lines(wl, np.nan_to_num(radiance.reshape(-1, SPECTRAL_BINS)))
        columns = [
            fits.Column(name="INTEGRATION", format="J", array=np.repeat(table["INTEGRATION"], SPATIAL_ROWS)),
            fits.Column(name="SPATIAL_ROW", format="J", array=np.tile(np.arange(SPATIAL_ROWS), n_int)),
            fits.Column(name="TIME", format="D", unit="s", array=np.repeat(table["TIME"], SPATIAL_ROWS)),
            fits.Column(name="UTC", format="23A", array=np.repeat(table["UTC"], SPATIAL_ROWS)),
        ]
        for column, _, _ in LINES:
            value, error = fits_by_line[column]
            columns += [
                fits.Column(name=column, format="E", unit="R", array=value.astype(np.float32)),
                fits.Column(name=column + "_ERR", format="E", unit="R", array=error.astype(np.float32)),
            ]
        lines = fits.BinTableHDU.from_columns(columns, name="LINES")
        lines.header["TEPOCH"] = (TIME_EPOCH, "TIME is seconds since this UTC epoch")
        for k, (column, centre, label) in enumerate(LINES, start=1):
            lines.header[f"LINE{k}"] = (column, label)
            lines.header[f"LINE{k}WL"] = (centre, "[nm] line centre")
        lines.header["FITFWHM"] = (LINE_FWHM_NM, "[nm] fixed Gaussian FWHM")
        lines.header["FITHALFW"] = (FIT_HALF_WIDTH_NM, "[nm] half width of each fit window")
        name = job.product_name(inp.name)
        extra = _mode_keywords(hdul, inp)
        extra["NSPECTRA"] = (n_int * SPATIAL_ROWS, "fitted spectra (table rows)")
        header = fitsio.product_header(
            job, PROCESSOR, name, parents=[inp.file_name], extra=extra,
            date_obs=fitsio.header_value(hdul, "DATE-OBS", inp.file_name),
            date_end=fitsio.header_value(hdul, "DATE-END", inp.file_name),
        )
        fitsio.write(out.path(name), fits.PrimaryHDU(header=header), lines)
        out.add(name, [inp.file_name])


STEPS = {
    "l1": Step("l0", make_l1, auxiliary_levels=("hk",)),
    "l2a": Step("l1", make_l2a),
    "l2b": Step("l2a", make_l2b),
}


if __name__ == "__main__":
    contract.main(PROCESSOR, STEPS)
