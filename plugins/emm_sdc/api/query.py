"""Query parameters of the EMM API: parsed strictly, as the real clients send them.

The clients build query strings by concatenation (raw ``:`` and ``,``), one
starts them with ``?&``, and all forward unknown keywords verbatim. So: an
empty parameter is ignored, comma lists work for every list filter, an
unknown name is a 400 that lists the valid ones, and a malformed value is a
400 naming the parameter and the expected format.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, date, datetime
from typing import Any

from emm_sdc.core.naming import INSTRUMENTS, KERNEL_CLASSES, SAFE_NAME


class BadQuery(ValueError):
    """A parameter the API cannot accept (answered 400 with this message)."""


_LEVEL = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_MODE = re.compile(r"^[A-Za-z0-9]{1,16}$")
_LST = re.compile(r"^(\d{2}):(\d{2}):(\d{2})$")

#: Numeric range filters: API name -> (SQL parameter prefix, lowest, highest).
RANGES = {
    "mars_ls": ("ls", 0.0, 360.0),
    "sc_lat": ("lat", -90.0, 90.0),
    "sc_lon": ("lon", 0.0, 360.0),
    "sc_alt": ("alt", -1e4, 1e7),
    "subsolar_lat": ("sslat", -90.0, 90.0),
    "subsolar_lon": ("sslon", 0.0, 360.0),
}
FILTERS = (
    "instrument_id", "data_level", "mode", "pred_rec", "orbit_num", "latest",
    "start_date", "end_date", "start_sc_lst", "end_sc_lst",
    *[f"{edge}_{name}" for name in RANGES for edge in ("start", "end")],
)
#: ``file`` appears (empty) in the MATLAB client's parameter set; its meaning is unknown, so it is accepted
#: only empty.
IGNORED_EMPTY = ("file",)


def _split(name: str, value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise BadQuery(f"{name}: expected a value or a comma-separated list of values")
    return items


def _choice(name: str, value: str, allowed: Iterable[str]) -> list[str]:
    allowed = tuple(allowed)
    items = _split(name, value)
    bad = [v for v in items if v not in allowed]
    if bad:
        raise BadQuery(f"{name}: {', '.join(bad)} not among {', '.join(allowed)} (comma lists allowed)")
    return items


def _pattern(name: str, value: str, pattern: re.Pattern[str], what: str) -> list[str]:
    items = _split(name, value)
    bad = [v for v in items if not pattern.match(v)]
    if bad:
        raise BadQuery(f"{name}: {', '.join(bad[:3])} is not {what}")
    return items


def _number(name: str, value: str, lo: float, hi: float) -> float:
    try:
        x = float(value)
    except ValueError:
        raise BadQuery(f"{name}: expected a number, got {value!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi:
        raise BadQuery(f"{name}: expected a number from {lo:g} to {hi:g}, got {value!r}")
    return x


def _date(name: str, value: str) -> datetime:
    try:
        d = date.fromisoformat(value) if len(value) == 10 else None
    except ValueError:
        d = None
    if d is None:
        raise BadQuery(f"{name}: expected a date YYYY-MM-DD (UTC), got {value!r}")
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _lst(name: str, value: str) -> float:
    m = _LST.match(value)
    if not m or int(m[1]) > 24 or int(m[2]) > 59 or int(m[3]) > 59:
        raise BadQuery(f"{name}: expected a local solar time HH:MM:SS, got {value!r}")
    return int(m[1]) + int(m[2]) / 60 + int(m[3]) / 3600


def parse_items(items: Iterable[tuple[str, str]], *, allow_file_name: bool = False) -> dict[str, Any]:
    """The SQL parameters of ``api_science_files`` (minus visibility and limit) for a request's query."""
    valid = FILTERS + (("file_name",) if allow_file_name else ())
    raw: dict[str, str] = {}
    for key, value in items:
        if key == "" and value == "":
            continue  # "?&" of the MATLAB client
        if key in IGNORED_EMPTY and value == "":
            continue
        if key not in valid:
            shown = key if SAFE_NAME.match(key or "-") else repr(key[:40])
            raise BadQuery(f"unknown parameter {shown}; valid parameters: {', '.join(valid)}")
        if value.strip() == "":
            continue  # sent empty: not set
        raw[key] = value.strip()
    p: dict[str, Any] = {
        "instrument_ids": None, "data_levels": None, "modes": None, "pred_recs": None, "orbits": None,
        "file_names": None, "start_time": None, "end_time": None, "lst_lo": None, "lst_hi": None,
        **{f"{prefix}_{edge}": None for prefix, _, _ in RANGES.values() for edge in ("lo", "hi")},
    }
    if "instrument_id" in raw:
        p["instrument_ids"] = _choice("instrument_id", raw["instrument_id"], INSTRUMENTS)
    if "data_level" in raw:
        p["data_levels"] = _pattern("data_level", raw["data_level"], _LEVEL, "a data level such as l1, l2a, l2ql")
    if "mode" in raw:
        p["modes"] = _pattern("mode", raw["mode"], _MODE, "an observation mode such as xos1, os2, EMU035")
    if "pred_rec" in raw:
        p["pred_recs"] = _choice("pred_rec", raw["pred_rec"], KERNEL_CLASSES)
    if "orbit_num" in raw:
        try:
            p["orbits"] = [int(v) for v in _split("orbit_num", raw["orbit_num"])]
        except ValueError:
            raise BadQuery(f"orbit_num: expected an orbit number (integer), got {raw['orbit_num']!r}") from None
    latest = raw.get("latest", "true").lower()
    if latest not in ("true", "false"):
        raise BadQuery(f"latest: expected the string true or false, got {raw['latest']!r}")
    p["latest"] = latest == "true"
    if "start_date" in raw:
        p["start_time"] = _date("start_date", raw["start_date"])
    if "end_date" in raw:
        p["end_time"] = _date("end_date", raw["end_date"])  # exclusive: the day after the last one wanted
    if ("start_sc_lst" in raw) != ("end_sc_lst" in raw):
        raise BadQuery("start_sc_lst and end_sc_lst: give both (HH:MM:SS); a range may wrap past midnight")
    if "start_sc_lst" in raw:
        p["lst_lo"], p["lst_hi"] = _lst("start_sc_lst", raw["start_sc_lst"]), _lst("end_sc_lst", raw["end_sc_lst"])
    for name, (prefix, lo, hi) in RANGES.items():
        if f"start_{name}" in raw:
            p[f"{prefix}_lo"] = _number(f"start_{name}", raw[f"start_{name}"], lo, hi)
        if f"end_{name}" in raw:
            p[f"{prefix}_hi"] = _number(f"end_{name}", raw[f"end_{name}"], lo, hi)
    if "file_name" in raw:
        p["file_names"] = [raw["file_name"]]
        if not SAFE_NAME.match(raw["file_name"]):
            raise BadQuery("file_name: expected an EMM file name (letters, digits, '.', '_', '-')")
        p["latest"] = False  # a named file is served whatever its version
    return p


def has_filters(params: dict[str, Any]) -> bool:
    """Whether a download request selects by metadata (bulk) rather than by file name."""
    return params["file_names"] is None
