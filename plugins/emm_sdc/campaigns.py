"""What operators ask about reprocessing: campaigns, the impact of a file, and the backfill to run next.

``./sdc campaigns`` lists campaign records (who, why, range, levels, image,
calibration, counts, timings, status); ``./sdc impact <file>`` lists
everything made from a file, transitively, and which latest products are
stale; :func:`backfill_command` prints the exact ``airflow backfill create``
that reprocesses what an image promotion, a calibration version or a
``product_version`` bump affects.
"""

from __future__ import annotations

import json
import shlex
from datetime import timedelta
from typing import Any

from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import ItfConfig


def backfill_command(cat: Catalog, cfg: ItfConfig, reason: str, *, from_level: str | None = None,
                     campaign: str | None = None) -> str | None:
    """The ``airflow backfill create`` over every day with this instrument's L0 (None when there is none)."""
    span = cat.observation_range(cfg.instrument)
    if not span["files"]:
        return None
    conf: dict[str, Any] = {"reason": reason}
    if from_level:
        conf["from_level"] = from_level
    if campaign:
        conf["campaign"] = campaign
    return (f"airflow backfill create --dag-id emm_{cfg.instrument}_reprocess "
            f"--from-date {span['first']:%Y-%m-%d} --to-date {span['last']:%Y-%m-%d} "
            f"--max-active-runs {cfg.airflow.reprocess_max_active_runs} "
            f"--dag-run-conf {shlex.quote(json.dumps(conf))}")


def suggestions(cat: Catalog, cfg: ItfConfig) -> list[str]:
    """The backfill a ``product_version`` bump calls for: from the first chain level whose latest products are
    older than the YAML's version (the cascade remakes what is made from it)."""
    want = cfg.processing.product_version
    old = {r["data_level"]: r for r in cat.product_versions_in_use(cfg.instrument)
           if r["version"] < want}
    first = next((s.level for s in cfg.processing.chain if s.level in old), None)
    if first is None:
        return []
    cmd = backfill_command(cat, cfg, f"product_version {old[first]['version']:02d} -> {want:02d}", from_level=first)
    levels = ", ".join(f"{lvl} ({r['files']} at v{r['version']:02d})" for lvl, r in sorted(old.items()))
    return [f"{cfg.instrument}: the YAML makes v{want:02d}; latest products older: {levels}:\n    {cmd}"]


def format_campaign(c: dict[str, Any]) -> str:
    """One campaign as the operator reads it."""
    took = (c["ended_at"] - c["started_at"]) if c["ended_at"] and c["started_at"] else None
    rng = (f"{c['range_start']:%Y-%m-%d}..{c['range_end'] - timedelta(seconds=1):%Y-%m-%d}"
           if c["range_start"] and c["range_end"] else "given files")
    flags = ", ".join(f for f, on in (("forced", c["force"]), ("dry run", c["dry_run"])) if on)
    return (f"{c['campaign_key']}  [{c['status']}]  {c['kind']} by {c['requested_by'] or '?'}: {c['reason']}\n"
            f"    range {rng} in {c['runs']} run(s); levels {', '.join(c['levels'])}{'; ' + flags if flags else ''}\n"
            f"    processor {c['processor']}; image {c['image'] or '-'}; calibration {c['calibration'] or '-'}\n"
            f"    inputs {c['inputs']}: remade {c['remade']}, skipped {c['skipped']} (nothing changed), "
            f"failed {c['failed']}; started {c['started_at']:%Y-%m-%d %H:%M:%S}"
            + (f", took {took.total_seconds():.0f} s" if took else ""))


def impact(cat: Catalog, file_name: str) -> dict[str, Any]:
    """Everything made from ``file_name`` (transitively) and which latest products are stale."""
    rows = cat.impact_of_file(file_name)
    return {
        "file": file_name,
        "descendants": [{k: r[k] for k in ("file_name", "data_level", "depth", "superseded", "stale")} for r in rows],
        "stale_latest": [r["file_name"] for r in rows if r["stale"] and not r["superseded"]],
    }
