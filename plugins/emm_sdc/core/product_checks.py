"""Content checks of a processor's products before they are indexed (docs/itf_container_contract.md).

The output check in :mod:`emm_sdc.core.jobs` looks at names, the output
manifest and the files' kinds; these rules look inside each product. Every
finding is ``"<file>: <rule>: <what is wrong>"``, and any finding rejects the
whole job (nothing is indexed). The rules:

* ``fits-structure`` — a ``.fits``/``.fits.gz`` product opens with astropy, every
  HDU's header passes ``verify('exception')``, and astropy warns about nothing
  while reading it (a truncated file, for one, is only a warning to astropy).
* ``fits-checksum`` — every HDU carries ``CHECKSUM`` and ``DATASUM`` and both
  verify (``verify_checksum``/``verify_datasum``): bytes changed after writing
  are caught.
* ``gzip`` — a ``.fits.gz`` is one complete gzip stream whose CRC and length
  verify (astropy reads a stream with its trailer cut off without a word), and
  a ``.fits`` is not compressed.
* ``png-decode`` — a ``.png`` is a PNG whose chunks' CRCs verify (Pillow's
  ``verify``) and whose pixels decode (``load``).

The name's kernel letter is checked against the kernels at collect time
(``lifecycle.check_kernel_letters``).
"""

from __future__ import annotations

import gzip
import warnings
import zlib
from typing import Any, BinaryIO

#: Rule ids, as they appear in findings and in the contract document.
RULES = ("fits-structure", "fits-checksum", "gzip", "png-decode")
_GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20


def verify_product(fh: BinaryIO, file_name: str, extension: str) -> list[str]:
    """Findings about one product's content (empty when it passes); ``fh`` is a seekable binary file."""
    if extension == ".png":
        return [f"{file_name}: png-decode: {p}" for p in _png_problems(fh)]
    if extension in (".fits", ".fits.gz"):
        compressed = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
        if compressed != (extension == ".fits.gz"):
            what = "is gzip-compressed" if compressed else "is not gzip-compressed"
            return [f"{file_name}: gzip: {what}, but its name ends in {extension}"]
        if compressed and (why := _gzip_problem(fh)):
            return [f"{file_name}: gzip: {why}"]
        return [f"{file_name}: {p}" for p in _fits_problems(fh)]
    return [f"{file_name}: no content rule for {extension!r} products (FITS, gzip'ed FITS and PNG have one)"]


def _gzip_problem(fh: BinaryIO) -> str | None:
    """Why ``fh`` is not a complete, intact gzip stream (None when it is); rewinds ``fh``."""
    try:
        with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
            while gz.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError; a cut stream is an EOFError
        return f"the compressed stream is damaged or incomplete ({exc})"
    finally:
        fh.seek(0)
    return None


def _fits_problems(fh: BinaryIO) -> list[str]:
    """astropy's verdict on a FITS file: structure, header verification, checksums (astropy closes ``fh``)."""
    from astropy.io import fits
    from astropy.utils.exceptions import AstropyWarning

    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(fh, mode="readonly", lazy_load_hdus=False, cache=False) as hdul:  # memory-mapped
                hdul.verify("exception")
                for n, hdu in enumerate(hdul):
                    problems += _checksum_problems(n, hdu)
        except Exception as exc:  # astropy raises OSError, ValueError, VerifyError, ... for broken files
            problems = [f"fits-structure: astropy cannot read it as FITS: {type(exc).__name__}: {exc}"]
    said = dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, AstropyWarning))
    return [f"fits-structure: astropy warns: {message}" for message in said] + problems


def _checksum_problems(n: int, hdu: Any) -> list[str]:
    header = hdu.header
    where = f"HDU {n} ({hdu.name or 'PRIMARY'})"
    missing = [k for k in ("CHECKSUM", "DATASUM") if k not in header]
    if missing:
        return [f"fits-checksum: {where} has no {' or '.join(missing)} keyword "
                "(every HDU must carry CHECKSUM and DATASUM)"]
    problems = []
    if hdu.verify_datasum() != 1:
        problems.append(f"fits-checksum: {where}: DATASUM {header['DATASUM']!r} does not match its data "
                        "(changed after it was written?)")
    if hdu.verify_checksum() != 1:
        problems.append(f"fits-checksum: {where}: CHECKSUM {header['CHECKSUM']!r} does not verify "
                        "(header or data changed after it was written?)")
    return problems


def _png_problems(fh: BinaryIO) -> list[str]:
    """Pillow's verdict: a PNG (by content), every chunk's CRC, and the pixels decode to the end."""
    from PIL import Image

    try:
        with Image.open(fh, formats=["PNG"]) as image:
            image.verify()  # chunk structure and CRCs, up to IEND
        fh.seek(0)
        with Image.open(fh, formats=["PNG"]) as image:
            image.load()  # inflates and unfilters every row
            size = image.size
    except Image.UnidentifiedImageError:
        return ["not a PNG: Pillow does not recognise its content as PNG"]
    except Exception as exc:  # SyntaxError (bad CRC), OSError (truncated), zlib.error, DecompressionBombError
        return [f"Pillow cannot decode it as a PNG: {type(exc).__name__}: {exc}"]
    finally:
        fh.seek(0)
    return [] if size[0] and size[1] else [f"the image is empty ({size[0]} x {size[1]} pixels)"]
