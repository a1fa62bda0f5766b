"""Processing-run records: close a failed job's record and keep its processor log.

Shared by the processing tasks and the runner operators (local, docker, batch).
"""

from __future__ import annotations

from datetime import UTC, datetime

from emm_sdc.core.catalog import Catalog
from emm_sdc.core.jobs import JobSpec
from emm_sdc.core.settings import get_settings
from emm_sdc.core.storage import LOG_ROOT, Storage


def _log_key(spec: JobSpec) -> str:
    now = datetime.now(UTC)
    return f"{LOG_ROOT}/{spec.instrument}/{spec.level}/{now:%Y/%m}/{spec.job_id}.log"


def archive_log(storage: Storage, spec: JobSpec) -> str | None:
    """Store the job's processor log next to the products; return its s3:// URI."""
    if not spec.log_path.exists():
        return None
    bucket = get_settings().archive_bucket
    key = _log_key(spec)
    storage.put_bytes(bucket, key, spec.log_path.read_bytes(), "text/plain")
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
