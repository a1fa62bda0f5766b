"""Production deployment as files (deploy/helm, deploy/mwaa, scripts/build-mwaa-plugins), validated offline.

No Kubernetes, Helm or MWAA here, so each check uses the real thing that is available: the chart keys against
the chart's documented keys (the chart's values.schema.json ships in no PyPI/npm package, so CHART_KEYS lists
the keys used with where the chart documents them); the EMM_* settings through the SDC's own readers; the secrets
backend and the remote task logs through Airflow's own config loaders against moto on loopback; requirements
through pip's resolver without an index; the MWAA plugins.zip through Airflow's plugin loader in a fresh
interpreter that sees nothing but the unpacked zip and the bundle's dags/ folder.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from emm_dev import mwaa
from emm_dev.embedded import EmbeddedS3, aws_conn_json
from emm_sdc import lanes
from emm_sdc.api.config import api_settings
from emm_sdc.core import release
from emm_sdc.core.settings import get_settings
from tests.test_dags import EXPECTED as EXPECTED_DAGS

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / "deploy" / "helm"
STARTUP = ROOT / "deploy" / "mwaa" / "startup.sh"
PY = sys.executable

#: Celery queue of each kind of work (worker set name -> queue), as the tasks' ``queue=`` has them.
LANE_QUEUES = lanes.QUEUES

# -- the chart's keys ----------------------------------------------------------------------------------------------
_SCHEMA = "chart values.schema.json (apache/airflow@002e5532, the chart for Airflow 3.0.5)"
_GUIDE = "chart docs production-guide.rst (Database, PgBouncer, API Secret Key)"
_SETS = "chart docs customizing-workers.rst, 'Different volumes for Celery worker sets' (workers.celery.sets)"
_KEDA = "chart PR #58547 (per-set KEDA on the set's queues) and docs keda.rst / kustomize-overlays/keda"
_DAGS = "chart docs manage-dag-files.rst (baked-in DAGs: persistence and gitSync off)"
_COMPONENTS = "chart values.yaml sections scheduler/apiServer/dagProcessor/triggerer/logs (parameters reference)"

#: Every chart key the values files use: JSON-schema type(s) and where the chart documents it. A value under an
#: "object" key that is opaque to the chart (airflow.cfg, Kubernetes objects, annotations) is checked elsewhere.
CHART_KEYS: dict[str, tuple[str, str]] = {
    "airflowVersion": ("string", _SCHEMA),
    "defaultAirflowTag": ("string", _SCHEMA),
    "images.airflow.repository": ("string", _SCHEMA),
    "images.airflow.tag": ("string", _SCHEMA),
    "images.airflow.pullPolicy": ("string", _SCHEMA),
    "dags.persistence.enabled": ("boolean", _DAGS),
    "dags.gitSync.enabled": ("boolean", _DAGS),
    "executor": ("string", _SCHEMA),
    "redis.enabled": ("boolean", _GUIDE),
    "postgresql.enabled": ("boolean", _GUIDE),
    "data.metadataSecretName": ("string", _SCHEMA),
    "data.brokerUrlSecretName": ("string", _SCHEMA),
    "fernetKeySecretName": ("string", _SCHEMA),
    "apiSecretKeySecretName": ("string", _SCHEMA),
    "jwtSecretName": ("string", _SCHEMA),
    "volumes": ("array", _SCHEMA),
    "volumeMounts": ("array", _SCHEMA),
    "env": ("array", _SCHEMA),
    "config": ("object", _SCHEMA),
    "pgbouncer.enabled": ("boolean", _GUIDE),
    "pgbouncer.configSecretName": ("string", _GUIDE),
    "pgbouncer.metricsExporterSidecar.statsSecretName": ("string", _GUIDE),
    "pgbouncer.maxClientConn": ("integer", _GUIDE),
    "pgbouncer.metadataPoolSize": ("integer", _GUIDE),
    "pgbouncer.resultBackendPoolSize": ("integer", _GUIDE),
    "scheduler.replicas": ("integer", _COMPONENTS),
    "scheduler.serviceAccount.annotations": ("object", _COMPONENTS),
    "apiServer.replicas": ("integer", _COMPONENTS),
    "apiServer.serviceAccount.annotations": ("object", _COMPONENTS),
    "dagProcessor.enabled": ("boolean", _COMPONENTS),
    "dagProcessor.replicas": ("integer", _COMPONENTS),
    "dagProcessor.serviceAccount.annotations": ("object", _COMPONENTS),
    "triggerer.enabled": ("boolean", _COMPONENTS),
    "triggerer.replicas": ("integer", _COMPONENTS),
    "triggerer.persistence.enabled": ("boolean", _COMPONENTS),
    "triggerer.serviceAccount.annotations": ("object", _COMPONENTS),
    "logs.persistence.enabled": ("boolean", _COMPONENTS),
    "workers.persistence.enabled": ("boolean", _SCHEMA),
    "workers.terminationGracePeriodSeconds": ("integer", _SCHEMA),
    "workers.serviceAccount.annotations": ("object", _SCHEMA),
    "workers.celery.enableDefault": ("boolean", _SETS),
    "workers.celery.queue": ("string", _SETS),
    "workers.celery.resources": ("object", _SETS),
    "workers.celery.sets": ("array", _SETS),
    "workers.celery.keda.enabled": ("boolean", _KEDA),
    "workers.celery.keda.pollingInterval": ("integer", _KEDA),
    "workers.celery.keda.cooldownPeriod": ("integer", _KEDA),
    "workers.celery.keda.minReplicaCount": ("integer", _KEDA),
    "workers.celery.keda.maxReplicaCount": ("integer", _KEDA),
}
_JSON_TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list}


def chart_key_problems(values: dict[str, Any], where: str) -> list[str]:
    """Keys of ``values`` the chart does not document (CHART_KEYS), or with the wrong type: ``file: key: rule``."""
    problems: list[str] = []

    def check(path: str, value: Any, documented: str) -> None:
        if documented not in CHART_KEYS:
            if isinstance(value, dict) and any(k.startswith(documented + ".") for k in CHART_KEYS):
                for key, sub in value.items():
                    check(f"{path}.{key}", sub, f"{documented}.{key}")
                return
            problems.append(f"{where}: {path}: not a documented chart key (CHART_KEYS)")
            return
        kind = CHART_KEYS[documented][0]
        expected = _JSON_TYPES[kind]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problems.append(f"{where}: {path}: must be {kind} (got {type(value).__name__} {value!r})")
        if documented == "workers.celery.sets" and isinstance(value, list):
            for i, item in enumerate(value):
                if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                    problems.append(f"{where}: {path}[{i}]: a worker set is a mapping with a string name")
                    continue
                # a set overrides workers.celery's keys (chart docs); its own key is `name`
                for key, sub in item.items():
                    if key != "name":
                        check(f"{path}[{i}].{key}", sub, f"workers.celery.{key}")

    for key, value in values.items():
        check(key, value, key)
    return problems


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``helm -f base -f overlay``: mappings merge key by key, anything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((HELM / name).read_text())
    assert isinstance(data, dict), f"deploy/helm/{name}: not a mapping"
    return data


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return merged(load("values.yaml"), load("values-rds.yaml"))


def test_values_files_parse_and_use_only_documented_chart_keys_with_their_types() -> None:
    for name in ("values.yaml", "values-rds.yaml"):
        assert chart_key_problems(load(name), f"deploy/helm/{name}") == []


def test_chart_key_check_catches_unknown_keys_wrong_types_and_bad_worker_sets() -> None:
    bad = {"executor": ["CeleryExecutor"], "workers": {"celery": {"keda": {"maxReplicas": 3},
                                                                  "sets": [{"name": "x", "queues": "q"}, {}]}}}
    assert chart_key_problems(bad, "f") == [
        "f: executor: must be string (got list ['CeleryExecutor'])",
        "f: workers.celery.keda.maxReplicas: not a documented chart key (CHART_KEYS)",
        "f: workers.celery.sets[0].queues: not a documented chart key (CHART_KEYS)",
        "f: workers.celery.sets[1]: a worker set is a mapping with a string name",
    ]


def test_image_is_the_projects_dockerfile_build_of_the_pinned_airflow(values: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^ARG AIRFLOW_IMAGE=apache/airflow:(\S+)-python(\S+)$", dockerfile, re.M)
    assert base, "Dockerfile: ARG AIRFLOW_IMAGE=apache/airflow:<version>-python<x.y> expected"
    pins = _pins(ROOT / "requirements.txt")
    assert values["airflowVersion"] == values["defaultAirflowTag"] == base.group(1) == pins["apache-airflow"]
    assert base.group(2) == f"{sys.version_info.major}.{sys.version_info.minor}"
    image = values["images"]["airflow"]
    assert image["repository"].endswith("/emm-sdc") and image["tag"]
    # DAGs, plugins and configs are in the image, so nothing mounts or syncs them over it
    assert "COPY --chown=airflow:root dags/ /opt/airflow/dags/" in dockerfile
    assert values["dags"] == {"persistence": {"enabled": False}, "gitSync": {"enabled": False}}


# -- executor, lanes, autoscaling ----------------------------------------------------------------------------------

def test_celery_executor_with_one_worker_set_per_lane(values: dict[str, Any]) -> None:
    from airflow.executors.executor_constants import CELERY_EXECUTOR, CORE_EXECUTOR_NAMES

    assert values["executor"] == CELERY_EXECUTOR and CELERY_EXECUTOR in CORE_EXECUTOR_NAMES
    celery = values["workers"]["celery"]
    sets = {s["name"]: s["queue"] for s in celery["sets"]}
    assert sets == LANE_QUEUES
    assert set(lanes.LANES) <= set(sets), "every lane of emm_sdc.lanes has its worker set"
    assert len(set(sets.values())) == len(sets)
    # tasks without a lane queue land on the default set
    assert celery["enableDefault"] is True
    assert values["config"]["operators"]["default_queue"] == celery["queue"] not in sets.values()


def test_keda_scales_each_set_on_its_queue_within_sane_bounds(values: dict[str, Any]) -> None:
    workers = values["workers"]
    grace = workers["terminationGracePeriodSeconds"]
    assert values["config"]["celery"]["worker_concurrency"] >= 1
    for s in [workers["celery"], *workers["celery"]["sets"]]:
        keda = s["keda"]
        name = s.get("name", "default")
        assert keda["enabled"] is True, name
        assert 0 <= keda["minReplicaCount"] <= keda["maxReplicaCount"], name
        # the chart's KEDA notes: cooldown (before scaling to zero) longer than the pods' grace period
        assert keda["cooldownPeriod"] > grace, name
    by_name = {s["name"]: s for s in workers["celery"]["sets"]}
    assert by_name["ingest"]["keda"]["minReplicaCount"] >= 1, "deliveries must not wait for a pod start"
    assert by_name["daily"]["keda"]["minReplicaCount"] >= 1


def test_triggerer_dag_processor_and_ha_components(values: dict[str, Any]) -> None:
    # deferrable S3 sensors, the inbox AssetWatchers and the deadline callbacks run in the triggerer
    assert values["triggerer"]["enabled"] is True and values["triggerer"]["replicas"] >= 2
    assert values["dagProcessor"]["enabled"] is True and values["dagProcessor"]["replicas"] >= 1
    assert values["scheduler"]["replicas"] >= 2 and values["apiServer"]["replicas"] >= 2


def test_external_postgres_and_broker_through_secrets(values: dict[str, Any]) -> None:
    rds = load("values-rds.yaml")
    assert rds["postgresql"]["enabled"] is False and rds["redis"]["enabled"] is False
    assert values["data"]["metadataSecretName"] and values["data"]["brokerUrlSecretName"]
    # the chart's production guide: PgBouncer with a metadata secret needs its own config and stats secrets
    assert values["pgbouncer"]["enabled"] is True
    assert values["pgbouncer"]["configSecretName"] and values["pgbouncer"]["metricsExporterSidecar"]["statsSecretName"]
    for key in ("fernetKeySecretName", "apiSecretKeySecretName", "jwtSecretName"):
        assert values[key], key
    text = (HELM / "values.yaml").read_text() + (HELM / "values-rds.yaml").read_text()
    assert not re.search(r"(?im)^\s*(pass|password|fernetKey|apiSecretKey|jwtSecret|brokerUrl)\s*:", text), \
        "no secret in the values files"


# -- EMM_* settings ------------------------------------------------------------------------------------------------

#: Every EMM_* setting a deployment may set, and the module that reads it.
READERS = {
    **dict.fromkeys(["EMM_ENVIRONMENT", "EMM_INBOX_BUCKET", "EMM_ARCHIVE_BUCKET", "EMM_AWS_CONN_ID",
                     "EMM_CATALOG_CONN_ID", "EMM_WORK_DIR", "EMM_KERNEL_DIR", "EMM_LAST_GOOD_DIR",
                     "EMM_INBOX_QUEUE_URL_PREFIX", "EMM_DOCKER_CONN_ID", "EMM_DOCKER_URL", "EMM_PROJECT_ROOT",
                     "EMM_LANE_QUEUES"],
                    "emm_sdc/core/settings.py"),
    **dict.fromkeys(["EMM_PUBLIC_BUCKET", "EMM_RELEASE_LAG_MONTHS"], "emm_sdc/core/release.py"),
    **dict.fromkeys(["EMM_COGNITO_REGION", "EMM_COGNITO_USER_POOL_ID", "EMM_COGNITO_CLIENT_ID",
                     "EMM_COGNITO_ENDPOINT", "EMM_COGNITO_JWKS_URL", "EMM_COGNITO_ISSUER", "EMM_API_ALLOW_ANONYMOUS",
                     "EMM_API_MAX_RECORDS", "EMM_API_URL_TTL_SECONDS"], "emm_sdc/api/config.py"),
    "EMM_CONFIG_DIR": "emm_sdc/core/config.py",
    "EMM_SITE_CONFIG": "emm_sdc/core/site_config.py",
    "EMM_LOCAL_CGROUP_PARENT": "emm_sdc/runners/local.py",
}


@contextmanager
def _env(env: dict[str, str]) -> Iterator[None]:
    """Exactly these EMM_* variables (the others removed) for a block; the settings caches cleared around it."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("EMM_")}
    for k in saved:
        del os.environ[k]
    os.environ.update({k: v for k, v in env.items() if k.startswith("EMM_")})
    get_settings.cache_clear()
    api_settings.cache_clear()
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("EMM_")]:
            del os.environ[k]
        os.environ.update(saved)
        get_settings.cache_clear()
        api_settings.cache_clear()


