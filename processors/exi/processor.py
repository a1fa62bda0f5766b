#!/usr/bin/env python3
"""EMM EXI reference processor: l0 -> l1 (DN images), l1 -> l2a (I/F), l1 -> l1ql (PNG quicklooks).

Runs one job per the SDC processor contract (``docs/itf_container_contract.md``):
``python processors/launch.py processors/exi/processor.py`` from the repository,
``python3 /opt/emm/processor.py`` in the image (where ``emmref`` is installed). See ``processors/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from emmref import contract
from emmref.contract import BadInput, Job, MissingAuxiliary, Outputs, Processor, Step

PROCESSOR = Processor(name="emm-exi-ref", version="1.0.0", instrument="exi")

# Nominal calibration (the synthetic instrument model's values).
DARK_DN = 100.0
SCALE_DN = {  # DN per unit I/F at the flat-field centre
    "f220": 40000.0, "f260": 30000.0, "f320": 25000.0, "f437": 15000.0, "f546": 9000.0, "f635": 7000.0,
}
VIGNETTING = 0.15
FILTER_NM = {"f220": 220.0, "f260": 260.0, "f320": 320.0, "f437": 437.0, "f546": 546.0, "f635": 635.0}
SIZE = 256
TIME_EPOCH = "2000-01-01T00:00:00"


@dataclass(frozen=True)
class Image:
    """One filter image reassembled from its row packets."""

    filter: str
    image_id: int
    obs_id: int
    data: np.ndarray  # (256, 256) uint16 DN
    row_time: np.ndarray  # (256,) seconds since 2000, NaN for a missing row
    row_seq: np.ndarray  # (256,) packet sequence count, -1 for a missing row

    @property
    def missing_rows(self) -> int:
        return int(np.isnan(self.row_time).sum())


def assemble(decoded: dict, file_name: str) -> list[Image]:
    """Group row packets into images (by APID and image id), ordered by time."""
    from emmref import ccsds

    images = []
    for apid, pk in decoded.items():
        ids, rows = pk.fields["IMAGE_ID"].astype(int), pk.fields["ROW"].astype(int)
        if rows.max() >= SIZE:
            raise BadInput(f"{file_name}: APID {apid:#05x} has row number {rows.max()} "
                           f"(rows are 0-{SIZE - 1})")
        for image_id in dict.fromkeys(ids.tolist()):
            m = ids == image_id
            data = np.zeros((SIZE, SIZE), dtype=np.uint16)
            data[rows[m]] = pk.fields["PIXELS"][m]
            row_time = np.full(SIZE, np.nan)
            row_time[rows[m]] = pk.time[m]
            row_seq = np.full(SIZE, -1, dtype=np.int32)
            row_seq[rows[m]] = pk.fields["CCSDS_SEQUENCE_COUNT"][m]
            obs_id = int(pk.fields["OBS_ID"][m][0])
            images.append(Image(ccsds.EXI_APID_FILTERS[apid], image_id, obs_id, data, row_time, row_seq))
    return sorted(images, key=lambda im: float(np.nanmin(im.row_time)))


def make_l1(job: Job, out: Outputs) -> None:
    """One L1 FITS per filter image of each L0 file: 256x256 DN and the row times."""
    from astropy.io import fits

    from emmref import ccsds, fitsio, hk

    hks = hk.load(job.inputs_at("hk"), "exi")
    for inp in job.inputs_at("l0"):
        if inp.name.mode is None:
            raise BadInput(f"input {inp.file_name}: EXI L0 names carry the observation mode")
        try:
            decoded = ccsds.read(inp.path, "exi", "l0", inp.file_name)
        except ccsds.DecodeError as exc:
            raise BadInput(str(exc)) from None
        for img in assemble(decoded, inp.file_name):
            t0, t1 = float(np.nanmin(img.row_time)), float(np.nanmax(img.row_time))
            name = job.product_name(inp.name, descriptor=img.filter, start=ccsds.start_of(t0))
            temp, hk_used = hk.detector_temperature(hks, t0, t1)
            parents = [inp.file_name, *hk_used]
            extra = {
                "WAVELNTH": (FILTER_NM[img.filter], "[nm] filter centre wavelength"),
                "BUNIT": ("DN", "raw detector counts"),
                "OBS_ID": (img.obs_id, "observation (sequence) id"),
                "IMAGEID": (img.image_id, "image id"),
                "MISSROWS": (img.missing_rows, "rows with no packet (filled with 0)"),
            }
            if temp is not None:
                extra["DETTEMP"] = (temp, "[K] mean detector temperature from HK")
            header = fitsio.product_header(job, PROCESSOR, name, date_obs=ccsds.iso(t0),
                                           date_end=ccsds.iso(t1), parents=parents, extra=extra)
            rows = fits.BinTableHDU.from_columns([
                fits.Column(name="ROW", format="J", array=np.arange(SIZE, dtype=np.int32)),
                fits.Column(name="TIME", format="D", unit="s", array=img.row_time),
                fits.Column(name="SEQCOUNT", format="J", array=img.row_seq),
            ], name="ROWTIME")
            rows.header["TEPOCH"] = (TIME_EPOCH, "TIME is seconds since this UTC epoch")
            fitsio.write(out.path(name), fits.PrimaryHDU(img.data, header), rows)
            out.add(name, parents)


@cache
def synthetic_flat() -> np.ndarray:
    """Nominal vignetting: 1 - 0.15 (r / 128 px)^2."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    return 1.0 - VIGNETTING * ((xx - SIZE / 2) ** 2 + (yy - SIZE / 2) ** 2) / (SIZE / 2) ** 2


