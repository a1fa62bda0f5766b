"""Product content rules (core/product_checks.py): each rule rejects what it is for, valid products pass."""

from __future__ import annotations

import gzip
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from PIL import Image

from emm_sdc.core.product_checks import RULES, verify_product

NAME = "emm_exi_l1_20210617T082144_0011_xos1_f635_n_v01-00"


def fits_bytes(*, checksum: bool = True) -> bytes:
    """Primary image + binary table, as the reference processors write them."""
    table = fits.BinTableHDU.from_columns([fits.Column(name="TIME", format="D", array=np.arange(5.0))], name="ROWTIME")
    buf = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(np.arange(64, dtype=np.uint16).reshape(8, 8)), table]).writeto(buf, checksum=checksum)
    return buf.getvalue()


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.arange(48 * 32) % 251).astype(np.uint8).reshape(48, 32), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def check(tmp_path: Path, data: bytes, extension: str) -> list[str]:
    path = tmp_path / f"{NAME}{extension}"
    path.write_bytes(data)
    with path.open("rb") as fh:
        return verify_product(fh, path.name, extension)


def flip(data: bytes, at: int) -> bytes:
    out = bytearray(data)
    out[at] ^= 0x01
    return bytes(out)


def test_valid_products_pass(tmp_path: Path) -> None:
    assert check(tmp_path, fits_bytes(), ".fits") == []
    assert check(tmp_path, gzip.compress(fits_bytes()), ".fits.gz") == []
    assert check(tmp_path, png_bytes(), ".png") == []


def _without_extension_checksum() -> bytes:
    data = fits_bytes()
    with fits.open(io.BytesIO(data)) as hdul:
        del hdul[1].header["CHECKSUM"]
        buf = io.BytesIO()
        hdul.writeto(buf)
    return buf.getvalue()


def _table_data_changed() -> bytes:
    data = fits_bytes()
    with fits.open(io.BytesIO(data)) as hdul:
        at = hdul.fileinfo(1)["datLoc"] + 3
    return flip(data, at)


def _header_changed() -> bytes:
    data = fits_bytes()
    at = data.index(b"ROWTIME")
    return data[:at] + b"ROWTIMF" + data[at + 7:]


def _png_bad_crc() -> bytes:
    data = png_bytes()
    return flip(data, data.index(b"IDAT") + 20)  # a compressed byte: IDAT's CRC no longer matches


def _png_bad_zlib() -> bytes:
    """Chunks and CRCs intact, but the image data is not a zlib stream."""
    data = png_bytes()
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start:start + 4])
    return data[:start] + chunk(b"IDAT", b"\xff" * length) + data[start + 12 + length:]


CASES = {
    # case: (bytes, extension, rule, phrase)
    "text named .fits": (lambda: b"not a FITS file\n" * 300, ".fits", "fits-structure", "No SIMPLE card found"),
    "FITS cut short": (lambda: fits_bytes()[:-2880], ".fits", "fits-structure", "truncated"),
    "no CHECKSUM/DATASUM": (lambda: fits_bytes(checksum=False), ".fits", "fits-checksum",
                            "HDU 0 (PRIMARY) has no CHECKSUM or DATASUM keyword"),
    "no CHECKSUM in an extension": (_without_extension_checksum, ".fits", "fits-checksum",
                                    "HDU 1 (ROWTIME) has no CHECKSUM keyword"),
    "table data changed": (_table_data_changed, ".fits", "fits-checksum", "HDU 1 (ROWTIME): DATASUM"),
    "header changed": (_header_changed, ".fits", "fits-checksum", "HDU 1 (ROWTIMF): CHECKSUM"),
    "gzip named .fits": (lambda: gzip.compress(fits_bytes()), ".fits", "gzip", "is gzip-compressed"),
    "plain named .fits.gz": (fits_bytes, ".fits.gz", "gzip", "is not gzip-compressed"),
    "gzip trailer cut": (lambda: gzip.compress(fits_bytes())[:-4], ".fits.gz", "gzip", "damaged or incomplete"),
    "gzip CRC wrong": (lambda: flip(gzip.compress(fits_bytes()), -6), ".fits.gz", "gzip", "CRC check failed"),
    "gzip of a broken FITS": (lambda: gzip.compress(fits_bytes(checksum=False)), ".fits.gz", "fits-checksum",
                              "has no CHECKSUM"),
    "FITS named .png": (fits_bytes, ".png", "png-decode", "not a PNG"),
    "PNG cut short": (lambda: png_bytes()[:len(png_bytes()) // 2], ".png", "png-decode", "Pillow cannot decode it"),
    "PNG chunk CRC wrong": (_png_bad_crc, ".png", "png-decode", "broken PNG file"),
    "PNG data not zlib": (_png_bad_zlib, ".png", "png-decode", "Pillow cannot decode it"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_rejects_with_file_and_reason(tmp_path: Path, case: str) -> None:
    make, extension, rule, phrase = CASES[case]
    problems = check(tmp_path, make(), extension)
    assert problems, case
    assert rule in RULES
    assert any(p.startswith(f"{NAME}{extension}: {rule}: ") and phrase in p for p in problems), problems


def test_an_extension_without_a_rule_is_a_problem(tmp_path: Path) -> None:
    [problem] = check(tmp_path, b"\x00" * 10, ".bin")
    assert "no content rule for '.bin' products" in problem
