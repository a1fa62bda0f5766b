"""Product geometry (the seven EMM API fields) for many timetags: vectorised SPICE vs scalar SPICE, same times.

``compute_geometry`` runs each SPICE routine over all times at once (spiceypy's compiled ``cyice`` ``*_v``
loops: ``deltet``, ``spkezp``, ``reclat``, ``recgeo``, ``subslr``, ``lspcn``). The baseline, measured in the
same run on the same kernels and times, is the plain scalar path the independent check in
``tests/unit/test_geometry.py`` uses: per time ``str2et``, ``subpnt`` (intercept and near point),
``reclat``, ``subslr``, ``et2lst`` and ``lspcn``. Prints the time ratio and the largest difference per
field (agreement required by the test: 1e-6 deg, 1e-3 km, 1 s; ``et2lst`` truncates to whole seconds,
so local solar time differs by 0-1 s).

``--old-rev REV`` also times the numpy re-implementation of SPICE's formulas that ``core/geometry.py``
held before (``git show REV:plugins/emm_sdc/core/{spice,geometry}.py``, e.g. ``--old-rev d8ffa52``), on the
same times, and prints its ratio and its difference from the vectorised path.

Kernels are the synthetic ones (``emm_dev.synthetic_spice``), written to a temporary directory.

Usage: ``PYTHONPATH=plugins:devtools .venv/bin/python bench/geometry_vs_loop.py [--n 100000] [--repeat 3]
[--old-rev REV]``
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import spiceypy

from emm_dev import synthetic_spice
from emm_sdc.core.geometry import FIELDS, compute_geometry
from emm_sdc.core.spice import kernel_pool

START = datetime(2021, 5, 23, tzinfo=UTC)
DAYS = 60
ROOT = Path(__file__).resolve().parent.parent
PERIOD = {"spacecraft_lst": 24.0, "mars_ls": 360.0, "subsolar_lon": 360.0, "spacecraft_lon": 360.0}


def best_of(n: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(n):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def scalar(meta_kernel: Path, times: list[datetime]) -> list[dict[str, float]]:
    """The seven fields with SPICE's scalar routines, one call per quantity per time."""
    rows = []
    with kernel_pool([meta_kernel]):
        for t in times:
            et = spiceypy.str2et(t.strftime("%Y-%m-%dT%H:%M:%S.%f"))
            _, lon, lat = spiceypy.reclat(spiceypy.subpnt("INTERCEPT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE",
                                                          "-62")[0])
            alt = math.dist(spiceypy.subpnt("NEAR POINT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE", "-62")[2],
                            (0.0, 0.0, 0.0))
            _, slon, slat = spiceypy.reclat(spiceypy.subslr("INTERCEPT/ELLIPSOID", "MARS", et, "IAU_MARS", "NONE",
                                                            "MARS")[0])
            hr, mn, sc = spiceypy.et2lst(et, 499, lon, "PLANETOCENTRIC")[:3]
            rows.append({
                "mars_ls": math.degrees(spiceypy.lspcn("MARS", et, "NONE")),
                "spacecraft_lst": hr + mn / 60 + sc / 3600,
                "subsolar_lat": math.degrees(slat), "subsolar_lon": math.degrees(slon) % 360,
                "spacecraft_lat": math.degrees(lat), "spacecraft_lon": math.degrees(lon) % 360,
                "spacecraft_alt": alt,
            })
    return rows


def differences(ours: list[dict], base: list[dict]) -> dict[str, np.ndarray]:
    """ours - base per field (angles wrapped to +-half a period)."""
    out = {}
    for f in FIELDS:
        d = np.array([a[f] for a in ours], dtype=float) - np.array([b[f] for b in base], dtype=float)
        if f in PERIOD:
            d = (d + PERIOD[f] / 2) % PERIOD[f] - PERIOD[f] / 2
        out[f] = d
    return out


def old_implementation(rev: str) -> ModuleType:
    """``core/geometry.py`` (with its ``core/spice.py``) as they were at git revision ``rev``."""
    modules = {}
    with tempfile.TemporaryDirectory(prefix="emm-old-geometry-") as tmp:
        for name in ("spice", "geometry"):
            src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:plugins/emm_sdc/core/{name}.py"],
                                 check=True, capture_output=True, text=True).stdout
            src = src.replace("from emm_sdc.core.spice import", "from emm_sdc.core._old_spice import")
            path = Path(tmp) / f"{name}.py"
            path.write_text(src)
            spec = importlib.util.spec_from_file_location(f"emm_sdc.core._old_{name}", path)
            assert spec and spec.loader
            modules[name] = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = modules[name]
            spec.loader.exec_module(modules[name])
    return modules["geometry"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline-repeat", type=int, default=1)
    ap.add_argument("--old-rev", help="also time core/geometry.py as it was at this git revision")
    args = ap.parse_args()
    old = old_implementation(args.old_rev) if args.old_rev else None
    with tempfile.TemporaryDirectory() as tmp:
        delivered = synthetic_spice.kernel_delivery(Path(tmp) / "inbox", start=START, end=START + timedelta(days=DAYS))
        mk = synthetic_spice.install_kernels(delivered, Path(tmp) / "kernels")
        step = timedelta(days=DAYS) / (args.n + 1)
        times = [START + step * (i + 1) for i in range(args.n)]

        ours_s, ours = best_of(args.repeat, lambda: compute_geometry(mk, times))
        base_s, base = best_of(args.baseline_repeat, lambda: scalar(mk, times))
        if old is not None:
            old_s, old_rows = best_of(args.repeat, lambda: old.compute_geometry(mk, times))
    diffs = differences(ours, base)

    per_k = 1000 / args.n
    print(f"{args.n} timetags over {DAYS} days; best of {args.repeat} (scalar baseline best of {args.baseline_repeat})")
    print(f"  scalar spiceypy routines (baseline)  {base_s:8.3f} s  {base_s * per_k * 1e3:8.2f} ms per 1,000  "
          "ratio 1.00")
    print(f"  compute_geometry (cyice *_v)         {ours_s:8.3f} s  {ours_s * per_k * 1e3:8.2f} ms per 1,000  "
          f"ratio {ours_s / base_s:.3f} ({base_s / ours_s:.1f}x faster)")
    if old is not None:
        print(f"  numpy formulas at {args.old_rev:<12s}       {old_s:8.3f} s  {old_s * per_k * 1e3:8.2f} ms per 1,000  "
              f"ratio {old_s / base_s:.3f}; vectorised SPICE / numpy formulas = {ours_s / old_s:.2f}")
    print("  agreement, vectorised - scalar (required: 1e-6 deg, 1e-3 km, 1 s):")
    for f, d in diffs.items():
        if f == "spacecraft_lst":
            s = d * 3600
            print(f"    {f:16s} {s.min():+.6f} .. {s.max():+.6f} s (et2lst truncates to whole seconds)")
        else:
            print(f"    {f:16s} max |d| {np.abs(d).max():.3e} {'km' if f == 'spacecraft_alt' else 'deg'}")
    if old is not None:
        print(f"  numpy formulas at {args.old_rev} - vectorised SPICE:")
        for f, d in differences(old_rows, ours).items():
            unit = "s" if f == "spacecraft_lst" else "km" if f == "spacecraft_alt" else "deg"
            print(f"    {f:16s} max |d| {np.abs(d).max() * (3600 if unit == 's' else 1):.3e} {unit}")


if __name__ == "__main__":
    main()