def emm_env_problems(env: dict[str, str], where: str) -> list[str]:
    """EMM_* settings no SDC code reads, or whose value the SDC's own readers reject: ``file: VAR: rule``."""
    problems = [f"{where}: {var}: no SDC code reads it" for var in env if var.startswith("EMM_") and var not in READERS]
    readers = [(get_settings, "emm_sdc/core/settings.py"), (release.lag_months, "emm_sdc/core/release.py"),
               (release.public_bucket, "emm_sdc/core/release.py"), (api_settings, "emm_sdc/api/config.py")]
    with _env({k: v for k, v in env.items() if k in READERS}):
        for reader, module in readers:
            try:
                reader()
            except ValueError as exc:
                problems.append(f"{where}: {exc} ({module})")
    return problems


def helm_env(values: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in values["env"]}


def startup_env() -> dict[str, str]:
    """What deploy/mwaa/startup.sh exports, read by sourcing it in a clean bash (as MWAA runs it)."""
    out = subprocess.run(["env", "-i", "PATH=/usr/bin:/bin", "bash", "-c", f'set -e; . "{STARTUP}"; env -0'],
                         capture_output=True, check=True, timeout=30).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item.startswith(("EMM_", "AWS_")))


def test_readers_table_names_where_each_setting_is_read() -> None:
    for var, module in READERS.items():
        assert f'"{var}"' in (ROOT / "plugins" / module).read_text(), f"{var} is not read in plugins/{module}"


