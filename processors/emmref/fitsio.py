"""FITS writing and reading helpers with the EMM product header.

Every product carries the same identification keywords (mission, instrument,
level, time range, orbit, mode, kernel class, version, processor, run,
environment, lineage). Data never depend on the wall clock; only ``DATE`` (file
creation time) does, and it honours ``SOURCE_DATE_EPOCH`` for byte-identical
rebuilds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from astropy.io import fits

from emmref import names
from emmref.contract import BadInput, Job, Processor

INSTRUMENT_NAMES = {"exi": "EXI", "emu": "EMUS", "emr": "EMIRS"}
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def text(value: object) -> str:
    """A value as printable ASCII (FITS header strings allow nothing else)."""
    return _UNPRINTABLE.sub("?", str(value))


def _card(value: str, comment: str) -> tuple[str, str]:
    """A string card, dropping the comment when it would not fit on the 80-character card."""
    return (value, comment) if len(value) + len(comment) <= 60 else (value, "")


def creation_date() -> str:
    """``DATE``: now (UTC), or ``SOURCE_DATE_EPOCH`` when set (reproducible builds)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), tz=UTC) if epoch else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def product_header(
    job: Job,
    processor: Processor,
    file_name: str,
    *,
    date_obs: str,
    date_end: str,
    parents: Sequence[str],
    extra: dict[str, tuple[Any, str]] | None = None,
) -> fits.Header:
    """The standard EMM header of a product; ``extra`` adds ``{KEY: (value, comment)}`` cards."""
    name = names.parse(file_name)
    h = fits.Header()
    h["FILENAME"] = _card(file_name, "name of this file")
    h["DATE"] = (creation_date(), "file creation time (UTC)")
    h["MISSION"] = ("EMM", "Emirates Mars Mission")
    h["TELESCOP"] = ("HOPE", "spacecraft")
    h["INSTRUME"] = (INSTRUMENT_NAMES[name.instrument], "instrument")
    h["LEVEL"] = (name.level, "data processing level")
    h["DATE-OBS"] = (date_obs, "observation start (UTC)")
    h["DATE-END"] = (date_end, "observation end (UTC)")
    h["TIMESYS"] = ("UTC", "time scale of DATE-OBS and DATE-END")
    h["ORBIT"] = (name.orbit, "orbit number")
    if name.mode:
        h["OBS_MODE"] = (name.mode, "observation mode")
    if name.descriptor and name.instrument == "exi":
        h["FILTER"] = (name.descriptor, "EXI filter")
    elif name.descriptor:
        h["DESCRIPT"] = (name.descriptor, "file-name descriptor")
    h["KERNCLAS"] = (name.kernel, "SPICE kernel class: n none, p, r, f")
    h["PRODVER"] = (name.version, "product version (VV)")
    h["PRODREV"] = (name.revision, "product revision (RR)")
    h["PROCNAME"] = (processor.name, "processor name")
    h["PROCVER"] = (processor.version, "processor version")
    h["RUNID"] = _card(text(job.processing_run_id), "SDC processing run id")
    h["ENVIRON"] = (text(job.environment), "SDC environment")
    if job.work_unit:
        h["WORKUNIT"] = (text(job.work_unit), "SDC work unit")
    if job.spice_metakernel is not None:
        h["METAKERN"] = (text(job.spice_metakernel.name), "SPICE meta-kernel")
    for key, (value, comment) in (extra or {}).items():
        h[key] = (value, comment)
    if len(parents) > 99:
        raise ValueError(f"{file_name}: {len(parents)} parents do not fit PARENT01..PARENT99")
    for n, parent in enumerate(parents, start=1):
        h[f"PARENT{n:02d}"] = _card(parent, "input file")
    return h


def write(path: Path, primary: fits.PrimaryHDU, *extensions: fits.ImageHDU | fits.BinTableHDU) -> None:
    """Write a product with CHECKSUM/DATASUM cards (refuses to overwrite).

    The checksum cards' comments carry the header's ``DATE`` rather than astropy's
    wall-clock default, so the file is reproducible under ``SOURCE_DATE_EPOCH``.
    """
    hdul = fits.HDUList([primary, *extensions])
    stamp = primary.header.get("DATE") or creation_date()
    for hdu in hdul:
        hdu.add_checksum(when=f"checksum of {stamp}")
    hdul.writeto(path, checksum=False, output_verify="exception")


def open_product(path: Path, file_name: str, required: Sequence[str] = ()) -> fits.HDUList:
    """Open an input product fully into memory; BadInput when unreadable or missing ``required`` HDUs."""
    try:
        hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
        hdul.verify("exception")
    except Exception as exc:  # astropy raises OSError, ValueError, VerifyError...
        raise BadInput(f"input {file_name} is not a readable FITS file: {exc}") from None
    present = {h.name for h in hdul}
    missing = [r for r in required if r not in present]
    if missing or hdul[0].data is None:
        raise BadInput(f"input {file_name} lacks {', '.join(missing) or 'primary data'}: "
                       f"it has HDUs {', '.join(sorted(present))}")
    return hdul


def header_value(hdul: fits.HDUList, key: str, file_name: str) -> Any:
    """A primary-header keyword of an input product (BadInput when absent)."""
    if key not in hdul[0].header:
        raise BadInput(f"input {file_name} has no {key} keyword")
    return hdul[0].header[key]
