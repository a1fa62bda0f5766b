"""The images' stage entrypoint (processors/emmref/stage.py) staging a job through moto's S3."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from emm_dev import synthetic
from emm_sdc.core.jobs import JobInput, JobSpec
from emm_sdc.core.storage import Storage
from emm_sdc.runners.batch import batch_environment, fetch_outputs, stage_inputs

ROOT = Path(__file__).resolve().parents[2]


#: stage.py running the EMIRS processor through the launcher (in an image: python3 /opt/emm/processor.py)
COMMAND = [sys.executable, str(ROOT / "processors/emmref/stage.py"), sys.executable, str(ROOT / "processors/launch.py"),
           str(ROOT / "processors/emirs/processor.py")]


def test_stage_in_run_stage_out(buckets: dict[str, str], s3_client: Any, s3_server: Any, tmp_path: Path) -> None:
    l0 = next(f for f in synthetic.generate(tmp_path / "moc", orbits=(11,), instruments=("emr",)) if f.level == "l0")
    spec = JobSpec(job_id="stage-test", instrument="emr", level="l1", work_unit="orbit-0011",
                   workdir=str(tmp_path / "job"), version=1, revision=0, kernel_class="n",
                   inputs=[JobInput(l0.file_name, "k", l0.md5, "l0")], runner="batch")
    spec.input_dir.mkdir(parents=True)
    (spec.input_dir / l0.file_name).write_bytes(l0.path.read_bytes())
    storage = Storage(s3_client)
    spec.s3_prefix = stage_inputs(storage, spec, buckets["archive"])
    env = {**os.environ, **batch_environment(spec, s3_server.endpoint),
           "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}
    proc = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    fetch_outputs(storage, spec)
    manifest = json.loads((spec.output_dir / "output_manifest.json").read_text())
    [product] = manifest["products"]
    assert (spec.output_dir / product["file_name"]).stat().st_size > 0
    assert product["inputs"] == [l0.file_name]
    assert "wrote output_manifest.json" in spec.log_path.read_text()

    env["EMM_REF_FAIL"] = "crash"
    proc = subprocess.run(COMMAND, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    fetch_outputs(storage, spec)
    assert "EMM_REF_FAIL=crash" in spec.log_path.read_text()  # the log of a failed job is kept
