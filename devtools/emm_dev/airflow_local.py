"""Real Airflow on the embedded services, for end-to-end tests and benchmarks.

:class:`AirflowLocal` starts what a deployment runs, each as its own ``airflow``
process: ``api-server`` (REST API, UI and the Execution API the tasks talk
to), ``scheduler`` (LocalExecutor, ``parallelism`` worker slots),
``dag-processor`` and ``triggerer`` (with ``executor="celery"``: CeleryExecutor,
Debian's ``redis-server`` as broker and ``celery_workers`` ``airflow celery worker``
processes serving the default and lane queues), on the embedded S3 and PostgreSQL of
``./sdc standalone`` (:class:`emm_dev.cli.Services`), which runs this class
too. Airflow's metadata database is the embedded PostgreSQL's ``airflow``
database through psycopg2 (:meth:`emm_dev.embedded.EmbeddedPostgres.sqlalchemy_url`);
the DAGs folder is the project's ``dags/``, examples are off and DAGs start
unpaused. The lane pools (:func:`emm_sdc.lanes.ensure_pools`) are created
before the scheduler starts. Every ``AIRFLOW__*`` setting the components run
with is also written to ``<state>/airflow/airflow.cfg``, so the plain
``airflow`` CLI with that ``AIRFLOW_HOME`` sees the same instance.

Readiness is waited for, not slept for: the API server's health endpoint
reports a healthy metadata database, scheduler, triggerer and DAG processor,
the UI answers, and the DAGs asked for are in the metadata database (or,
with ``dags=None``, every file of the DAGs folder has been parsed). Each
component logs to ``<state>/logs/<component>.log``. Everything runs in one
process group that :meth:`AirflowLocal.stop` terminates before it stops the
services::

    with AirflowLocal(tmp / "airflow-local") as af:
        run_id = af.trigger("emm_catalog_migrate")
        assert af.wait_for_run("emm_catalog_migrate", run_id) == "success"

The REST API is reached as the simple auth manager's ``admin`` user (a token
from ``/auth/token``; the API server listens on 127.0.0.1 unless ``host`` says otherwise).
With ``fresh=False`` and ``persist=True`` (``./sdc standalone``) the state dir is kept
across starts: catalog, archive, run history, the admin password and the API secrets.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import requests

from emm_dev.embedded import AIRFLOW_DB, CATALOG_DB, EmbeddedRedis
from emm_sdc.core.config import CONFIG_FILES
from emm_sdc.lanes import QUEUES

T = TypeVar("T")

#: Airflow's components (Celery workers come on top under CeleryExecutor: :attr:`AirflowLocal.worker_names`).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
#: DAGs waited for by default: the operators' and one instrument's.
DEFAULT_DAGS = ("emm_catalog_migrate", "emm_spice_refresh", "emm_exi_ingest", "emm_exi_process")
FINISHED = ("success", "failed")
#: An ingest schedule that never fires for DAGs starting 2026-01-01 with catchup off (next: 29 Feb 2028):
#: with it, the only ingest runs are the ones a test or benchmark triggers (no cron run arming a sensor
#: that polls every minute and, with max_active_runs=1, queues the triggered run behind it).
NEVER = "0 0 29 2 *"
ADMIN = "admin"
#: The buckets :class:`emm_dev.cli.Services` creates on the embedded S3.
INBOX_BUCKET, ARCHIVE_BUCKET = "emm-sdc-inbox", "emm-sdc-archive"


class AirflowLocalError(RuntimeError):
    """Airflow did not start, a component died, or something waited for did not happen in time."""


#: Seconds a DAG file may take to import (Airflow's default, 30 s, is short on a busy 2-core machine), and the
#: DAG processor's limit for a whole file (it must be longer).
DAGBAG_IMPORT_TIMEOUT, DAG_FILE_PROCESSOR_TIMEOUT = 120, 180
SECRETS_FILE = "airflow-secrets.json"
EXECUTORS = ("local", "celery")
#: The queue of tasks without a lane queue ([operators] default_queue); every embedded Celery worker serves it.
DEFAULT_QUEUE = "default"
#: Seconds without a task heartbeat before the scheduler fails the task (a dead worker's tasks are retried
#: after this; Airflow's default is 300 s).
HEARTBEAT_TIMEOUT = 60


def default_parallelism() -> int:
    """LocalExecutor slots for this machine: two per core, between 2 and 8."""
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


def write_airflow_cfg(env: dict[str, str], path: Path) -> None:
    """``airflow.cfg`` with every ``AIRFLOW__<SECTION>__<KEY>`` of ``env`` (owner-only: it holds secrets).

    Connections stay in the environment (``AIRFLOW_CONN_*``, see ``./sdc airflow``)."""
    cfg = configparser.RawConfigParser()
    for name, value in sorted(env.items()):
        parts = name.split("__")
        if len(parts) != 3 or parts[0] != "AIRFLOW" or not parts[1] or not parts[2]:
            continue
        section, key = parts[1].lower(), parts[2].lower()
        if not cfg.has_section(section):
            cfg.add_section(section)
        cfg.set(section, key, value.replace("%", "%%"))  # Airflow's parser interpolates %
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        fh.write("# Written by emm_dev.airflow_local at every start of this instance: what its components run\n"
                 "# with. Change the command's options, not this file.\n")
        cfg.write(fh)
    path.chmod(0o600)


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all bound at once while picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


def group_members(pgid: int) -> list[Any]:
    """Live (not zombie) processes of a process group."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc)
    return members


