"""Processing-run records: close a failed job's record and keep its processor log.

Shared by the processing tasks and the runner operators (local, docker, batch).
The archived log is the job's ``job.log`` followed by every ``*.log`` the
processor wrote into its output directory (regular files only, never followed).
"""

from __future__ import annotations

from datetime import UTC, datetime

from emm_sdc.core.catalog import Catalog
from emm_sdc.core.jobs import MAX_LOG_BYTES, JobSpec, output_entries, read_output
from emm_sdc.core.settings import get_settings
from emm_sdc.core.storage import LOG_ROOT, Storage


def _log_key(spec: JobSpec) -> str:
    now = datetime.now(UTC)
    return f"{LOG_ROOT}/{spec.instrument}/{spec.level}/{now:%Y/%m}/{spec.job_id}.log"


def job_log_text(spec: JobSpec) -> bytes | None:
    """``job.log`` and the processor's own ``out/*.log`` files, each under a header; None if there is none."""
    parts: list[bytes] = []
    if spec.log_path.is_file() and not spec.log_path.is_symlink():
        parts.append(spec.log_path.read_bytes()[-MAX_LOG_BYTES:])
    if spec.output_dir.is_dir() and not spec.output_dir.is_symlink():
        files, _ = output_entries(spec.output_dir)
        for name in sorted(n for n in files if n.endswith(".log")):
            body = read_output(spec.output_dir, name, MAX_LOG_BYTES)
            cut = b"\n[... cut at %d bytes]\n" % MAX_LOG_BYTES if files[name] > MAX_LOG_BYTES else b""
            parts.append(f"\n===== processor log out/{name} =====\n".encode() + body + cut)
    return b"".join(parts) if parts else None


def archive_log(storage: Storage, spec: JobSpec) -> str | None:
    """Store the job's log (with the processor's ``out/*.log``) next to the products; return its s3:// URI."""
    text = job_log_text(spec)
    if text is None:
        return None
    bucket = get_settings().archive_bucket
    key = _log_key(spec)
    storage.put_bytes(bucket, key, text, "text/plain")
    return f"s3://{bucket}/{key}"


def fail_run(cat: Catalog, storage: Storage, spec: JobSpec, exit_status: int | None, message: str) -> None:
    """Close the processing-run record as failed and keep the log."""
    uri = archive_log(storage, spec)
    assert spec.processing_run_id is not None
    cat.finish_run(spec.processing_run_id, status="failed", ended_at=datetime.now(UTC),
                   exit_status=exit_status, message=message[-4000:], log_uri=uri)


def fail_job(spec: JobSpec, exit_status: int | None, message: str) -> None:
    """:func:`fail_run` through the Airflow connections (for tasks and runner operators)."""
    from emm_sdc import connections

    if spec.processing_run_id is not None:
        fail_run(connections.catalog(), connections.storage(), spec, exit_status, message)