def test_helm_env_items_are_chart_shaped_and_every_emm_setting_valid(values: dict[str, Any]) -> None:
    for item in values["env"]:
        # the chart's schema: {name, value}, both strings, nothing else
        assert set(item) == {"name", "value"} and all(isinstance(v, str) for v in item.values()), item
    env = helm_env(values)
    assert emm_env_problems(env, "deploy/helm/values.yaml") == []
    with _env(env):
        s = get_settings()
        assert (s.environment, s.inbox_bucket, s.archive_bucket) == ("production", "emm-sdc-inbox", "emm-sdc-archive")
        assert (s.aws_conn_id, s.catalog_conn_id) == ("emm_s3", "emm_catalog")
        assert s.inbox_queue_url_prefix == env["EMM_INBOX_QUEUE_URL_PREFIX"]
        assert release.public_bucket() == "emm-sdc-public" and release.lag_months() == 4
        api = api_settings()
        assert api.configured and api.allow_anonymous
        assert api.user_pool_id.startswith(api.region + "_"), "a Cognito user pool id starts with its region"
        assert env["AWS_DEFAULT_REGION"] == api.region


def test_shared_folders_are_on_a_volume_every_airflow_container_mounts(values: dict[str, Any]) -> None:
    env = helm_env(values)
    claims = {v["name"] for v in values["volumes"] if "persistentVolumeClaim" in v}
    mounts = [m["mountPath"] for m in values["volumeMounts"] if m["name"] in claims]
    for var in ("EMM_WORK_DIR", "EMM_KERNEL_DIR", "EMM_LAST_GOOD_DIR"):
        assert any(Path(env[var]).is_relative_to(m) for m in mounts), f"{var}={env[var]} is not on a shared volume"