def copy_itf_configs(src: Path, dst: Path, overrides: dict[str, Any]) -> None:
    """Copy the ITF configs of ``src`` to ``dst`` with ``overrides`` set in each: dotted keys, e.g.
    ``{"ingest.schedule": NEVER, "processing.runner.command": [...]}``."""
    import yaml

    dst.mkdir(parents=True, exist_ok=True)
    for name in CONFIG_FILES.values():
        raw = yaml.safe_load((src / name).read_text(encoding="utf-8"))
        for dotted, value in overrides.items():
            *parents, leaf = dotted.split(".")
            node = raw
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        (dst / name).write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


class AirflowLocal:
    """Airflow's components as subprocesses on embedded S3 + PostgreSQL; see the module docstring.

    ``parallelism``: task slots (``[core] parallelism``; LocalExecutor's workers). ``executor``: ``local``
    (LocalExecutor) or ``celery`` (CeleryExecutor on an embedded Redis broker, :class:`emm_dev.embedded.EmbeddedRedis`,
    with ``celery_workers`` workers of ``worker_concurrency`` slots each, every one consuming the default queue
    and every lane queue of :data:`emm_sdc.lanes.QUEUES`). ``dags``: dag_ids that must be
    parsed before :meth:`start` returns (None: every file of the DAGs folder parsed, with or without
    import errors). ``ingest_schedule``: when set, the ITF configs are copied
    under the state dir with this ingest schedule (``EMM_CONFIG_DIR``), e.g. :data:`NEVER` so that
    the only ingest runs are the ones a benchmark triggers. ``itf_overrides``: more settings of every ITF
    config copied so (dotted keys, :func:`copy_itf_configs`), e.g. the stub processor as runner command.
    ``env``: extra environment for every component.
    ``fresh``: wipe the state dir first. ``persist``: keep the S3 state on disk and reuse the admin
    password and API secrets of the state dir (see :class:`emm_dev.cli.Services`). ``inbox_events``: deliveries
    start ingest through the inbox's S3 events (SQS on the same endpoint, ``EMM_INBOX_QUEUE_URL_PREFIX``).
    ``host``/``port``: where
    the API server listens (port 0: a free one).
    """

    def __init__(
        self,
        state_dir: str | Path,
        *,
        parallelism: int = 4,
        dags: Sequence[str] | None = DEFAULT_DAGS,
        ingest_schedule: str | None = None,
        itf_overrides: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        pools: bool = True,
        api_workers: int = 1,
        start_timeout: float = 300.0,
        fresh: bool = True,
        persist: bool = False,
        inbox_events: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        executor: str = "local",
        celery_workers: int = 2,
        worker_concurrency: int | None = None,
    ):
        if executor not in EXECUTORS:
            raise ValueError(f"executor {executor!r} is not one of {', '.join(EXECUTORS)}")
        if executor == "celery" and celery_workers < 1:
            raise ValueError(f"celery_workers must be >= 1, got {celery_workers}")
        self.state = Path(state_dir).resolve()
        self.executor = executor
        self.celery_workers = celery_workers if executor == "celery" else 0
        self.worker_concurrency = worker_concurrency or max(1, parallelism // max(1, self.celery_workers))
        if executor == "celery":  # every worker slot can be filled
            parallelism = self.worker_concurrency * self.celery_workers
        self.parallelism = parallelism
        self.dags = None if dags is None else tuple(dags)
        self.fresh = fresh
        self.persist = persist
        self.inbox_events = inbox_events
        self.host = host
        self.want_port = port
        self.ingest_schedule = ingest_schedule
        self.itf_overrides = dict(itf_overrides or {})
        self.extra_env = dict(env or {})
        self.want_pools = pools
        self.api_workers = api_workers
        self.start_timeout = start_timeout
        self.svc: Any = None
        self.redis: EmbeddedRedis | None = None
        self.env: dict[str, str] = {}
        self.port = 0
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.pools: list[dict[str, Any]] = []
        self._pgid: int | None = None
        self._token: str | None = None
        self._password = ""
        self._http = requests.Session()
        self._conns: dict[str, Any] = {}  # database -> connection (meta_sql, catalog_sql)
        self._t0 = time.monotonic()
        self._log_ports: list[int] = []
        self._parse_since: Any = None
        self.startup_seconds = 0.0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> AirflowLocal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """Where this machine reaches the API server (loopback when it listens on every address)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104 (compared, not bound)
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def password_file(self) -> Path:
        """The simple auth manager's passwords file (``{"admin": "<password>"}``)."""
        return self.state / "simple_auth_manager_passwords.json"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    def start(self) -> AirflowLocal:
        """Services, then Airflow; returns once every component is ready."""
        return self.start_services().start_airflow()

    def start_services(self) -> AirflowLocal:
        """The embedded S3 and PostgreSQL alone (catalog migrated, buckets made): deliver to the inbox now for
        the first scheduled runs to find it, then :meth:`start_airflow`."""
        from emm_dev.cli import Services

        self._t0 = time.monotonic()
        try:
            self.svc = Services(self.state, fresh=self.fresh, persist=self.persist, inbox_events=self.inbox_events)
            self.logs.mkdir(parents=True, exist_ok=True)
            if self.executor == "celery":
                self.redis = EmbeddedRedis(self.state / "redis").start()
            picked, *self._log_ports = free_ports(3)
            self.port = self.want_port or picked
            self.env = self._environment()
        except BaseException:
            self.stop()
            raise
        return self

    def start_airflow(self) -> AirflowLocal:
        """Metadata DB, pools, the four components; returns once all are ready."""
        if self.svc is None:
            self.start_services()
        t0 = time.monotonic()
        try:
            write_airflow_cfg(self.env, Path(self.env["AIRFLOW_HOME"]) / "airflow.cfg")
            self._cli(["db", "migrate"], "db-migrate", timeout=600)
            if self.want_pools:
                self.pools = self._ensure_pools()
            [(self._parse_since,)] = self.meta_sql("SELECT now()")
            for name in COMPONENTS:
                self._spawn(name)
            for name in self.worker_names:
                self._spawn(name)
            self._wait_ready(t0)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - self._t0
        return self

    @property
    def worker_names(self) -> list[str]:
        """The Celery workers' component names (``celery-worker-1`` …; none under LocalExecutor)."""
        return [f"celery-worker-{n}" for n in range(1, self.celery_workers + 1)]

    @property
    def components(self) -> list[str]:
        """Every component started: Airflow's four, then the Celery workers."""
        return [*COMPONENTS, *self.worker_names]

    def _executor_env(self) -> dict[str, str]:
        if self.executor == "local":
            return {"AIRFLOW__CORE__EXECUTOR": "LocalExecutor"}
        assert self.redis is not None
        return {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": self.redis.url,
            # task states in the metadata database (psycopg2, like the metadata connection)
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + self.svc.pg.sqlalchemy_url(AIRFLOW_DB).replace(
                "postgresql+psycopg2", "postgresql", 1),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": DEFAULT_QUEUE,
            # a message a dead worker held is handed out again after this long (Airflow's default is a day; the
            # scheduler has long failed the task by then and queued its retry: see HEARTBEAT_TIMEOUT)
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "21600",
        }

    def _environment(self) -> dict[str, str]:
        env = dict(self.svc.env)
        home = Path(env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        keys = self._secrets()
        self._password = keys["admin_password"]
        self.password_file.write_text(json.dumps({ADMIN: self._password}))
        self.password_file.chmod(0o600)
        env.update(
            {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.svc.pg.sqlalchemy_url(AIRFLOW_DB),
                **self._executor_env(),
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": str(DAGBAG_IMPORT_TIMEOUT),
                "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": str(DAG_FILE_PROCESSOR_TIMEOUT),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.password_file),
                "AIRFLOW__API__HOST": self.host,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__API__SECRET_KEY": keys["secret_key"],
                "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
                # The scheduler's and triggerer's log servers (8793/8794 by default) on free ports too, so that
                # harnesses and a ./sdc standalone can run side by side.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
                # Airflow's REST API for tasks that write run notes (emm_sdc.connections.set_run_note).
                "AIRFLOW_CONN_EMM_AIRFLOW_API": json.dumps({"conn_type": "http", "host": self.base_url,
                                                            "login": ADMIN, "password": self._password}),
                # The buckets Services made (the caller's environment may name others).
                "EMM_INBOX_BUCKET": INBOX_BUCKET,
                "EMM_ARCHIVE_BUCKET": ARCHIVE_BUCKET,
            }
        )
        overrides = dict(self.itf_overrides)
        if self.ingest_schedule is not None:
            overrides["ingest.schedule"] = self.ingest_schedule
        if overrides:
            from emm_sdc.core.config import config_dir
            from emm_sdc.core.site_config import site_config_path

            configs = self.state / "itf_configs"
            env["EMM_SITE_CONFIG"] = str(site_config_path())  # found beside the ITF configs' folder otherwise
            copy_itf_configs(config_dir(), configs, overrides)
            env["EMM_CONFIG_DIR"] = str(configs)
        env.update(self.extra_env)
        return env

    def _secrets(self) -> dict[str, str]:
        """Admin password and API secrets: new ones, or (``persist``) the state dir's own, kept across starts."""
        path = self.state / SECRETS_FILE
        if self.persist and path.exists():
            return dict(json.loads(path.read_text()))
        keys = {"admin_password": secrets.token_urlsafe(16), "secret_key": secrets.token_hex(16),
                "jwt_secret": secrets.token_hex(32)}
        if self.persist:
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
                json.dump(keys, fh)
        return keys

    def _cli(self, args: list[str], log_name: str, *, timeout: float = 300) -> str:
        """Run ``airflow <args>`` with the harness's env; its output to a log file; raise when it fails."""
        log_path = self.logs / f"{log_name}.log"
        with log_path.open("a") as fh:
            proc = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
                timeout=timeout,
                check=False,
            )
            fh.write(proc.stdout)
        if proc.returncode != 0:
            raise AirflowLocalError(f"airflow {' '.join(args)} exited {proc.returncode}:\n{_tail(log_path)}")
        return proc.stdout

    def _ensure_pools(self) -> list[dict[str, Any]]:
        code = "import json; from emm_sdc.lanes import ensure_pools; print('POOLS=' + json.dumps(ensure_pools()))"
        log_path = self.logs / "pools.log"
        with log_path.open("w") as fh:
            proc = subprocess.run(
                [sys.executable, "-c", code],
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
                timeout=300,
                check=False,
            )
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("POOLS=")), None)
        if proc.returncode != 0 or line is None:
            raise AirflowLocalError(f"ensure_pools failed ({proc.returncode}):\n{_tail(log_path)}")
        return json.loads(line.removeprefix("POOLS="))

    def _spawn(self, name: str) -> None:
        args = [sys.executable, "-m", "airflow"]
        if name == "api-server":
            args += [name, "--host", self.host, "--port", str(self.port), "--workers", str(self.api_workers)]
        elif name in self.worker_names:
            # every worker serves every queue; their logs are files the API server reads from the same disk
            queues = ",".join([DEFAULT_QUEUE, *QUEUES.values()])
            args += ["celery", "worker", "--queues", queues, "--concurrency", str(self.worker_concurrency),
                     "--celery-hostname", f"{name}@%h", "--pid", str(self.state / f"{name}.pid"),
                     "--skip-serve-logs", "--without-mingle", "--without-gossip"]
        else:
            args.append(name)
        log = (self.logs / f"{name}.log").open("ab")
        # One process group (not the terminal's) for every component and the executor's workers: one signal
        # stops them all, and Ctrl-C reaches only the caller, which then stops them in order.
        proc = subprocess.Popen(
            args,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.state,
            process_group=self._pgid or 0,
        )
        log.close()
        if self._pgid is None:
            self._pgid = proc.pid
        self.procs[name] = proc

    def _worker_pids(self) -> dict[int, str]:
        """The running Celery workers' main processes: pid -> component name."""
        return {self.procs[n].pid: n for n in self.worker_names if n in self.procs}

    def worker_of(self, pid: int) -> str | None:
        """The Celery worker (component name) whose process tree holds process ``pid`` (None: no worker's)."""
        import psutil

        workers = self._worker_pids()
        try:
            chain = [psutil.Process(pid), *psutil.Process(pid).parents()]
        except psutil.NoSuchProcess:
            return None
        return next((workers[p.pid] for p in chain if p.pid in workers), None)

    def kill_worker(self, name: str) -> list[int]:
        """SIGKILL a Celery worker and every process under it (its pool, task supervisors, tasks, processors),
        as when its machine dies: nothing of it says goodbye to the broker or the API server. Returns the pids."""
        import psutil

        proc = self.procs.pop(name)
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
        for member in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.kill()
        psutil.wait_procs(tree, timeout=30)
        proc.wait(10)
        return [m.pid for m in tree]

    def check_alive(self) -> None:
        """Raise if a component exited (with the end of its log)."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowLocalError(
                    f"airflow {name} exited with {proc.returncode}:\n{_tail(self.logs / f'{name}.log')}"
                )

    def health(self) -> dict[str, Any] | None:
        """The API server's ``/api/v2/monitor/health`` (None while it does not answer)."""
        try:
            r = self._http.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
        except requests.RequestException:
            return None
        return r.json() if r.status_code == 200 else None

    def _healthy(self) -> bool:
        h = self.health()
        return h is not None and all(
            (h.get(part) or {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def ui_answers(self) -> bool:
        """The UI's page is served."""
        try:
            r = self._http.get(f"{self.base_url}/", timeout=5)
        except requests.RequestException:
            return False
        return r.status_code == 200 and "<html" in r.text.lower()

    def unparsed_files(self, since: Any = None) -> set[str]:
        """Python files of the DAGs folder that the DAG processor has not parsed (since ``since``, a metadata-DB
        timestamp: on a kept state dir, rows of the previous run do not count): neither a DAG nor an import
        error recorded for them."""
        folder = Path(self.env["AIRFLOW__CORE__DAGS_FOLDER"])
        files = {p.name for p in folder.glob("*.py") if not p.name.startswith("_")}
        seen = {Path(r[0]).name for r in self.meta_sql(
            "SELECT fileloc FROM dag WHERE NOT is_stale AND (%(since)s::timestamptz IS NULL OR last_parsed_time >= "
            "%(since)s)", {"since": since})}
        seen |= {Path(r[0]).name for r in self.meta_sql(
            "SELECT filename FROM import_error WHERE %(since)s::timestamptz IS NULL OR timestamp >= %(since)s",
            {"since": since})}
        return files - seen

    def parsed_dags(self) -> set[str]:
        """dag_ids the DAG processor has put into the metadata database (not stale)."""
        return {r[0] for r in self.meta_sql("SELECT dag_id FROM dag WHERE NOT is_stale")}

    def import_errors(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.meta_sql("SELECT filename, stacktrace FROM import_error")]

    def worker_ready(self, name: str) -> bool:
        """A Celery worker has connected to the broker and consumes its queues (its log says ``ready``)."""
        log = self.logs / f"{name}.log"
        return log.exists() and f"{name}@" in (text := log.read_text(errors="replace")) and " ready." in text

    def _wait_ready(self, t0: float) -> None:
        left = self.start_timeout - (time.monotonic() - t0)
        self.wait_for(self._healthy, left, what="the API server's health: all components healthy")
        for name in self.worker_names:
            self.wait_for(lambda name=name: self.worker_ready(name),
                          max(10.0, self.start_timeout - (time.monotonic() - t0)), what=f"{name} ready")
        self.wait_for(self.ui_answers, max(10.0, self.start_timeout - (time.monotonic() - t0)), what="the UI")
        missing: set[str] = set()

        def parsed() -> bool:
            nonlocal missing
            if self.dags is None:
                missing = self.unparsed_files(self._parse_since)
            else:
                missing = set(self.dags) - self.parsed_dags()
            return not missing

        try:
            self.wait_for(
                parsed,
                max(30.0, self.start_timeout - (time.monotonic() - t0)),
                what=f"DAGs {sorted(self.dags)} parsed" if self.dags is not None else "every DAG file parsed",
            )
        except AirflowLocalError as exc:
            errors = "\n".join(f"{f}: {s[-800:]}" for f, s in self.import_errors())
            raise AirflowLocalError(f"{exc}; missing {sorted(missing)}; import errors:\n{errors or '(none)'}") from None

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the components, then the services.

        SIGTERM to every process of the group but the API server (scheduler, its executor's workers and their
        tasks, DAG processor, triggerer): a task being stopped still reports its end through the Execution
        API, so the API server goes last. Whatever is left after ``timeout`` gets SIGKILL.
        """
        for conn in self._conns.values():
            with contextlib.suppress(Exception):
                conn.close()
        self._conns.clear()
        if self._pgid is not None:
            deadline = time.monotonic() + timeout
            api = self.procs.get("api-server")
            keep = {api.pid} if api is not None else set()
            # Celery workers get a cold shutdown (SIGQUIT): a warm one (SIGTERM) would wait for tasks that are
            # being stopped here anyway, until the timeout
            workers = self._worker_pids()
            for member in group_members(self._pgid):
                if member.pid not in keep:
                    with contextlib.suppress(Exception):
                        member.send_signal(signal.SIGQUIT if member.pid in workers else signal.SIGTERM)
            for name, proc in self.procs.items():
                if name != "api-server":
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pgid, signal.SIGTERM)
            if api is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    api.wait(max(0.1, deadline - time.monotonic()))
            # Whatever is left of the group (a component that ignored SIGTERM, an orphaned task process).
            while group_members(self._pgid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if group_members(self._pgid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._pgid, signal.SIGKILL)
            for proc in self.procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(10)
            self._pgid = None
        self.procs = {}
        if self.redis is not None:
            self.redis.stop()
            self.redis = None
        if self.svc is not None:
            self.svc.close()
            self.svc = None
        self._http.close()

    def diagnostics(self, lines: int = 30) -> str:
        """The end of every component's log."""
        return "\n".join(
            f"--- {name} ({self.logs / f'{name}.log'})\n{_tail(self.logs / f'{name}.log', lines)}"
            for name in self.components
        )

    # ------------------------------------------------------------------ waiting

    def wait_for(
        self, predicate: Callable[[], T], timeout: float, *, interval: float = 0.5, what: str = "condition"
    ) -> T:
        """Poll ``predicate`` until it returns something truthy (returned); raise after ``timeout`` seconds.

        Components are checked on every poll: a dead one fails at once instead of at the timeout.
        """
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AirflowLocalError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    # ------------------------------------------------------------------ REST API

    def token(self) -> str:
        if self._token is None:
            r = self._http.post(
                f"{self.base_url}/auth/token", json={"username": ADMIN, "password": self._password}, timeout=30
            )
            r.raise_for_status()
            self._token = r.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, **kw: Any) -> Any:
        """Call the REST API (``path`` under ``/api/v2``) as admin; the decoded JSON body."""
        kw.setdefault("timeout", 60)
        r = self._http.request(
            method, f"{self.base_url}/api/v2{path}", headers={"Authorization": f"Bearer {self.token()}"}, **kw
        )
        if r.status_code >= 400:
            raise AirflowLocalError(f"{method} {path}: {r.status_code} {r.text[:1000]}")
        return r.json() if r.content else None

    def ui(self, path: str, **kw: Any) -> Any:
        """GET an endpoint of the UI's own API (``path`` under ``/ui``, e.g. ``/dependencies``) as admin."""
        kw.setdefault("timeout", 60)
        r = self._http.get(f"{self.base_url}/ui{path}", headers={"Authorization": f"Bearer {self.token()}"}, **kw)
        if r.status_code >= 400:
            raise AirflowLocalError(f"GET /ui{path}: {r.status_code} {r.text[:1000]}")
        return r.json()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None, *, note: str | None = None,
                logical_date: str | None = None) -> str:
        """Start a manual run now (as "Trigger DAG w/ config" does); its run_id. ``logical_date`` (ISO) gives
        the run the data interval its timetable infers for that date."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if note:
            body["note"] = note
        return str(self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(
            self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})["task_instances"]
        )

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300.0, *, interval: float = 1.0) -> str:
        """Poll a run until it finished; its final state (``success``/``failed``)."""
        return str(
            self.wait_for(
                lambda: s if (s := self.dag_run(dag_id, run_id)["state"]) in FINISHED else None,
                timeout,
                interval=interval,
                what=f"{dag_id} run {run_id} to finish",
            )
        )

    # ------------------------------------------------------------------ backfills

    def backfill(
        self,
        dag_id: str,
        from_date: str,
        to_date: str,
        conf: dict[str, Any] | None = None,
        *,
        max_active_runs: int | None = None,
        reprocess_behavior: str | None = None,
        run_backwards: bool = False,
    ) -> dict[str, Any]:
        """``airflow backfill create`` (the scheduler then runs it); the new backfill's row."""
        before = {b["id"] for b in self.backfills(dag_id)}
        args = ["backfill", "create", "--dag-id", dag_id, "--from-date", from_date, "--to-date", to_date]
        if conf is not None:
            args += ["--dag-run-conf", json.dumps(conf)]
        if max_active_runs is not None:
            args += ["--max-active-runs", str(max_active_runs)]
        if reprocess_behavior is not None:
            args += ["--reprocess-behavior", reprocess_behavior]
        if run_backwards:
            args.append("--run-backwards")
        self._cli(args, "backfill-create")
        new = [b for b in self.backfills(dag_id) if b["id"] not in before]
        if not new:
            raise AirflowLocalError(
                f"airflow backfill create made no backfill of {dag_id}:\n{_tail(self.logs / 'backfill-create.log')}"
            )
        return new[-1]

    def backfills(self, dag_id: str) -> list[dict[str, Any]]:
        return sorted(
            self.api("GET", "/backfills", params={"dag_id": dag_id, "limit": 100})["backfills"], key=lambda b: b["id"]
        )

    def backfill_progress(self, backfill_id: int) -> dict[str, int]:
        """Runs of a backfill by state (``queued``, ``running``, ``success``, ``failed``)."""
        rows = self.meta_sql(
            "SELECT state, count(*) FROM dag_run WHERE backfill_id = %s GROUP BY state", (backfill_id,)
        )
        return {str(state): int(n) for state, n in rows}

    # ------------------------------------------------------------------ databases and S3

    def _sql(self, database: str, query: str, params: Iterable[Any] | dict[str, Any] | None) -> list[tuple[Any, ...]]:
        """Rows of a query on one embedded database, over a connection kept per database (autocommit: every call
        sees the latest state)."""
        conn = self._conns.get(database)
        if conn is None:
            conn = self._conns[database] = self.svc.pg.connect(database)
            conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(query, params)
            return list(cur.fetchall())

    def meta_sql(self, query: str, params: Iterable[Any] | dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a query on Airflow's metadata database."""
        return self._sql(AIRFLOW_DB, query, params)

    def catalog_sql(self, query: str, params: Iterable[Any] | dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a query on the product catalog."""
        return self._sql(CATALOG_DB, query, params)

    @property
    def s3(self) -> Any:
        """boto3 S3 client of the embedded S3 (buckets :data:`INBOX_BUCKET` and :data:`ARCHIVE_BUCKET`)."""
        return self.svc.client
