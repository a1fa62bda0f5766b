"""``./sdc demo``'s last step: one real run of ``emm_integrity_reconcile`` (dag.test), its findings printed.

Run in its own process by the demo (``python -m emm_dev.reconcile_demo <log dir>``) so Airflow's output goes
to a log file and the findings to the terminal.
"""

from __future__ import annotations

import os
import sys

from emm_sdc import connections
from emm_sdc.core import reconcile as rc
from emm_sdc.pipeline.reconcile import DAG_ID, build_reconcile_dag


def demo(log_dir: str) -> int:
    """``./sdc demo``'s last step: one real run of the DAG (dag.test), then its findings printed."""
    from pathlib import Path

    out = Path(log_dir) / f"{DAG_ID}.log"
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with out.open("w") as fh:  # Airflow's run output goes to the log file; the findings to the terminal
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            state = build_reconcile_dag().test().state
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    cat = connections.catalog()
    last = cat.last_reconciliation(DAG_ID)
    if last is None:
        print(f"      the reconciliation did not finish (state {state}); see {out}")
        return 1
    summary = rc.summarize(cat, last["id"])
    print(f"      {DAG_ID}: run {state} (red on any error finding); {summary.total} finding(s) over "
          f"{summary.stats.get('objects', 0)} objects, {summary.stats.get('verified_objects', 0)} re-read; "
          f"log {out}")
    for f in cat.reconciliation_findings(last["id"]):
        print(f"      [{f['severity']}] {f['kind']}: {f['s3_key']}\n          expected {f['expected']}\n"
              f"          found    {f['found']}\n          action   {f['action'][:160]}...")
    return 0


if __name__ == "__main__":  # python -m emm_dev.reconcile_demo <log dir>
    sys.exit(demo(sys.argv[1]) if len(sys.argv) == 2 else 2)