def test_emm_check_catches_unread_and_invalid_settings() -> None:
    bad = {"EMM_INBOX_BUCKET": "Not_A_Bucket", "EMM_RELEASE_LAG_MONTHS": "four", "EMM_QUEUE_PREFIX": "x",
           "EMM_INBOX_QUEUE_URL_PREFIX": "https://sqs.eu-west-1.amazonaws.com/emm"}
    problems = emm_env_problems(bad, "f")
    assert problems[0] == "f: EMM_QUEUE_PREFIX: no SDC code reads it"
    assert "EMM_INBOX_BUCKET='Not_A_Bucket' is not a valid S3 bucket name (emm_sdc/core/settings.py)" in problems[1]
    assert problems[2].startswith("f: EMM_RELEASE_LAG_MONTHS='four' must be a whole number")
    assert len(problems) == 3  # get_settings stops at its first bad value


def test_mwaa_startup_script_exports_valid_settings_for_the_bundle_layout() -> None:
    env = startup_env()
    assert emm_env_problems(env, "deploy/mwaa/startup.sh") == []
    assert env["EMM_PROJECT_ROOT"] == mwaa.MWAA_DAGS
    for var in ("EMM_WORK_DIR", "EMM_KERNEL_DIR", "EMM_LAST_GOOD_DIR"):
        assert env[var].startswith("/tmp/"), f"{var}: MWAA containers write only to local /tmp"
    assert "EMM_DOCKER_URL" not in env, "no container engine on MWAA"


