"""Site settings shared by every instrument, read from ``EMM_*`` environment variables.

Secrets never live here: S3, PostgreSQL and image-registry credentials come from the
Airflow connections named by ``aws_conn_id``, ``catalog_conn_id`` and ``docker_conn_id``.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def project_root() -> Path:
    """The project folder (holds ``dags/``, ``include/``, ``plugins/``)."""
    env = os.environ.get("EMM_PROJECT_ROOT")
    return Path(env) if env else Path(__file__).resolve().parents[3]


@dataclass(frozen=True)
class Settings:
    inbox_bucket: str
    archive_bucket: str
    aws_conn_id: str
    catalog_conn_id: str
    work_dir: Path
    kernel_dir: Path
    environment: str
    spice_inbox_prefix: str = "inbox/spice/"
    #: Where the inbox's S3 event notifications queue (``<prefix>emm-sdc-inbox-<inst|spice>``), or None:
    #: then ingest waits on its cron schedule and a deferrable S3 sensor instead of S3 events.
    inbox_queue_url_prefix: str | None = None
    #: ``EMM_LAST_GOOD_DIR``: where the last valid copy of each ITF YAML and of ``sdc.yaml`` is kept
    #: (written by the ``emm_config_check`` DAG and ``./sdc check-config --accept``, read when DAG files
    #: are parsed). Default ``<project>/.sdc/last-good-configs`` (gitignored). In a deployment whose
    #: workers and DAG processor run on different machines it must be a volume they share.
    last_good_dir: Path = field(default_factory=lambda: project_root() / ".sdc" / "last-good-configs")
    #: ``EMM_DOCKER_CONN_ID``: the Airflow Docker connection the ``docker`` runner logs in with before it pulls
    #: (host = the registry, login and password): what a private registry needs. None: no login.
    docker_conn_id: str | None = None
    #: ``EMM_DOCKER_URL``: the Docker-API engine the ``docker`` runner talks to (e.g. ``unix:///run/docker.sock``,
    #: ``tcp://host:2376``). None: the docker provider's default (``DOCKER_HOST``, else the local socket).
    docker_url: str | None = None
    #: ``EMM_LANE_QUEUES``: ``on`` (default) sends each lane's tasks to its Celery queue (``emm_sdc.lanes.QUEUES``);
    #: ``off`` leaves every task on ``[operators] default_queue``, for executors whose workers cannot be started
    #: on other queues (Amazon MWAA). LocalExecutor ignores queues either way.
    lane_queues: bool = True

    @property
    def sql_dir(self) -> Path:
        return project_root() / "include" / "sql"


def _bucket(var: str, default: str) -> str:
    value = os.environ.get(var, default)
    if not _BUCKET.match(value):
        raise ValueError(f"{var}={value!r} is not a valid S3 bucket name")
    return value


@cache
def get_settings() -> Settings:
    """Settings from the environment (cached per process)."""
    env = os.environ.get("EMM_ENVIRONMENT", "production")
    if env not in ("production", "staging"):
        raise ValueError(f"EMM_ENVIRONMENT={env!r} must be 'production' or 'staging'")
    return Settings(
        inbox_bucket=_bucket("EMM_INBOX_BUCKET", "emm-sdc-inbox"),
        archive_bucket=_bucket("EMM_ARCHIVE_BUCKET", "emm-sdc-archive"),
        aws_conn_id=os.environ.get("EMM_AWS_CONN_ID", "emm_s3"),
        catalog_conn_id=os.environ.get("EMM_CATALOG_CONN_ID", "emm_catalog"),
        work_dir=Path(os.environ.get("EMM_WORK_DIR") or Path(tempfile.gettempdir()) / "emm-sdc-work"),
        kernel_dir=Path(os.environ.get("EMM_KERNEL_DIR") or Path(tempfile.gettempdir()) / "emm-sdc-kernels"),
        environment=env,
        last_good_dir=Path(os.environ.get("EMM_LAST_GOOD_DIR") or project_root() / ".sdc" / "last-good-configs"),
        inbox_queue_url_prefix=_queue_prefix(os.environ.get("EMM_INBOX_QUEUE_URL_PREFIX")),
        docker_conn_id=os.environ.get("EMM_DOCKER_CONN_ID") or None,
        docker_url=os.environ.get("EMM_DOCKER_URL") or None,
        lane_queues=_on_off("EMM_LANE_QUEUES", default=True),
    )


def _on_off(var: str, *, default: bool) -> bool:
    value = (os.environ.get(var) or "").strip().lower()
    if not value:
        return default
    if value not in ("on", "off"):
        raise ValueError(f"{var}={value!r} must be 'on' or 'off'")
    return value == "on"


def _queue_prefix(value: str | None) -> str | None:
    """``EMM_INBOX_QUEUE_URL_PREFIX``: an SQS queue URL without the queue name (ends in '/')."""
    if not value:
        return None
    if not re.match(r"^https?://[^/\s]+/[0-9]{12}/$", value):
        raise ValueError(f"EMM_INBOX_QUEUE_URL_PREFIX={value!r} must look like "
                         "https://sqs.<region>.amazonaws.com/<12-digit account>/ (an SQS queue URL without its name)")
    return value