def flat_field(job: Job, filt: str) -> tuple[np.ndarray, str]:
    """The flat for a filter: parameter ``flat_field`` is ``synthetic`` or a file name (``{filter}``
    is replaced) in the calibration directory."""
    spec = str(job.parameters.get("flat_field", "synthetic"))
    if spec == "synthetic":
        return synthetic_flat(), "synthetic"
    file_name = spec.format(filter=filt)
    if job.calibration_dir is None:
        raise MissingAuxiliary(f"flat field {file_name} needs a calibration directory, none was given")
    path = job.calibration_dir / file_name
    if not path.is_file():
        raise MissingAuxiliary(f"flat field {file_name} is missing from {job.calibration_dir}")
    from astropy.io import fits

    try:
        flat = np.asarray(fits.getdata(path), dtype=np.float64)
    except Exception as exc:
        raise MissingAuxiliary(f"flat field {path} is unreadable: {exc}") from None
    if flat.shape != (SIZE, SIZE) or not np.all(flat > 0):
        raise MissingAuxiliary(f"flat field {path} must be a positive {SIZE}x{SIZE} image")
    return flat, file_name


def _l1_image(inp: contract.InputFile) -> tuple[object, np.ndarray, str]:
    from emmref import fitsio

    hdul = fitsio.open_product(inp.path, inp.file_name)
    filt = fitsio.header_value(hdul, "FILTER", inp.file_name)
    data = np.asarray(hdul[0].data, dtype=np.float64)
    if filt not in SCALE_DN or data.shape != (SIZE, SIZE):
        raise BadInput(f"input {inp.file_name}: expected a {SIZE}x{SIZE} image of an EXI filter, "
                       f"got {data.shape} with FILTER={filt!r}")
    return hdul, data, filt


def make_l2a(job: Job, out: Outputs) -> None:
    """Calibrated L2a per L1 image: I/F = (DN - dark) / flat / scale[filter], float32."""
    from astropy.io import fits

    from emmref import fitsio

    for inp in job.inputs_at("l1"):
        hdul, dn, filt = _l1_image(inp)
        flat, flat_name = flat_field(job, filt)
        i_over_f = ((dn - DARK_DN) / flat / SCALE_DN[filt]).astype(np.float32)
        name = job.product_name(inp.name)
        src = hdul[0].header
        extra = {
            "WAVELNTH": (FILTER_NM[filt], "[nm] filter centre wavelength"),
            "BUNIT": ("I/F", "radiance factor (reflectance-like, dimensionless)"),
            "CALDARK": (DARK_DN, "[DN] dark level subtracted"),
            "CALFLAT": (flat_name, "flat field divided"),
            "CALSCALE": (SCALE_DN[filt], "[DN] per unit I/F at the flat-field centre"),
        }
        if "DETTEMP" in src:
            extra["DETTEMP"] = (src["DETTEMP"], "[K] mean detector temperature from HK")
        header = fitsio.product_header(
            job, PROCESSOR, name, parents=[inp.file_name], extra=extra,
            date_obs=fitsio.header_value(hdul, "DATE-OBS", inp.file_name),
            date_end=fitsio.header_value(hdul, "DATE-END", inp.file_name),
        )
        fitsio.write(out.path(name), fits.PrimaryHDU(i_over_f, header))
        out.add(name, [inp.file_name])


def make_l1ql(job: Job, out: Outputs) -> None:
    """A PNG quicklook per L1 image (dark subtracted, percentile stretch)."""
    from emmref import fitsio, quicklook

    for inp in job.inputs_at("l1"):
        hdul, dn, filt = _l1_image(inp)
        name = job.product_name(inp.name, extension=".png")
        date_obs = fitsio.header_value(hdul, "DATE-OBS", inp.file_name)
        metadata = {
            "Title": name, "Source": inp.file_name, "Software": f"{PROCESSOR.name} {PROCESSOR.version}",
            "Comment": f"EMM EXI {filt} {date_obs} UTC, run {job.processing_run_id} ({job.environment})",
        }
        quicklook.image_png(out.path(name), dn - DARK_DN, metadata,
                            label=f"EXI {filt} orbit {inp.name.orbit:04d} {date_obs[:19]}")
        out.add(name, [inp.file_name])


STEPS = {
    "l1": Step("l0", make_l1, auxiliary_levels=("hk",)),
    "l2a": Step("l1", make_l2a),
    "l1ql": Step("l1", make_l1ql),
}


if __name__ == "__main__":
    contract.main(PROCESSOR, STEPS)
