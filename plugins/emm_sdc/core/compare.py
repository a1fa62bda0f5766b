"""Staging check: compare a candidate ITF image's products with production's, within ITF tolerances.

Both images process the same reference inputs; the two output directories are
paired by file name. FITS products (``.fits``, ``.fits.gz``) are compared with
astropy's :class:`~astropy.io.fits.FITSDiff`; PNG quicklooks as pixel arrays;
any other file byte for byte. ``output_manifest.json`` and ``*.log`` are skipped.

Tolerances follow FITSDiff: a candidate value ``c`` matches the production value
``p`` when ``|c - p| <= atol + rtol * |p|``. They apply to floating-point data,
table columns and header values; integer data must match exactly (FITSDiff
ignores tolerances for integer arrays). Production is the reference.

Each compared file gets a status: ``identical`` (no difference outside the
ignored keywords), ``within_tolerance`` (its differences, listed, are all within
the tolerances) or ``different`` (the differences beyond them are listed). A file
that cannot be read is ``different``, never an exception.
"""

from __future__ import annotations

import filecmp
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.io.fits.diff import RawDataDiff, TableDataDiff
from astropy.utils.diff import where_not_allclose
from PIL import Image

__all__ = [
    "DEFAULT_IGNORE_KEYWORDS",
    "ComparisonReport",
    "Difference",
    "FileComparison",
    "Status",
    "Tolerances",
    "compare_products",
]

# Keywords that name the run rather than the data: the creation time, the SDC run id and
# environment (always differ between a staging and a production run), the processor version
# (the candidate image is a new version) and the checksums (their comments carry DATE).
DEFAULT_IGNORE_KEYWORDS: tuple[str, ...] = ("DATE", "RUNID", "ENVIRON", "PROCVER", "CHECKSUM", "DATASUM")
SKIPPED_NAMES = frozenset({"output_manifest.json"})
SKIPPED_SUFFIXES = (".log",)
FITS_SUFFIXES = (".fits", ".fits.gz")
PNG_SUFFIXES = (".png",)
MAX_DIFFERENCES = 20  # per file; the rest are counted in FileComparison.omitted
_MAX_VALUE_CHARS = 60


class Status(StrEnum):
    IDENTICAL = "identical"
    WITHIN_TOLERANCE = "within_tolerance"
    DIFFERENT = "different"


