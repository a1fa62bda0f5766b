"""After kernels arrive: a new versioned meta-kernel, and the products that better kernels now cover.

No Airflow here; ``pipeline/spice.py`` calls these from the ``emm_spice_refresh`` DAG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emm_sdc.core import coverage, kernels
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import ItfConfig
from emm_sdc.core.naming import KERNEL_QUALITY
from emm_sdc.core.storage import Storage


def write_meta_kernel(cat: Catalog, storage: Storage, kernel_dir: Path, bucket: str, run_id: str) -> dict[str, Any]:
    """Write the next meta-kernel version over every active kernel; store it in the archive and kernel dir."""
    active = cat.active_kernels()
    names = [kernels.parse_kernel_name(r["file_name"]) for r in active]
    latest = cat.latest_meta_kernel()
    version = latest["version"] + 1 if latest else 1
    file_name = kernels.meta_kernel_name(version)
    text = kernels.meta_kernel_text(version, names, str(kernel_dir), note=f"Written by {run_id}.")
    dest = kernel_dir / "mk" / file_name
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{file_name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, dest)
    key = f"{kernels.SPICE_ROOT}/mk/{file_name}"
    storage.put_bytes(bucket, key, text.encode(), "text/plain")
    loaded = kernels.meta_kernel_entries(text)
    mk_id = cat.add_meta_kernel(version=version, file_name=file_name, s3_key=key, kernels_json=json.dumps(loaded),
                                dag_run_id=run_id)
    return {"id": mk_id, "version": version, "file_name": file_name, "path": str(dest), "kernels": loaded}


def reprocessing_plan(cat: Catalog, configs: Mapping[str, ItfConfig], run_id: str) -> list[dict[str, Any]]:
    """Per instrument: L0 files whose SPICE-using products a better class now covers for the first time.

    Only time newly covered at ``r`` or ``f`` (compared with the coverage before
    this run's kernels) counts, so a growing kernel triggers only on its new
    part and an identical re-delivery triggers nothing.
    """
    rows = cat.hope_coverage_history()
    new_files = {r["file_name"] for r in rows if r["dag_run_id"] == run_id}
    before = coverage.by_class(r for r in rows if r["dag_run_id"] != run_id)
    after = coverage.by_class(r for r in rows if r["superseded_by"] is None)
    fresh = coverage.newly_covered(before, after)
    plans = []
    for inst, cfg in configs.items():
        levels = [s.level for s in cfg.processing.chain if s.uses_spice]
        if not levels:
            continue
        product_ids: set[int] = set()
        upgraded: list[str] = []
        for cls, spans in fresh.items():
            worse = [c for c, q in KERNEL_QUALITY.items() if q < KERNEL_QUALITY[cls]]
            for start, end in spans:
                found = cat.products_to_upgrade(inst, levels, worse, start, end)
                product_ids |= {r["id"] for r in found}
                upgraded += [f"{r['file_name']} ({r['pred_rec']} -> {cls})" for r in found]
        if not product_ids:
            continue
        roots = cat.l0_roots(sorted(product_ids))
        spans_text = "; ".join(f"{cls}: " + ", ".join(f"{s:%Y-%m-%dT%H:%M}..{e:%Y-%m-%dT%H:%M}" for s, e in spans)
                               for cls, spans in fresh.items() if spans)
        plans.append({
            "instrument": inst, "files": roots, "levels": levels, "products": sorted(upgraded),
            "reason": f"better SPICE kernels ({', '.join(sorted(new_files))}) newly cover {spans_text}; "
                      f"{len(product_ids)} product(s) were made with worse kernels",
        })
    return plans


def sync_kernel_dir(storage: Storage, bucket: str, kernel_dir: Path, meta_kernel: Mapping[str, Any]) -> Path:
    """Make sure a meta-kernel and every kernel it loads are in this worker's kernel directory.

    The kernel directory is normally shared; a worker that lacks a file fetches it from
    the archive (``emm/spice/<relative path>``). Returns the meta-kernel's local path.
    """
    path = kernel_dir / "mk" / meta_kernel["file_name"]
    if not path.exists():
        storage.download(bucket, meta_kernel["s3_key"], path)
        path.write_text(kernels.rebase_meta_kernel(path.read_text(), str(kernel_dir)))
    for rel in kernels.meta_kernel_entries(path.read_text()):
        local = kernel_dir / rel
        if not local.exists():
            storage.download(bucket, f"{kernels.SPICE_ROOT}/{rel}", local)
    return path