# -- secrets backend, remote task logs, airflow.cfg ------------------------------------------------------------------

def test_every_airflow_cfg_option_in_the_values_exists(values: dict[str, Any]) -> None:
    from airflow.configuration import conf

    described = conf.configuration_description
    for section, options in values["config"].items():
        assert section in described, f"config.{section}: no such airflow.cfg section"
        for key, value in options.items():
            assert key in described[section]["options"], f"config.{section}.{key}: no such airflow.cfg option"
            assert isinstance(value, str | int) and not isinstance(value, bool), f"config.{section}.{key}: scalar"


def _airflow_env(config: dict[str, dict[str, Any]], home: Path, **extra: str) -> dict[str, str]:
    """A clean environment for a fresh Airflow process configured as the chart would (airflow.cfg via env)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "AIRFLOW_HOME": str(home),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"}
    for section, options in config.items():
        for key, value in options.items():
            env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(value)
    env.update(extra)
    return env


def _run(code: str, env: dict[str, str], cwd: Path, *args: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON."""
    proc = subprocess.run([PY, "-c", code, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_SECRETS_PROBE = """
import json
from airflow.configuration import get_custom_secret_backend
out = {}
for worker in (False, True):
    b = get_custom_secret_backend(worker_mode=worker)
    cat, s3, other = (b.get_connection(c) for c in ("emm_catalog", "emm_s3", "aws_default"))
    out[str(worker)] = {"cls": f"{type(b).__module__}.{type(b).__qualname__}",
                        "catalog": [cat.conn_type, cat.host, cat.port, cat.schema, cat.login, cat.password,
                                    cat.extra_dejson],
                        "s3": [s3.conn_type, s3.extra_dejson], "other": other}
print(json.dumps(out))
"""


def _put_secret(client: Any, name: str, value: str) -> None:
    try:
        client.create_secret(Name=name, SecretString=value)
    except client.exceptions.ResourceExistsException:
        client.put_secret_value(SecretId=name, SecretString=value)


def test_secrets_backend_serves_the_connections_to_airflow_and_workers(
    values: dict[str, Any], s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    secrets = values["config"]["secrets"]
    kwargs = json.loads(secrets["backend_kwargs"])
    prefix = kwargs["connections_prefix"]
    sm = boto3.client("secretsmanager", endpoint_url=s3_server.endpoint, region_name=kwargs["region_name"],
                      aws_access_key_id="embedded", aws_secret_access_key="embedded")
    catalog = {"conn_type": "postgres", "host": "emm-sdc.abc.eu-west-1.rds.amazonaws.com", "port": 5432,
               "schema": "emm_catalog", "login": "emm_sdc", "password": "p@ss/w:rd", "extra": {"sslmode": "require"}}
    _put_secret(sm, f"{prefix}/emm_catalog", json.dumps(catalog))
    _put_secret(sm, f"{prefix}/emm_s3", json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}))
    _put_secret(sm, f"{prefix}/aws_default", json.dumps({"conn_type": "aws"}))  # not ours: never looked up
    # the values' kwargs as they are, plus only where this test's Secrets Manager is
    config = copy.deepcopy(values["config"])
    config["secrets"]["backend_kwargs"] = json.dumps({**kwargs, "endpoint_url": s3_server.endpoint})
    env = _airflow_env({"secrets": config["secrets"]}, tmp_path, AWS_ACCESS_KEY_ID="embedded",
                       AWS_SECRET_ACCESS_KEY="embedded", AWS_DEFAULT_REGION="eu-west-1")
    out = _run(_SECRETS_PROBE, env, tmp_path)
    for mode in ("False", "True"):  # the scheduler/API server/triggerer, and task workers (their fallback)
        got = out[mode]
        assert got["cls"] == secrets["backend"]
        assert got["catalog"] == ["postgres", catalog["host"], 5432, "emm_catalog", "emm_sdc", "p@ss/w:rd",
                                  {"sslmode": "require"}]
        assert got["s3"] == ["aws", {"region_name": "eu-west-1"}]
        assert got["other"] is None, "connections_lookup_pattern keeps non-SDC ids out of Secrets Manager"


_LOG_PROBE = """
import json, sys
from pathlib import Path
from airflow.config_templates import airflow_local_settings as s
io = s.REMOTE_TASK_LOG
rel = "dag_id=emm_exi_ingest/run_id=r1/task_id=plan_batch/attempt=1.log"
local = Path(sys.argv[1]) / rel
local.parent.mkdir(parents=True)
local.write_text("task log line\\n")
io.upload(rel)
print(json.dumps({"cls": type(io).__name__, "remote_base": io.remote_base, "local_left": local.exists()}))
"""


def test_task_logs_go_to_s3_with_the_values_logging_config(
    values: dict[str, Any], s3_server: EmbeddedS3, tmp_path: Path
) -> None:
    logging_cfg = values["config"]["logging"]
    base = logging_cfg["remote_base_log_folder"]
    bucket, _, prefix = base.removeprefix("s3://").partition("/")
    s3 = s3_server.client()
    if bucket not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=bucket)
    logs = tmp_path / "logs"
    conn_var = f"AIRFLOW_CONN_{logging_cfg['remote_log_conn_id'].upper()}"
    env = _airflow_env({"logging": logging_cfg}, tmp_path, AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(logs),
                       **{conn_var: aws_conn_json(s3_server.endpoint)})
    out = _run(_LOG_PROBE, env, tmp_path, str(logs))
    assert out == {"cls": "S3RemoteLogIO", "remote_base": base, "local_left": False}
    key = f"{prefix}/dag_id=emm_exi_ingest/run_id=r1/task_id=plan_batch/attempt=1.log"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"task log line\n"
    assert bucket != helm_env(values)["EMM_ARCHIVE_BUCKET"], \
        "task logs stay out of the archive the integrity reconciliation checks"


