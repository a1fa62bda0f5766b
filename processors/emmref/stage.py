#!/usr/bin/env python3
"""Container entrypoint that stages an SDC job in and out of S3, then runs the processor.

    python3 stage.py <processor command ...>

With local paths in ``EMM_INPUT_MANIFEST`` / ``EMM_OUTPUT_DIR`` (the ``docker``
and ``local`` runners) it simply runs the command. With ``s3://`` URIs (the
``batch`` runner) it downloads the manifest and every input into a scratch
directory, runs the command on local copies, and uploads every output, the
output manifest and ``job.log`` to ``EMM_OUTPUT_DIR`` — even when the
processor fails, so its log is kept. Exits with the processor's status.

Credentials come from the environment/instance role as usual for boto3;
``EMM_S3_ENDPOINT_URL`` points at an S3-compatible store outside AWS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def _split(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("EMM_S3_ENDPOINT_URL") or None)


def _run(command: list[str], env: dict[str, str], log_path: Path) -> int:
    with log_path.open("w") as log:
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        return proc.wait()


def _stage_kernels(s3: Any, mk_uri: str, root: Path) -> Path:
    """Download an SDC meta-kernel and every ``$KERNELS/...`` file it loads; point it at the copies.

    The kernels live beside the meta-kernel's ``mk/`` folder in the archive (``.../spice/<type>/<file>``).
    """
    bucket, key = _split(mk_uri)
    spice_prefix = key.rsplit("/mk/", 1)[0]
    text = s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    for rel in re.findall(r"'\$KERNELS/([^']+)'", text):
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, f"{spice_prefix}/{rel}", str(dest))
    text = re.sub(r"PATH_VALUES\s*=\s*\([^)]*\)", lambda _m: f"PATH_VALUES  = ( '{root}' )", text, count=1)
    local = root / Path(key).name
    local.write_text(text)
    return local


def staged(command: list[str]) -> int:
    """Stage in from S3, run, stage out to S3."""
    s3 = _client()
    manifest_uri = os.environ["EMM_INPUT_MANIFEST"]
    out_uri = os.environ["EMM_OUTPUT_DIR"].rstrip("/") + "/"
    scratch = Path(tempfile.mkdtemp(prefix="emm-job-"))
    inputs, outputs = scratch / "in", scratch / "out"
    inputs.mkdir()
    outputs.mkdir()
    bucket, key = _split(manifest_uri)
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    for entry in manifest["inputs"]:
        local = inputs / Path(entry["file_name"]).name
        b, k = _split(entry["path"])
        s3.download_file(b, k, str(local))
        entry["path"] = str(local)
    env = {**os.environ, "EMM_INPUT_MANIFEST": "", "EMM_OUTPUT_DIR": str(outputs)}
    mk_uri = os.environ.get("EMM_SPICE_METAKERNEL", "")
    if mk_uri.startswith("s3://"):
        local_mk = _stage_kernels(s3, mk_uri, scratch / "spice")
        manifest["spice_metakernel"] = env["EMM_SPICE_METAKERNEL"] = str(local_mk)
    local_manifest = scratch / "input_manifest.json"
    local_manifest.write_text(json.dumps(manifest, indent=2))
    env["EMM_INPUT_MANIFEST"] = str(local_manifest)
    log_path = scratch / "job.log"
    status = _run(command, env, log_path)
    out_bucket, out_prefix = _split(out_uri)
    for path in sorted(outputs.iterdir()):
        if path.is_file():
            s3.upload_file(str(path), out_bucket, out_prefix + path.name)
    s3.upload_file(str(log_path), out_bucket, out_prefix.rstrip("/").rsplit("/", 1)[0] + "/job.log")
    print(f"emm stage: exit {status}; outputs uploaded to {out_uri}", flush=True)
    return status


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: stage.py <processor command ...>", file=sys.stderr)
        return 2
    if os.environ.get("EMM_INPUT_MANIFEST", "").startswith("s3://"):
        return staged(argv)
    os.execvp(argv[0], argv)  # noqa: S606 (local paths: nothing to stage, become the processor)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
