"""EMM product names, as the ITF writes them (parse input names, format product names).

``emm_<inst>_<level>_<YYYYMMDD>T<hhmmss>_<orbit>[_<mode>][_<descriptor>]_<kernel>_v<VV>-<RR>.<ext>``

The ITF owns its own copy of the standard: EXI writes an upper-case ``T`` in the
timestamp, EMUS and EMIRS a lower-case ``t``, as on real EMM products.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime

TIME_SEPARATOR = {"exi": "T", "emu": "t", "emr": "t"}
KERNEL_CLASSES = ("n", "p", "r", "f")

_NAME = re.compile(
    r"^emm_(?P<inst>exi|emu|emr)_(?P<level>[a-z0-9]+)_(?P<date>\d{8})(?P<sep>[Tt])(?P<time>\d{6})"
    r"_(?P<orbit>\d{4})(?P<extra>(?:_[A-Za-z0-9]+){0,2})_(?P<kernel>[nprf])"
    r"_v(?P<version>\d{2})-(?P<revision>\d{2})(?P<ext>\.[a-z]+(?:\.gz)?)$"
)


@dataclasses.dataclass(frozen=True)
class ProductName:
    """The fields of an EMM file name."""

    instrument: str
    level: str
    start: datetime
    orbit: int
    mode: str | None
    descriptor: str | None
    kernel: str
    version: int
    revision: int
    extension: str
    separator: str = "T"

    def format(self) -> str:
        """The file name; raises ValueError when a field cannot be written in the standard."""
        if not 0 <= self.orbit <= 9999:
            raise ValueError(f"orbit {self.orbit} does not fit the 4-digit orbit field")
        if not (0 <= self.version <= 99 and 0 <= self.revision <= 99):
            raise ValueError(f"version {self.version}-{self.revision} does not fit v<VV>-<RR>")
        if self.kernel not in KERNEL_CLASSES:
            raise ValueError(f"kernel class {self.kernel!r} is not one of {KERNEL_CLASSES}")
        stamp = self.start.astimezone(UTC).strftime(f"%Y%m%d{self.separator}%H%M%S")
        parts = ["emm", self.instrument, self.level, stamp, f"{self.orbit:04d}"]
        parts += [p for p in (self.mode, self.descriptor) if p]
        parts += [self.kernel, f"v{self.version:02d}-{self.revision:02d}"]
        return "_".join(parts) + self.extension

    def derive(self, **changes: object) -> ProductName:
        """A copy with some fields changed (e.g. the level of a product made from this file)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def parse(file_name: str) -> ProductName:
    """Split an EMM name into its fields; raises ValueError when it has not the standard's shape."""
    m = _NAME.match(file_name)
    if not m:
        raise ValueError(f"{file_name!r} is not an EMM file name")
    extra = [t for t in m["extra"].split("_") if t]
    if (m["inst"] == "emr" or m["level"] == "hk") and extra:
        raise ValueError(f"{file_name!r}: EMIRS and housekeeping names carry no mode or descriptor")
    try:
        start = datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{file_name!r}: timestamp is not a real date and time") from None
    return ProductName(
        instrument=m["inst"],
        level=m["level"],
        start=start,
        orbit=int(m["orbit"]),
        mode=extra[0] if extra else None,
        descriptor=extra[1] if len(extra) > 1 else None,
        kernel=m["kernel"],
        version=int(m["version"]),
        revision=int(m["revision"]),
        extension=m["ext"],
        separator=m["sep"],
    )


def broken(file_name: str) -> str:
    """A deliberately non-standard variant of a name (3-digit orbit), for the ``bad-name`` test hook."""
    tokens = file_name.split("_")
    tokens[4] = tokens[4][1:]
    return "_".join(tokens)