def test_mwaa_doc_sets_the_same_airflow_options_as_the_helm_values(values: dict[str, Any]) -> None:
    doc = (ROOT / "docs" / "mwaa.md").read_text()
    table = re.findall(r"^\| `([a-z_]+)\.([a-z_]+)` \| `([^`]+)` \|$", doc, re.M)
    rows = {(section, key): value for section, key, value in table}
    assert ("secrets", "backend_kwargs") in rows and len(rows) == 5, rows
    for (section, key), value in rows.items():
        ours = values["config"][section][key]
        if key.endswith("kwargs"):
            assert json.loads(value) == json.loads(ours), f"docs/mwaa.md: {section}.{key}"
        else:
            assert value == str(ours), f"docs/mwaa.md: {section}.{key}"


# -- requirements ----------------------------------------------------------------------------------------------------

def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        assert len(spec) == 1 and spec[0].operator == "==", f"{path.name}: {line}: must be pinned with =="
        pins[canonicalize_name(req.name)] = spec[0].version
    return pins


def _pip_resolves(requirements: Path, constraints: Path) -> None:
    """pip's resolver, offline: every requirement is satisfied by the pinned, installed versions."""
    proc = subprocess.run([PY, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", "--report", "-",
                           "-r", str(requirements), "-c", str(constraints)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["install"] == [], "pip would install something: not what constraints.txt pins"


def test_requirements_are_pinned_as_constraints_pin_them_and_installed() -> None:
    reqs, cons = _pins(ROOT / "requirements.txt"), _pins(ROOT / "constraints.txt")
    for name, version in reqs.items():
        assert cons.get(name) == version, f"requirements.txt: {name}=={version}, constraints.txt: {cons.get(name)}"
        assert metadata.version(name) == version, f"{name}: {metadata.version(name)} installed, {version} pinned"
    _pip_resolves(ROOT / "requirements.txt", ROOT / "constraints.txt")


# -- MWAA ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> mwaa.Bundle:
    return mwaa.build(tmp_path_factory.mktemp("mwaa") / "out")


def test_mwaa_requirements_leave_airflow_to_mwaa_and_resolve_against_the_shipped_constraints(
    bundle: mwaa.Bundle, tmp_path: Path
) -> None:
    lines = bundle.requirements.read_text().splitlines()
    assert lines[0] == f'--constraint "{mwaa.MWAA_DAGS}/constraints.txt"'
    assert (bundle.dags / "constraints.txt").read_bytes() == (ROOT / "constraints.txt").read_bytes()
    ours = _pins(ROOT / "requirements.txt")
    assert _pins(bundle.requirements) == {k: v for k, v in ours.items() if k != "apache-airflow"}
    local = tmp_path / "requirements.txt"  # the same file with the constraint path as it is here
    local.write_text("\n".join(lines[1:]) + "\n")
    _pip_resolves(local, bundle.dags / "constraints.txt")


def test_plugins_zip_holds_the_plugin_and_the_package_at_its_top_and_is_reproducible(
    bundle: mwaa.Bundle, tmp_path: Path
) -> None:
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        names = zf.namelist()
    package = sorted(p.relative_to(ROOT / "plugins").as_posix() for p in (ROOT / "plugins" / "emm_sdc").rglob("*")
                     if p.is_file() and "__pycache__" not in p.parts)
    assert names == sorted([".airflowignore", "emm_plugin.py", *package])
    assert "emm_sdc/__init__.py" in names and not any(n.endswith(".pyc") for n in names)
    again = mwaa.build(tmp_path / "again")
    assert again.plugins_zip.read_bytes() == bundle.plugins_zip.read_bytes()


def test_mwaa_bundle_dags_folder_and_pools(bundle: mwaa.Bundle) -> None:
    dags = bundle.dags
    assert sorted(p.name for p in dags.glob("*.py")) == sorted(p.name for p in (ROOT / "dags").glob("*.py"))
    for rel in ("include/itf_configs/exi.yaml", "include/sdc.yaml", "processors/launch.py",
                "processors/exi/processor.py"):
        assert (dags / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    assert not list(dags.rglob("tests")) and not list(dags.rglob("__pycache__"))
    assert (dags / ".airflowignore").read_text().splitlines()[1:] == ["include/", "processors/"]
    assert bundle.startup.read_bytes() == STARTUP.read_bytes()
    pools = json.loads(bundle.pools.read_text())
    specs = lanes.pool_specs(_configs())
    assert pools == {s["name"]: {"slots": s["slots"], "description": s["description"], "include_deferred": False}
                     for s in specs}


def _configs() -> list[Any]:
    from emm_sdc.core.config import CONFIG_FILES, load_config

    return [load_config(ROOT / "include" / "itf_configs" / name) for name in CONFIG_FILES.values()]


_MWAA_PROBE = """
import json, sys
plugins_folder, dags_folder = sys.argv[1], sys.argv[2]
from airflow import plugins_manager
plugins, errors = plugins_manager._get_plugins()
import emm_sdc
from_zip = sorted(n for n, m in list(sys.modules.items())
                  if (getattr(m, "__file__", None) or "").startswith(plugins_folder))
plugin = next(p for p in plugins if p.name == "emm_sdc")
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=dags_folder)
print(json.dumps({"plugins": [p.name for p in plugins], "errors": errors, "emm_sdc": emm_sdc.__file__,
                  "from_zip": from_zip, "apps": [a["url_prefix"] for a in plugin.fastapi_apps],
                  "dag_ids": sorted(bag.dag_ids), "import_errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "queues": sorted({t.queue for d in bag.dags.values() for t in d.tasks}),
                  "sys_path": sys.path}))
"""


def test_plugin_and_dags_load_the_way_mwaa_loads_them_from_the_bundle_alone(
    bundle: mwaa.Bundle, tmp_path: Path
) -> None:
    """A fresh interpreter with the unpacked zip as the plugins folder (on sys.path, as Airflow puts it) and the
    bundle's dags/ as the DAG folder and project root, with the startup script's settings; nothing from here."""
    plugins = tmp_path / "plugins"
    with zipfile.ZipFile(bundle.plugins_zip) as zf:
        zf.extractall(plugins)
    settings = {k: v for k, v in startup_env().items() if k.startswith("EMM_")}
    settings.update(EMM_PROJECT_ROOT=str(bundle.dags), EMM_WORK_DIR=str(tmp_path / "work"),
                    EMM_KERNEL_DIR=str(tmp_path / "kernels"), EMM_LAST_GOOD_DIR=str(tmp_path / "last-good"))
    env = _airflow_env({}, tmp_path / "home", AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
                       AIRFLOW__CORE__DAGS_FOLDER=str(bundle.dags), AWS_DEFAULT_REGION="eu-west-1", **settings)
    (tmp_path / "home").mkdir()
    out = _run(_MWAA_PROBE, env, tmp_path, str(plugins), str(bundle.dags))
    assert out["errors"] == {} and "emm_sdc" in out["plugins"]
    assert out["emm_sdc"] == str(plugins / "emm_sdc" / "__init__.py")
    assert out["apps"] == ["/emm/api", "/emm"]
    # the zip's .airflowignore keeps Airflow from loading emm_sdc's files as top-level plugin modules
    assert all(n == "emm_plugin" or n == "emm_sdc" or n.startswith("emm_sdc.") for n in out["from_zip"]), \
        out["from_zip"]
    assert not any(p.startswith(str(ROOT / "plugins")) or p.startswith(str(ROOT / "devtools"))
                   for p in out["sys_path"])
    assert out["import_errors"] == {} and set(out["dag_ids"]) == EXPECTED_DAGS
    # MWAA's workers serve only its default queue: the startup script's EMM_LANE_QUEUES=off keeps every task there
    assert out["queues"] == ["default"]


def test_build_refuses_docker_runners_and_invalid_yamls_and_writes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "src"
    shutil.copytree(ROOT / "include", root / "include")  # what the checks read
    exi = root / "include" / "itf_configs" / "exi.yaml"
    exi.write_text(exi.read_text().replace("kind: local ", "kind: docker ", 1))
    emus = root / "include" / "itf_configs" / "emus.yaml"
    emus.write_text(emus.read_text().replace("alerts:", "alerts:\n  no_such_field: 1", 1))
    out = tmp_path / "out"
    with pytest.raises(mwaa.BuildError) as err:
        mwaa.build(out, root=root)
    problems = err.value.problems
    assert any(p.startswith(f"{emus}: alerts.no_such_field: ") for p in problems), problems
    assert f"{exi}: processing.runner.kind: 'docker' needs a container engine, which MWAA does not have; " \
           "use 'batch' (or 'local') there" in problems
    assert not out.exists()