@dataclass(frozen=True)
class Tolerances:
    """ITF-set tolerances of a staging check (see the module docstring for their meaning)."""

    rtol: float = 0.0
    atol: float = 0.0
    ignore_keywords: tuple[str, ...] = DEFAULT_IGNORE_KEYWORDS
    png_max_abs_diff: int = 0

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
                raise ValueError(f"tolerance {name} must be a finite number >= 0, not {value!r}")
            object.__setattr__(self, name, float(value))
        png = self.png_max_abs_diff
        if isinstance(png, bool) or not isinstance(png, Integral) or png < 0:
            raise ValueError(f"tolerance png_max_abs_diff must be an integer >= 0, not {png!r}")
        object.__setattr__(self, "png_max_abs_diff", int(png))
        keywords = self.ignore_keywords
        if isinstance(keywords, str) or not isinstance(keywords, Iterable):
            raise ValueError(f"tolerance ignore_keywords must be a list of FITS keywords, not {keywords!r}")
        keywords = tuple(keywords)
        if not all(isinstance(k, str) and k.strip() for k in keywords):
            raise ValueError(f"tolerance ignore_keywords must hold non-empty strings, not {list(keywords)!r}")
        object.__setattr__(self, "ignore_keywords", tuple(dict.fromkeys(k.strip().upper() for k in keywords)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Tolerances:
        """Tolerances from a plain mapping (the ITF's YAML); missing keys keep their defaults.

        ``ignore_keywords`` adds to the default run-identity keywords (FITSDiff wildcards such
        as ``DATE*`` work), so an ITF cannot drop them by accident. Raises ValueError on
        unknown keys or invalid values.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ValueError(f"tolerances must be a mapping, not {type(data).__name__}")
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in allowed)
        if unknown:
            raise ValueError(f"unknown tolerance key(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
        values = dict(data)
        if "ignore_keywords" in values:
            extra = values["ignore_keywords"]
            if isinstance(extra, str) or not isinstance(extra, list | tuple):
                raise ValueError("ignore_keywords must be a list of keyword names")
            values["ignore_keywords"] = (*DEFAULT_IGNORE_KEYWORDS, *extra)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ignore_keywords": list(self.ignore_keywords)}


@dataclass(frozen=True)
class Difference:
    """One difference: where (``file``, ``HDU 1 SPECTRA``, ``HDU 0 PRIMARY keyword X``, ``pixels``) and what."""

    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True)
class FileComparison:
    """The comparison of one product present on both sides.

    ``differences`` lists the tolerated differences of a ``within_tolerance`` file and the
    differences beyond tolerance of a ``different`` one (at most MAX_DIFFERENCES; ``omitted``
    counts the rest).
    """

    file_name: str
    kind: str  # "fits", "png" or "file"
    status: Status
    differences: tuple[Difference, ...] = ()
    omitted: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"file_name": self.file_name, "kind": self.kind, "status": self.status.value,
                "differences": [asdict(d) for d in self.differences], "omitted": self.omitted}


@dataclass(frozen=True)
class ComparisonReport:
    """The result of a staging check."""

    production_dir: Path
    candidate_dir: Path
    tolerances: Tolerances
    files: tuple[FileComparison, ...]
    only_in_production: tuple[str, ...] = ()
    only_in_candidate: tuple[str, ...] = ()

    @property
    def counts(self) -> dict[str, int]:
        """Files per status, compared, and only on one side."""
        counts = {s.value: sum(f.status is s for f in self.files) for s in Status}
        return {**counts, "compared": len(self.files), "only_in_production": len(self.only_in_production),
                "only_in_candidate": len(self.only_in_candidate)}

    @property
    def passed(self) -> bool:
        """Both sides made the same, non-empty, set of files, each identical or within tolerance."""
        return (bool(self.files) and not self.only_in_production and not self.only_in_candidate
                and all(f.status is not Status.DIFFERENT for f in self.files))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the stored report)."""
        return {
            "passed": self.passed,
            "production_dir": str(self.production_dir),
            "candidate_dir": str(self.candidate_dir),
            "tolerances": self.tolerances.to_dict(),
            "counts": dict(self.counts),
            "only_in_production": list(self.only_in_production),
            "only_in_candidate": list(self.only_in_candidate),
            "files": [f.to_dict() for f in self.files],
        }

    def summary(self, max_lines: int = 12) -> str:
        """A few lines of text: the verdict, the counts, then what failed."""
        c = self.counts
        lines = [
            f"staging check {'PASSED' if self.passed else 'FAILED'}: {c['compared']} product(s) compared, "
            f"{c['identical']} identical, {c['within_tolerance']} within tolerance, {c['different']} different; "
            f"{c['only_in_production']} only in production, {c['only_in_candidate']} only in candidate"
        ]
        if not self.files and not self.only_in_production and not self.only_in_candidate:
            lines.append("no products on either side")
        details = [f"only in production: {n}" for n in self.only_in_production]
        details += [f"only in candidate: {n}" for n in self.only_in_candidate]
        for f in self.files:
            if f.status is Status.DIFFERENT:
                more = len(f.differences) - 1 + f.omitted
                first = str(f.differences[0]) if f.differences else "differs"
                details.append(f"{f.file_name}: {first}" + (f" (+{more} more)" if more else ""))
        if len(details) > max_lines - 1:
            details = [*details[: max_lines - 2], f"... {len(details) - (max_lines - 2)} more"]
        return "\n".join(lines + details)


def compare_products(production_dir: Path, candidate_dir: Path, tol: Tolerances | None = None) -> ComparisonReport:
    """Compare every product of ``candidate_dir`` with the same-named one of ``production_dir``."""
    tol = tol or Tolerances()
    production_dir, candidate_dir = Path(production_dir), Path(candidate_dir)
    prod, cand = _product_names(production_dir), _product_names(candidate_dir)
    results = tuple(_compare_file(production_dir / n, candidate_dir / n, tol) for n in sorted(prod & cand))
    return ComparisonReport(production_dir, candidate_dir, tol, results,
                            tuple(sorted(prod - cand)), tuple(sorted(cand - prod)))


def _product_names(directory: Path) -> set[str]:
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")
    return {p.name for p in directory.iterdir()
            if p.is_file() and p.name not in SKIPPED_NAMES and not p.name.endswith(SKIPPED_SUFFIXES)}


def _compare_file(production: Path, candidate: Path, tol: Tolerances) -> FileComparison:
    name = production.name
    lower = name.lower()
    if lower.endswith(FITS_SUFFIXES):
        kind, status, diffs = "fits", *_compare_fits(production, candidate, tol)
    elif lower.endswith(PNG_SUFFIXES):
        kind, status, diffs = "png", *_compare_png(production, candidate, tol)
    elif filecmp.cmp(production, candidate, shallow=False):
        kind, status, diffs = "file", Status.IDENTICAL, []
    else:
        kind, status, diffs = "file", Status.DIFFERENT, [Difference("file", "contents differ (byte comparison)")]
    return FileComparison(name, kind, status, tuple(diffs[:MAX_DIFFERENCES]), max(0, len(diffs) - MAX_DIFFERENCES))


# --------------------------------------------------------------------------- FITS


def _open_fits(path: Path, side: str) -> tuple[fits.HDUList | None, Difference | None]:
    """The whole file read into memory, or the reason it cannot be."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
            try:
                for hdu in hdul:
                    _ = hdu.data  # a truncated data unit fails here
            except Exception:
                hdul.close()
                raise
        truncated = [str(w.message) for w in caught if "truncated" in str(w.message)]
        if truncated:
            hdul.close()
            return None, Difference("file", f"{side} copy is not readable FITS: {truncated[0]}")
        return hdul, None
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError, VerifyError...
        return None, Difference("file", f"{side} copy is not readable FITS: {type(exc).__name__}: {exc}")


def _compare_fits(production: Path, candidate: Path, tol: Tolerances) -> tuple[Status, list[Difference]]:
    prod, prod_error = _open_fits(production, "production")
    cand, cand_error = _open_fits(candidate, "candidate")
    try:
        if prod is None or cand is None:
            return Status.DIFFERENT, [e for e in (prod_error, cand_error) if e is not None]
        exact = _fits_differences(prod, cand, tol, exact=True)
        if not exact:
            return Status.IDENTICAL, []
        if tol.rtol == 0 and tol.atol == 0:
            return Status.DIFFERENT, exact
        beyond = _fits_differences(prod, cand, tol, exact=False)
        return (Status.DIFFERENT, beyond) if beyond else (Status.WITHIN_TOLERANCE, exact)
    except Exception as exc:  # a malformed HDU astropy opened but cannot diff
        return Status.DIFFERENT, [Difference("file", f"comparison failed: {type(exc).__name__}: {exc}")]
    finally:
        for hdul in (prod, cand):
            if hdul is not None:
                hdul.close()


def _fits_differences(prod: fits.HDUList, cand: fits.HDUList, tol: Tolerances, *, exact: bool) -> list[Difference]:
    """FITSDiff's findings as Differences. FITSDiff's ``a`` is the candidate, ``b`` production (the reference)."""
    rtol, atol = (0.0, 0.0) if exact else (tol.rtol, tol.atol)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = fits.FITSDiff(cand, prod, ignore_keywords=list(tol.ignore_keywords), numdiffs=1, rtol=rtol, atol=atol)
    out: list[Difference] = []
    if diff.diff_hdu_count:
        out.append(Difference("file", f"{diff.diff_hdu_count[1]} HDUs in production, "
                                      f"{diff.diff_hdu_count[0]} in candidate"))
    for idx, hdu_diff, _extname, _extver in diff.diff_hdus:
        where = f"HDU {idx} {hdu_diff.b.name or '(no name)'}"
        out += _hdu_differences(hdu_diff, where, rtol, atol, exact)
    _unknown(diff, ("diff_hdu_count", "diff_hdus"), "file", out)
    return out


def _pair(name: str, diff_tuple: tuple[Any, Any]) -> Difference | None:
    """A (candidate, production) attribute pair as a Difference, or None when unset."""
    if not diff_tuple:
        return None
    return Difference(name, _vs(diff_tuple[1], diff_tuple[0]))


def _hdu_differences(hdu_diff: Any, where: str, rtol: float, atol: float, exact: bool) -> list[Difference]:
    out = [d for d in (_pair(f"{where} EXTNAME", hdu_diff.diff_extnames),
                       _pair(f"{where} EXTVER", hdu_diff.diff_extvers),
                       _pair(f"{where} EXTLEVEL", hdu_diff.diff_extlevels),
                       _pair(f"{where} XTENSION", hdu_diff.diff_extension_types)) if d]
    if hdu_diff.diff_headers is not None and not hdu_diff.diff_headers.identical:
        out += _header_differences(hdu_diff.diff_headers, where)
    data_diff = hdu_diff.diff_data
    if data_diff is not None and not data_diff.identical:
        if isinstance(data_diff, TableDataDiff):
            out += _table_differences(data_diff, hdu_diff.b.data, hdu_diff.a.data, where, rtol, atol, exact)
        elif isinstance(data_diff, RawDataDiff):
            out.append(Difference(f"{where} data", f"{data_diff.diff_total} byte(s) differ"
                                  if not data_diff.diff_dimensions else
                                  f"size {data_diff.diff_dimensions[1]} in production, "
                                  f"{data_diff.diff_dimensions[0]} in candidate"))
        else:
            out += _image_differences(data_diff, hdu_diff.b.data, hdu_diff.a.data, where, exact)
    known = ("diff_extnames", "diff_extvers", "diff_extlevels", "diff_extension_types", "diff_headers", "diff_data")
    _unknown(hdu_diff, known, where, out)
    return out


def _header_differences(header_diff: Any, where: str) -> list[Difference]:
    out = []
    cand_only, prod_only = header_diff.diff_keywords or ((), ())
    out += [Difference(f"{where} keyword {k}", "only in production") for k in prod_only]
    out += [Difference(f"{where} keyword {k}", "only in candidate") for k in cand_only]
    for key, (n_cand, n_prod) in sorted(header_diff.diff_duplicate_keywords.items()):
        out.append(Difference(f"{where} keyword {key}", f"{n_prod} card(s) in production, {n_cand} in candidate"))
    values, comments = header_diff.diff_keyword_values, header_diff.diff_keyword_comments
    for key in sorted(set(values) | set(comments)):
        for label, pairs in (("value", values.get(key, ())), ("comment", comments.get(key, ()))):
            for n, pair in enumerate(pairs):
                if pair is not None:
                    suffix = f"[{n + 1}]" if len(pairs) > 1 else ""
                    out.append(Difference(f"{where} keyword {key}{suffix}", f"{label} {_vs(pair[1], pair[0])}"))
    # A card count that differs with no keyword difference comes from ignored keywords present on one side only
    # (FITSDiff still counts them): not a difference.
    known = ("diff_keyword_count", "diff_keywords", "diff_duplicate_keywords", "diff_keyword_values",
             "diff_keyword_comments")
    _unknown(header_diff, known, f"{where} header", out)
    return out


def _image_differences(data_diff: Any, prod: np.ndarray, cand: np.ndarray, where: str,
                       exact: bool) -> list[Difference]:
    if data_diff.diff_dimensions:
        cand_shape, prod_shape = data_diff.diff_dimensions
        return [Difference(f"{where} data", f"shape {prod_shape} in production, {cand_shape} in candidate")]
    n = data_diff.diff_total
    what = (f"{n} of {prod.size} value(s) differ{'' if exact else ' beyond tolerance'} "
            f"({data_diff.diff_ratio:.2%}){_magnitude(prod, cand)}")
    if data_diff.diff_pixels:
        index, (c, p) = data_diff.diff_pixels[0]
        what += f"; first at {tuple(int(i) for i in index)}: production {_short(p)}, candidate {_short(c)}"
    return [Difference(f"{where} data", what)]


def _table_differences(data_diff: Any, prod: fits.FITS_rec, cand: fits.FITS_rec, where: str,
                       rtol: float, atol: float, exact: bool) -> list[Difference]:
    out = []
    if data_diff.diff_column_names:
        cand_only, prod_only = data_diff.diff_column_names
        out += [Difference(f"{where} column {c}", f"only in production (format {prod.columns[c].format})")
                for c in prod_only]
        out += [Difference(f"{where} column {c}", f"only in candidate (format {cand.columns[c].format})")
                for c in cand_only]
    elif data_diff.diff_column_count:
        out.append(Difference(where, f"{data_diff.diff_column_count[1]} columns in production, "
                                     f"{data_diff.diff_column_count[0]} in candidate"))
    for (column, attr), (c, p) in data_diff.diff_column_attributes:
        out.append(Difference(f"{where} column {column}", f"{attr} {_vs(p, c)}"))
    if data_diff.diff_rows:
        out.append(Difference(where, f"rows {_vs(data_diff.diff_rows[1], data_diff.diff_rows[0])}"))
    elif data_diff.diff_total:
        columns = _column_value_differences(data_diff, prod, cand, where, rtol, atol, exact)
        out += columns or [Difference(f"{where} data", f"{data_diff.diff_total} table value(s) differ")]
    known = ("diff_column_names", "diff_columns", "diff_column_count", "diff_column_attributes", "diff_rows",
             "diff_values", "diff_total", "diff_ratio")
    _unknown(data_diff, known, where, out)
    return out


def _column_value_differences(data_diff: Any, prod: fits.FITS_rec, cand: fits.FITS_rec, where: str,
                              rtol: float, atol: float, exact: bool) -> list[Difference]:
    """Per common column, the rows that differ (FITSDiff's own rule) and the size of the differences."""
    out = []
    for column in data_diff.common_columns:
        try:
            p, c = prod[column.name], cand[column.name]
            if np.issubdtype(p.dtype, np.floating) and np.issubdtype(c.dtype, np.floating):
                rows = np.unique(where_not_allclose(c, p, rtol=rtol, atol=atol)[0])
            elif p.dtype == object or c.dtype == object:  # variable-length arrays
                rows = np.array([i for i in range(len(p)) if not np.allclose(c[i], p[i], rtol=rtol, atol=atol)])
            else:
                rows = np.nonzero(np.asarray(c != p).reshape(len(p), -1).any(axis=1))[0]
        except Exception as exc:
            out.append(Difference(f"{where} column {column.name}", f"not comparable: {exc}"))
            continue
        if rows.size:
            first = int(rows[0])
            what = (f"{rows.size} of {len(p)} row(s) differ{'' if exact else ' beyond tolerance'}"
                    f"{_magnitude(p, c)}; first at row {first}: production {_short(p[first])}, "
                    f"candidate {_short(c[first])}")
            out.append(Difference(f"{where} column {column.name}", what))
    return out


def _magnitude(prod: Any, cand: Any) -> str:
    """``, max abs diff A, max rel diff R`` over the finite values of numeric arrays, else ``""``."""
    try:
        p, c = np.asarray(prod), np.asarray(cand)
        if not (np.issubdtype(p.dtype, np.number) and np.issubdtype(c.dtype, np.number)) or p.shape != c.shape:
            return ""
        p, c = p.astype(np.float64), c.astype(np.float64)  # no unsigned wrap-around
        finite = np.isfinite(p) & np.isfinite(c)
        mismatched = int(np.count_nonzero(np.isfinite(p) != np.isfinite(c)))
        note = f", {mismatched} NaN/Inf mismatch(es)" if mismatched else ""
        if not finite.any():
            return note
        delta, ref = np.abs(c - p)[finite], np.abs(p)[finite]
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(delta == 0, 0.0, delta / ref)
        return f", max abs diff {float(delta.max()):.6g}, max rel diff {float(rel.max()):.6g}{note}"
    except Exception:
        return ""


def _unknown(diff: Any, known: Iterable[str], where: str, out: list[Difference]) -> None:
    """Report any FITSDiff finding this module does not itemise, so nothing passes unnoticed."""
    for attr, value in vars(diff).items():
        if attr.startswith("diff_") and attr not in known and value:
            out.append(Difference(where, f"{attr.removeprefix('diff_').replace('_', ' ')}: {_short(value)}"))


def _vs(prod: Any, cand: Any) -> str:
    return f"{_short(prod)} in production, {_short(cand)} in candidate"


def _short(value: Any) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value) if isinstance(value, str) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= _MAX_VALUE_CHARS else text[: _MAX_VALUE_CHARS - 3] + "..."


# --------------------------------------------------------------------------- PNG


def _open_png(path: Path, side: str) -> tuple[Image.Image | None, Difference | None]:
    try:
        with Image.open(path) as img:
            img.load()
            if img.format != "PNG":
                raise ValueError(f"format is {img.format}, not PNG")
            return img.copy(), None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError...
        return None, Difference("file", f"{side} copy is not a readable PNG: {type(exc).__name__}: {exc}")


def _compare_png(production: Path, candidate: Path, tol: Tolerances) -> tuple[Status, list[Difference]]:
    """Pixels only (text chunks carry the processor version)."""
    prod, prod_error = _open_png(production, "production")
    cand, cand_error = _open_png(candidate, "candidate")
    if prod is None or cand is None:
        return Status.DIFFERENT, [e for e in (prod_error, cand_error) if e is not None]
    if (prod.mode, prod.size) != (cand.mode, cand.size):
        return Status.DIFFERENT, [Difference("image", f"mode {prod.mode} size {prod.size[0]}x{prod.size[1]} in "
                                                      f"production, mode {cand.mode} size {cand.size[0]}x"
                                                      f"{cand.size[1]} in candidate")]
    if prod.mode in ("P", "PA"):  # compare colours, not palette indices
        prod, cand = prod.convert("RGBA"), cand.convert("RGBA")
    p = np.asarray(prod, dtype=np.int64)
    c = np.asarray(cand, dtype=np.int64)
    delta = np.abs(c - p)
    worst = int(delta.max()) if delta.size else 0
    if worst == 0:
        return Status.IDENTICAL, []
    pixels = delta.reshape(p.shape[0], p.shape[1], -1).max(axis=2)
    beyond = worst > tol.png_max_abs_diff
    n = int(np.count_nonzero(pixels > tol.png_max_abs_diff)) if beyond else int(np.count_nonzero(pixels))
    what = (f"{n} of {pixels.size} pixel(s) differ{' by more than ' + str(tol.png_max_abs_diff) if beyond else ''}, "
            f"max abs diff {worst} (tolerance {tol.png_max_abs_diff})")
    return (Status.DIFFERENT if beyond else Status.WITHIN_TOLERANCE), [Difference("pixels", what)]
