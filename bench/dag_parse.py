"""DAG-folder parse time vs importing ``airflow.sdk`` alone, measured in fresh interpreters.

Airflow re-parses DAG files continually, so their top level must stay cheap.
Prints, best of N fresh processes: the ``import airflow.sdk`` baseline, the time
DagBag spends parsing each of our DAG files (the first one also pays for
importing the emm_sdc package and the providers it uses), and the ratios.

Usage: ``./sdc bench`` or ``PYTHONPATH=plugins:devtools .venv/bin/python bench/dag_parse.py``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk  # noqa: F401
t1 = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1], safe_mode=False)
assert not bag.import_errors, bag.import_errors
print(json.dumps({"sdk": t1 - t0,
                  "files": {s.file: s.duration.total_seconds() for s in bag.dagbag_stats}}))
"""


def main(repeat: int = 5) -> None:
    home = tempfile.mkdtemp(prefix="emm-bench-airflow-")
    env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "PYTHONPATH": str(ROOT / "plugins")}
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT / "dags")], env=env, capture_output=True,
                             text=True, check=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    sdk = min(r["sdk"] for r in runs)
    files = {f: min(r["files"][f] for r in runs) for f in runs[0]["files"]}
    total = sum(files.values())
    print(f"import airflow.sdk (baseline): {sdk:.3f} s  (best of {repeat} fresh interpreters)")
    for f, secs in sorted(files.items(), key=lambda kv: -kv[1]):
        print(f"  parse {f:28} {secs:.3f} s  ratio {secs / sdk:.2f}")
    rest = total - max(files.values())
    print(f"whole DAG folder: {total:.3f} s  ratio {total / sdk:.2f}; "
          f"files after the first: {rest:.3f} s  ratio {rest / sdk:.2f}")


if __name__ == "__main__":
    main()
