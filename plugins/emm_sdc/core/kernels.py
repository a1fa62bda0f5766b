"""SPICE kernel file names (SDC convention), archive keys and versioned meta-kernels.

The MOC's kernel names are not public, so the SDC defines them (docs/spice.md):

* Hope trajectory and attitude, with class and coverage::

      emm_<spk|ck>_<p|r|f>_<YYYYMMDD>_<YYYYMMDD>_v<NN>.<bsp|bc>

  ``p`` predicted, ``r`` reconstructed, ``f`` final; the dates are the first
  and last UTC day the kernel covers for Hope (SPK body -62, CK frame -62000).
* Generic kernels, with a descriptor::

      emm_<lsk|pck|fk|ik|sclk|pln>_<descriptor>_v<NN>.<ext>

  (``pln`` = planetary ephemeris SPK, e.g. ``emm_pln_de421_v01.bsp``).
* Meta-kernels the SDC writes: ``emm_meta_v<NNNN>.tm``.

Meta-kernels load generic kernels first, then Hope kernels ordered so that a
better class and a newer version load later, which is the one SPICE uses
where coverage overlaps: ``p`` < ``r`` < ``f``, then version.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

from emm_sdc.core.naming import NameProblem

HOPE_ID: Final = -62
HOPE_CK_FRAME: Final = -62000
MARS_ID: Final = 499
SPICE_ROOT: Final = "emm/spice"
META_PREFIX: Final = "emm_meta_v"

TIME_BOUND: Final = {"spk": ".bsp", "ck": ".bc"}
GENERIC: Final = {"lsk": (".tls",), "pck": (".tpc", ".bpc"), "fk": (".tf",), "ik": (".ti",), "sclk": (".tsc",),
                  "pln": (".bsp",)}
CLASS_ORDER: Final = {"p": 1, "r": 2, "f": 3}
GENERIC_ORDER: Final = ("lsk", "pck", "fk", "ik", "sclk", "pln")

_TIMED = re.compile(
    r"^emm_(?P<type>[a-z]+)_(?P<cls>[a-z])_(?P<start>\d{8})_(?P<end>\d{8})_v(?P<v>\d{2})(?P<ext>\.[a-z]+)$")
_GENERIC = re.compile(r"^emm_(?P<type>[a-z]+)_(?P<desc>[a-z0-9]{1,20})_v(?P<v>\d{2})(?P<ext>\.[a-z]+)$")
_META = re.compile(r"^emm_meta_v(?P<v>\d{4})\.tm$")


class InvalidKernelNameError(ValueError):
    def __init__(self, file_name: str, problems: list[NameProblem]):
        self.file_name = file_name
        self.problems = problems
        super().__init__(f"{file_name!r} is not a valid EMM kernel name: " + "; ".join(map(str, problems)))


@dataclass(frozen=True)
class KernelName:
    """A parsed, valid kernel name."""

    kernel_type: str
    kernel_class: str  # p/r/f for Hope SPK/CK, n for generic kernels
    version: int
    extension: str
    start: date | None = None
    end: date | None = None
    descriptor: str | None = None

    @property
    def file_name(self) -> str:
        if self.start is not None and self.end is not None:
            return (f"emm_{self.kernel_type}_{self.kernel_class}_{self.start:%Y%m%d}_{self.end:%Y%m%d}"
                    f"_v{self.version:02d}{self.extension}")
        return f"emm_{self.kernel_type}_{self.descriptor}_v{self.version:02d}{self.extension}"

    @property
    def archive_key(self) -> str:
        return f"{SPICE_ROOT}/{self.kernel_type}/{self.file_name}"

    @property
    def relative_path(self) -> str:
        """Path under the kernel directory (and under ``emm/spice/`` in the archive)."""
        return f"{self.kernel_type}/{self.file_name}"

    @property
    def series(self) -> tuple[str, ...]:
        """Kernels of one series differ only in version; a newer version supersedes older ones."""
        if self.start is not None:
            return (self.kernel_type, self.kernel_class, f"{self.start:%Y%m%d}", f"{self.end:%Y%m%d}")
        return (self.kernel_type, self.descriptor or "")

    @property
    def is_hope(self) -> bool:
        return self.kernel_type in TIME_BOUND


def parse_kernel_name(file_name: str) -> KernelName:
    """Parse a kernel name or raise :class:`InvalidKernelNameError` listing every problem."""
    problems: list[NameProblem] = []

    def bad(rule: str, fld: str, value: str, message: str) -> None:
        problems.append(NameProblem(rule, fld, value, message))

    m = _TIMED.match(file_name)
    if m and m["type"] in TIME_BOUND:
        ktype, cls = m["type"], m["cls"]
        if cls not in CLASS_ORDER:
            bad("kernel-class", "class", cls, "Hope kernels are class p (predicted), r (reconstructed) or f (final)")
        dates: list[date] = []
        for fld in ("start", "end"):
            try:
                dates.append(datetime.strptime(m[fld], "%Y%m%d").date())
            except ValueError:
                bad("kernel-date", fld, m[fld], "coverage dates are real UTC days, YYYYMMDD")
        if len(dates) == 2 and dates[1] < dates[0]:
            bad("kernel-window", "end", m["end"], "coverage end is before its start")
        if m["ext"] != TIME_BOUND[ktype]:
            bad("kernel-extension", "extension", m["ext"], f"{ktype} kernels use {TIME_BOUND[ktype]}")
        if problems:
            raise InvalidKernelNameError(file_name, problems)
        return KernelName(ktype, cls, int(m["v"]), m["ext"], dates[0], dates[1])
    g = _GENERIC.match(file_name)
    if g and g["type"] in GENERIC:
        if g["ext"] not in GENERIC[g["type"]]:
            bad("kernel-extension", "extension", g["ext"], f"{g['type']} kernels use {' or '.join(GENERIC[g['type']])}")
            raise InvalidKernelNameError(file_name, problems)
        return KernelName(g["type"], "n", int(g["v"]), g["ext"], descriptor=g["desc"])
    kinds = ", ".join([*TIME_BOUND, *GENERIC])
    bad("kernel-structure", "file_name", file_name,
        "expected emm_<spk|ck>_<p|r|f>_<YYYYMMDD>_<YYYYMMDD>_v<NN>.<bsp|bc> or "
        f"emm_<type>_<descriptor>_v<NN>.<ext> with type one of {kinds}")
    raise InvalidKernelNameError(file_name, problems)


def is_kernel_name(file_name: str) -> bool:
    try:
        parse_kernel_name(file_name)
    except InvalidKernelNameError:
        return False
    return True


def load_order(kernels: Iterable[KernelName]) -> list[KernelName]:
    """Furnsh order: generic kernels, then Hope kernels with better class and newer version last.

    Superseded kernels (an older version of a series present in the list) are left out.
    """
    newest: dict[tuple[str, ...], KernelName] = {}
    for k in kernels:
        if k.series not in newest or k.version > newest[k.series].version:
            newest[k.series] = k
    chosen = list(newest.values())
    generic = sorted((k for k in chosen if not k.is_hope),
                     key=lambda k: (GENERIC_ORDER.index(k.kernel_type), k.descriptor or "", k.version))
    hope = sorted((k for k in chosen if k.is_hope),
                  key=lambda k: (k.kernel_type != "spk", CLASS_ORDER[k.kernel_class], k.version, k.start))
    return generic + hope


def meta_kernel_name(version: int) -> str:
    return f"{META_PREFIX}{version:04d}.tm"


def meta_kernel_text(version: int, kernels: Iterable[KernelName], root: str, *, note: str = "") -> str:
    """A SPICE text meta-kernel; paths go through the ``$KERNELS`` symbol so each runner can point it
    at its own copy of the kernel directory (see :func:`rebase_meta_kernel`)."""
    lines = ["KPL/MK", "", f"EMM SDC meta-kernel {meta_kernel_name(version)}."]
    if note:
        lines.append(note)
    lines += ["Later entries win where coverage overlaps: p < r < f, then newer versions.", "", "\\begindata", "",
              f"   {path_values(root)}", "   PATH_SYMBOLS = ( 'KERNELS' )", "", "   KERNELS_TO_LOAD = ("]
    lines += [f"      '$KERNELS/{k.relative_path}'" for k in load_order(kernels)]
    lines += ["   )", "", "\\begintext", ""]
    return "\n".join(lines)


_PATH_VALUES = re.compile(r"PATH_VALUES\s*=\s*\([^)]*\)")
#: SPICE keeps 80 characters of a kernel-pool string; longer values continue with a trailing '+'.
_SPICE_STRING = 78


def path_values(root: str) -> str:
    """``PATH_VALUES = ( ... )`` for ``root``, split into continued strings when it is long."""
    if len(root) > 250:
        raise ValueError(f"kernel directory path is too long for SPICE (255 characters with file names): {root}")
    chunks = [root[i : i + _SPICE_STRING] for i in range(0, len(root), _SPICE_STRING)] or [""]
    quoted = [f"'{c}+'" for c in chunks[:-1]] + [f"'{chunks[-1]}'"]
    return "PATH_VALUES  = ( " + "\n                    ".join(quoted) + " )"


def rebase_meta_kernel(text: str, root: str) -> str:
    """The same meta-kernel with its kernel directory moved to ``root`` (a container mount, a scratch dir)."""
    if not _PATH_VALUES.search(text):
        raise ValueError("not an SDC meta-kernel: no PATH_VALUES assignment")
    return _PATH_VALUES.sub(lambda _m: path_values(root), text, count=1)


def meta_kernel_entries(text: str) -> list[str]:
    """The ``$KERNELS/...`` relative paths a meta-kernel loads."""
    return re.findall(r"'\$KERNELS/([^']+)'", text)
