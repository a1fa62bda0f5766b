"""``./sdc`` commands: the end-to-end demo, Airflow standalone on embedded services, catalog migrations.

    ./sdc demo          run the SDC's main job end to end on embedded services; print a summary
    ./sdc standalone    a local SDC that keeps its data: Airflow (UI on 127.0.0.1:8080) on embedded services
                        (--executor celery: CeleryExecutor, a Redis broker and --workers Celery workers)
    ./sdc airflow       the Airflow CLI against the running standalone
    ./sdc deliver       deliver more synthetic orbits to a running standalone's inbox
    ./sdc check-config  validate ITF YAMLs (and include/sdc.yaml) before pushing them
    ./sdc api           the science-files API alone (uvicorn), e.g. behind a deployment's own gateway
    ./sdc migrate       apply catalog migrations using the emm_catalog connection
    ./sdc promote       promote a checked ITF image to production;  ./sdc images: list images and checks
    ./sdc batch-template  the AWS Batch CloudFormation stack generated from the ITF YAMLs (docs/aws_batch.md)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from emm_sdc.core.settings import project_root

INSTRUMENTS = ("exi", "emu", "emr")
STANDALONE_SPK_END = 40  # the standalone's predicted SPK covers orbits 10..39


def _say(msg: str) -> None:
    print(msg, flush=True)


def _airflow(args: list[str], env: dict[str, str], log_path: Path) -> tuple[bool, float]:
    """Run an ``airflow`` CLI command, its output to ``log_path``; return (ok, seconds)."""
    t0 = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as fh:
        proc = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    return proc.returncode == 0, time.monotonic() - t0


def _run_dags(dag_ids: Sequence[str], env: dict[str, str], log_dir: Path) -> bool:
    """Run DAGs one after another with ``dag.test()`` in one Airflow process (start-up paid once).

    Each item is a dag_id, or ``dag_id=<JSON run conf>``.
    """
    proc = subprocess.run([sys.executable, "-m", "emm_dev.cli", "dagtest", "--log-dir", str(log_dir), *dag_ids],
                          env=env, check=False)
    return proc.returncode == 0


def cmd_dagtest(args: argparse.Namespace) -> int:
    """Internal: ``dag.test()`` each DAG; its log to a file, one progress line to stdout."""
    progress = os.fdopen(os.dup(1), "w", buffering=1)
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    from emm_sdc.factory import instrument_dags
    from emm_sdc.pipeline.release import build_release_dag
    from emm_sdc.pipeline.spice import build_spice_refresh_dag
    from emm_sdc.pipeline.staging import build_promote_dag

    dags = {"emm_image_promote": build_promote_dag(), "emm_spice_refresh": build_spice_refresh_dag(),
            "emm_public_release": build_release_dag()}
    for inst in INSTRUMENTS:
        dags.update(instrument_dags(inst))
    ok = True
    for spec in args.dag_ids:
        if spec == "@triggered":  # resolved when reached: the runs queued by the DAGs run before it
            todo = _queued_reprocessing()
            if not todo:
                progress.write("      (no processing run was queued by the SPICE refresh)\n")
        else:
            dag_id, _, conf_text = spec.partition("=")
            todo = [(dag_id, json.loads(conf_text) if conf_text else None, "")]
        for dag_id, conf, why in todo:
            if why:
                progress.write(f"      {dag_id} queued by the SPICE refresh, its note: {why[:150]}...\n")
            ok &= _dag_test(dags[dag_id], conf, log_dir, progress)
    return 0 if ok else 1


def _dag_test(dag: Any, conf: dict[str, Any] | None, log_dir: Path, progress: Any) -> bool:
    """``dag.test()`` one DAG with its output in a log file; one progress line."""
    from emm_sdc.alerts import dag_test

    log_path = log_dir / f"{dag.dag_id}-{time.strftime('%H%M%S')}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    with log_path.open("w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        t0 = time.monotonic()
        try:
            state = str(dag_test(dag, run_conf=conf).state)
        except Exception as exc:  # reported, and the demo fails
            logging.getLogger(__name__).exception("dag.test of %s raised", dag.dag_id)
            state = f"error: {exc}"
        sys.stdout.flush()
        sys.stderr.flush()
    good = state.endswith("success")
    progress.write(f"      dag.test {dag.dag_id:18} {'success' if good else state.upper()} "
                   f"({time.monotonic() - t0:.0f} s)  log: {log_path}\n")
    return good


def _queued_reprocessing() -> list[tuple[str, dict[str, Any] | None, str]]:
    """The processing runs the SPICE refresh queued (TriggerDagRunOperator), oldest first.

    With no scheduler in the demo, their conf is run with ``dag.test`` (a new run); the queued
    run itself stays queued, as a scheduler-less Airflow would leave it.
    """
    from emm_sdc.pipeline.spice import reprocessing_runs

    return [(r["dag_id"], r["conf"], r["note"] or str(r["conf"].get("reason", "")))
            for r in reprocessing_runs(queued_only=True)]


class Services:
    """Embedded S3 + PostgreSQL and the environment that points Airflow at them.

    ``fresh``: wipe ``state`` first. ``persist``: moto's S3 state (inbox and archive: every object version,
    its metadata and bytes) is restored from ``<state>/s3-state.pickle`` at start and saved there at
    :meth:`close` and every :data:`S3_CHECKPOINT_SECONDS` while something changed, so that with the
    PostgreSQL data directory (catalog and Airflow's metadata DB) a restart keeps everything. Cognito's demo
    users are made anew at every start. One process at a time uses a state dir (``services.json``). moto's
    state is per process: a new state dir's buckets start empty even when an earlier Services of this process
    left objects in them; two Services alive at once in one process would share the buckets.
    ``inbox_events``: the inbox bucket's S3 event notifications go to SQS queues on the same endpoint and
    ``EMM_INBOX_QUEUE_URL_PREFIX`` is set, so ingest starts on each delivery (emm_sdc/inbox_events.py).
    """

    S3_SNAPSHOT = "s3-state.pickle"
    S3_CHECKPOINT_SECONDS = 60.0

    def __init__(self, state: Path, *, fresh: bool, persist: bool = False, inbox_events: bool = True):
        from emm_dev.embedded import EmbeddedPostgres, EmbeddedS3, airflow_env

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        owner = _state_owner(state)
        if owner is not None:
            raise RuntimeError(f"{state} is in use by process {owner} (a running standalone or demo): stop it "
                               "first, or use another --state-dir")
        if fresh and state.exists():
            EmbeddedPostgres(state / "pgdata").stop_stale()
            shutil.rmtree(state)
        state.mkdir(parents=True, exist_ok=True)
        self.state = state
        #: No data directory yet: a new state dir (or one --fresh wiped).
        self.created = not (state / "pgdata").exists()
        info = state / "services.json"
        before = json.loads(info.read_text()) if info.exists() else {}
        #: The previous run of this state dir ended without :meth:`close` (killed, or the machine stopped).
        self.unclean_stop = bool(before) and "stopped" not in before
        self.pg = EmbeddedPostgres(state / "pgdata").start()
        self.s3 = EmbeddedS3(snapshot=state / self.S3_SNAPSHOT if persist else None,
                             checkpoint_seconds=self.S3_CHECKPOINT_SECONDS if persist else 0.0).start()
        from emm_dev.embedded import cognito_env

        self.cognito = cognito_env(self.s3.endpoint)
        self.env = {**os.environ, **airflow_env(state, self.s3.endpoint, self.pg), **self.cognito}
        # Airflow's components and the `airflow` CLI run with this interpreter's bin/ first on PATH.
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self._info = {"s3_endpoint": self.s3.endpoint, "catalog": self.pg.conn_json(), "pid": os.getpid(),
                      "started": time.time()}
        info.write_text(json.dumps(self._info))
        from emm_sdc.core import catalog

        self.catalog_conn = self.pg.connect()
        self.applied = catalog.migrate(self.catalog_conn)
        client = self.s3.client()
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for bucket in ("emm-sdc-inbox", "emm-sdc-archive"):
            if bucket not in have:
                client.create_bucket(Bucket=bucket)
            elif self.created and not self.s3.restored_buckets:
                # moto keeps S3 in this process's memory, shared by every server it starts: an earlier
                # Services of this process (a benchmark's previous executor, a test module's) left its archive
                # here. A new state dir starts with empty buckets.
                _empty_bucket(client, bucket)
        self.client = client
        if inbox_events:
            from emm_sdc.inbox_events import configure_inbox_events, inbox_areas, queue_url_prefix

            urls = configure_inbox_events(client, self.s3.client("sqs"), "emm-sdc-inbox", inbox_areas())
            self.env["EMM_INBOX_QUEUE_URL_PREFIX"] = queue_url_prefix(urls["spice"])

    def close(self) -> None:
        self.catalog_conn.close()
        self.s3.stop()
        self.pg.stop()
        (self.state / "services.json").write_text(json.dumps({**self._info, "stopped": time.time()}))


def _empty_bucket(client: Any, bucket: str) -> None:
    """Delete every object version and delete marker of a bucket (the embedded S3 only)."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if doomed:
            client.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})


def _state_owner(state: Path) -> int | None:
    """The pid of another live process that runs services on ``state`` (``services.json``), if any."""
    import psutil

    try:
        info = json.loads((state / "services.json").read_text())
        pid = int(info["pid"])
        proc = psutil.Process(pid)
        # A pid reused by a process started after the services were is not their owner.
        alive = proc.status() != psutil.STATUS_ZOMBIE and proc.create_time() <= float(info.get("started", 0)) + 1
    except (OSError, ValueError, KeyError, psutil.Error):
        return None
    return pid if alive and "stopped" not in info and pid != os.getpid() else None


def _deliver_synthetic(client: Any, out: Path, orbits: Sequence[int], *, anomalies: bool) -> dict[str, Any]:
    """Write synthetic MOC files for every instrument and upload them to the inbox."""
    from emm_dev import synthetic
    from emm_dev.moc import deliver
    from emm_sdc.core.config import load_instrument

    files = synthetic.generate(out, orbits=orbits)
    bad: list[synthetic.Delivered] = []
    if anomalies:
        by = {inst: [f for f in files if f.instrument == inst and f.level == "l0"] for inst in INSTRUMENTS}
        bad = [
            synthetic.corrupt(out, by["exi"][0]),
            synthetic.truncated(out, by["emr"][0]),
            synthetic.misnamed(out, by["emu"][0], rule="orbit"),
            synthetic.zero_byte(out, by["emr"][1]),
            synthetic.missing_sidecar(out, by["exi"][1]),
        ]
    for inst in INSTRUMENTS:
        prefix = load_instrument(inst).ingest.inbox_prefix
        deliver(client, "emm-sdc-inbox", prefix, [f for f in files + bad if f.instrument == inst])
    return {"valid": files, "anomalies": bad}


def _deliver_kernels(client: Any, out: Path, first_orbit: int, end_orbit: int, kernel_class: str, *,
                     generic: bool, version: int = 1) -> list[Any]:
    """Write a synthetic MOC kernel delivery (Hope SPK over [first_orbit, end_orbit)) and upload it."""
    from emm_dev import synthetic, synthetic_spice
    from emm_dev.moc import deliver
    from emm_sdc.core.settings import get_settings

    files = synthetic_spice.kernel_delivery(out, start=synthetic.orbit_start(first_orbit),
                                            end=synthetic.orbit_start(end_orbit), spk_class=kernel_class,
                                            version=version, generic=generic)
    deliver(client, "emm-sdc-inbox", get_settings().spice_inbox_prefix, files)
    return files


def _api_tour(svc: Services) -> str:
    """Log in as a team and a public user the way the published clients do, query, download one file each."""
    import hashlib
    import threading

    import requests
    import uvicorn

    from emm_dev.embedded import CATALOG_DB, DEMO_USERS, free_port
    from emm_sdc.api.app import Backends, create_app
    from emm_sdc.api.config import api_settings

    os.environ.update(svc.cognito)
    api_settings.cache_clear()
    backends = Backends(lambda: svc.pg.conninfo(CATALOG_DB), svc.s3.client)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(backends), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    lines = [f"API (the same app Airflow's API server mounts at /emm/api) at {base}; Cognito (moto) at "
             f"{svc.cognito['EMM_COGNITO_ENDPOINT']}, app client {svc.cognito['EMM_COGNITO_CLIENT_ID']}"]
    try:
        for user in ("team", "public"):
            password = DEMO_USERS[user][0]
            auth = requests.post(svc.cognito["EMM_COGNITO_ENDPOINT"] + "/", timeout=10, headers={
                "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
                "Content-Type": "application/x-amz-json-1.1"}, data=json.dumps({
                    "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": svc.cognito["EMM_COGNITO_CLIENT_ID"],
                    "AuthParameters": {"USERNAME": user, "PASSWORD": password}}))
            token = auth.json()["AuthenticationResult"]["AccessToken"]
            records = requests.get(base + "/science-files-metadata?latest=true", headers={"Authorization": token},
                                   timeout=60).json()
            released = sum(r["released"] for r in records)
            levels = sorted({f"{r['instrument_id']}/{r['data_level']}" for r in records})
            lines.append(f"  {user:6s} (password {password}): sees {len(records)} latest files ({released} released)"
                         f"; {', '.join(levels) or 'nothing'}")
            if records:
                pick = records[0]
                url = requests.get(base + "/science-files-download?file_name=" + pick["file_name"],
                                   headers={"Authorization": token}, timeout=60).text
                body = requests.get(url, timeout=60).content
                ok = hashlib.md5(body).hexdigest() == pick["md5checksum"]
                lines.append(f"         downloaded {pick['file_name']} ({len(body):,} bytes, MD5 "
                             f"{'matches' if ok else 'DOES NOT MATCH'} the catalog)")
    finally:
        server.should_exit = True
        thread.join(10)
        backends.close()
    return "\n".join(lines)


def _summary(svc: Services, received: int) -> str:
    from emm_sdc.core.catalog import Catalog

    cat = Catalog(svc.catalog_conn)
    lines = ["", "=" * 78, "EMM SDC demo: what the SDC made", "=" * 78]
    outcomes: dict[str, int] = {}
    for r in cat.delivery_outcomes():
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + r["files"]
    inbox = svc.client.list_objects_v2(Bucket="emm-sdc-inbox").get("KeyCount", 0)
    lines.append(f"Files delivered by the MOC (data files and kernels, without sidecars): {received}")
    lines.append(f"  archived+indexed: {outcomes.get('archived', 0)}   duplicates (no-op): "
                 f"{outcomes.get('duplicate', 0)}   quarantined: {outcomes.get('quarantined', 0)}   "
                 f"still in inbox (waiting for a sidecar): {inbox}")
    lines.append("Quarantined (reason code: reason):")
    for q in cat.quarantine_list():
        lines.append(f"  {q['original_key'].rsplit('/', 1)[-1]}")
        lines.append(f"      {q['reason_code']}: {q['reason'][:150]}")
    lines.append("Archive by instrument and level (catalog):")
    lines.append(f"  {'inst':5} {'level':6} {'type':10} {'files':>6} {'bytes':>12}")
    for r in cat.counts_by_level():
        lines.append(f"  {r['instrument_id']:5} {r['data_level']:6} {r['product_type']:10} "
                     f"{r['files']:>6} {int(r['bytes']):>12,}")
    lines.append("Processing runs (instrument, runner, image, environment: status count):")
    for r in cat.runs_by_runner():
        lines.append(f"  {r['instrument_id']:5} {r['runner']:7} {r['image']:32} {r['environment']:10} "
                     f"{r['status']} {r['runs']}")
    lines.append("Catalog rows: " + ", ".join(f"{r['table_name']} {r['rows']}" for r in cat.table_counts()))
    keys = [o["Key"] for page in svc.client.get_paginator("list_objects_v2").paginate(Bucket="emm-sdc-archive")
            for o in page.get("Contents", [])]
    by_root: dict[str, int] = {}
    for k in keys:
        root = "/".join(k.split("/")[:2])
        by_root[root] = by_root.get(root, 0) + 1
    lines.append("Archive bucket s3://emm-sdc-archive: " + ", ".join(f"{k}/ {v}" for k, v in sorted(by_root.items())))
    lines.append("SPICE kernels (active) and meta-kernels:")
    for k in cat.active_kernels():
        span = (f"  {k['coverage_start']:%Y-%m-%dT%H:%M} .. {k['coverage_end']:%Y-%m-%dT%H:%M}"
                if k["coverage_start"] else "")
        lines.append(f"  {k['file_name']:36} {k['kind']:5} class {k['kernel_class'] or '-'}{span}")
    lines.append("  " + ", ".join(f"{m['file_name']} ({len(m['kernels'])} kernels)"
                                  for m in cat.meta_kernels()))
    lines.append("Latest products by kernel class (p predicted, r reconstructed, n none) and revision:")
    lines.append(f"  {'inst':5} {'level':6} {'class':5} {'rev':>3} {'files':>6}")
    for r in cat.latest_by_kernel_class():
        lines.append(f"  {r['instrument_id']:5} {r['data_level']:6} {r['pred_rec']:5} {r['revision']:>3} "
                     f"{r['files']:>6}")
    for g in filter(None, [cat.sample_geometry()]):
        lines.append(f"Geometry of {g['file_name']}:")
        lines.append(f"  Ls {g['mars_ls']:.3f} deg, local solar time {g['spacecraft_lst']:.3f} h, "
                     f"sub-spacecraft {g['spacecraft_lat']:.3f} N {g['spacecraft_lon']:.3f} E, "
                     f"altitude {g['spacecraft_alt']:,.1f} km, subsolar {g['subsolar_lat']:.3f} N "
                     f"{g['subsolar_lon']:.3f} E")
    sample = cat.sample_lineage()
    if sample:
        lines.append("Lineage example:")
        for r in sample:
            lines.append(f"  {r['product']}  <-  {r['input']}")
    lines.append(f"State, logs and data: {svc.state}")
    return "\n".join(lines)


def _container_setup(env: dict[str, str]) -> str | None:
    """Make sure a Docker-API engine with the reference images is there; return a problem, if any."""
    root = project_root()
    if not env.get("DOCKER_HOST"):
        proc = subprocess.run([str(root / "scripts/container-engine")], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return proc.stderr.strip() or "could not start a container engine"
        env["DOCKER_HOST"] = proc.stdout.strip()
    build = subprocess.run([str(root / "scripts/build-images")], env=env, capture_output=True, text=True,
                           check=False)
    return None if build.returncode == 0 else build.stderr.strip()[-2000:]


def _runner_kinds() -> dict[str, Any]:
    from emm_sdc.core.config import load_instrument

    return {inst: load_instrument(inst).processing.runner for inst in INSTRUMENTS}


def _first_images(svc: Services, state: Path) -> bool:
    """For instruments that run containers and have no production image yet: staging check + promotion."""
    from emm_sdc.core import images
    from emm_sdc.core.catalog import Catalog

    ok = True
    cat = Catalog(svc.catalog_conn)
    for inst, runner in _runner_kinds().items():
        if runner.kind != "docker" or images.production_image(cat, inst) == runner.image:
            continue
        _say(f"      {inst} runs in containers: staging check of {runner.image}, then its promotion")
        conf = json.dumps({"candidate_image": runner.image})
        ok &= _run_dags([f"emm_{inst}_staging_check={conf}"], svc.env, state / "logs")
        conf = json.dumps({"instrument": inst, "image": runner.image, "reason": "first image (demo)"})
        ok &= _run_dags([f"emm_image_promote={conf}"], svc.env, state / "logs")
    return ok


def cmd_demo(args: argparse.Namespace) -> int:
    """The SDC's main job end to end, on embedded services."""
    state = Path(args.state_dir).resolve()
    t0 = time.monotonic()
    _say(f"[1/6] Starting embedded services (state in {state})")
    kinds = {inst: r.kind for inst, r in _runner_kinds().items()}
    if "batch" in kinds.values():
        _say(f"The demo runs the local and docker runners; batch needs AWS Batch (runner kinds: {kinds}).")
        return 2
    svc = Services(state, fresh=True)
    _seed_last_good()
    if "docker" in kinds.values():
        problem = _container_setup(svc.env)
        if problem:
            _say(f"runner: docker needs a Docker-API engine (podman or Docker): {problem}")
            svc.close()
            return 1
        _say(f"      container engine at {svc.env['DOCKER_HOST']}; reference images built")
    try:
        _say(f"      S3 (moto server) at {svc.s3.endpoint}; PostgreSQL at {svc.pg.socket_dir}")
        _say(f"      catalog migrations applied: {', '.join(svc.applied)}")
        done, secs = _airflow(["db", "migrate"], svc.env, state / "logs" / "airflow-db-migrate.log")
        _say(f"[2/6] airflow db migrate: {'ok' if done else 'FAILED'} ({secs:.0f} s)")
        if not done:
            return 1
        _say("[3/6] MOC delivers SPICE kernels (LSK, Mars PCK, SCLK, planetary SPK, a predicted Hope SPK for "
             "orbits 0010-0013) and orbits 0011-0012 for EXI, EMUS, EMIRS (+ corrupt, truncated, misnamed, "
             "zero-byte, sidecar-less files)")
        kernels = _deliver_kernels(svc.client, state / "moc" / "kernels-1", 10, 14, "p", generic=True)
        first = _deliver_synthetic(svc.client, state / "moc" / "delivery-1", (11, 12), anomalies=True)
        received = len(first["valid"]) + len(first["anomalies"]) + len(kernels)

        ingest = [f"emm_{inst}_ingest" for inst in INSTRUMENTS]
        process = [f"emm_{inst}_process" for inst in INSTRUMENTS]
        _say("[4/6] SPICE refresh, ingest, then processing, per instrument (real Airflow runs through dag.test())")
        ok = _run_dags(["emm_spice_refresh", *ingest], svc.env, state / "logs")
        ok &= _first_images(svc, state)
        ok &= _run_dags(process, svc.env, state / "logs")
        _say("[5/6] Second delivery: a reconstructed Hope SPK for orbit 0011, orbit 0013, an identical "
             "re-delivery (duplicate) and a same-name file with different content (conflict)")
        from emm_dev import synthetic

        better = _deliver_kernels(svc.client, state / "moc" / "kernels-2", 11, 12, "r", generic=False)
        again = _deliver_synthetic(svc.client, state / "moc" / "delivery-2", (13,), anomalies=False)
        from emm_dev.moc import deliver

        dup = next(f for f in first["valid"] if f.instrument == "exi" and f.level == "l0")
        source = next(f for f in first["valid"] if f.instrument == "emr" and f.level == "l0")
        conflict = synthetic.conflicting(state / "moc" / "conflict", source)
        deliver(svc.client, "emm-sdc-inbox", "inbox/exi/", [dup])
        deliver(svc.client, "emm-sdc-inbox", "inbox/emr/", [conflict])
        received += len(again["valid"]) + len(better) + 2
        ok &= _run_dags(["emm_spice_refresh", *ingest, *process, "@triggered"], svc.env, state / "logs")
        _say("      Public release of batch 2 (observations of Jun-Aug 2021; the ITF YAMLs release r/f products)")
        ok &= _run_dags(['emm_public_release={"batch": 2}'], svc.env, state / "logs")
        _say("[6/6] Summary")
        _say(_summary(svc, received))
        _say("Science-files API: log in, query, download (as the published EMM clients do)")
        _say(_api_tour(svc))
        # Integrity reconciliation (docs/reconciliation.md): damage one archived product behind the SDC's back
        # (same size, other bytes), then one real run of emm_integrity_reconcile; it must find exactly that.
        from emm_sdc.core.catalog import Catalog

        for victim in filter(None, [Catalog(svc.catalog_conn).first_product()]):
            svc.client.put_object(Bucket="emm-sdc-archive", Key=victim["s3_key"], Body=b"\0" * victim["file_size"])
            _say(f"Integrity reconciliation after overwriting s3://emm-sdc-archive/{victim['s3_key']} behind the "
                 "SDC's back")
            ok &= subprocess.run([sys.executable, "-m", "emm_dev.reconcile_demo", str(state / "logs")],
                                 env=svc.env, check=False).returncode == 0
        _say(f"\nDemo {'finished' if ok else 'FINISHED WITH FAILURES'} in {time.monotonic() - t0:.0f} s.")
        return 0 if ok else 1
    finally:
        svc.close()


class _Stopped(Exception):
    """SIGTERM: the standalone stops as on Ctrl-C."""


def _raise_stopped(*_: Any) -> None:
    raise _Stopped


def _port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the API server does: TIME_WAIT is no use
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


INITIAL_DELIVERY = "initial-delivery.json"


def _seed_last_good() -> None:
    """Keep a last-good copy of every valid YAML before Airflow starts (emm_config_check keeps them later)."""
    from emm_sdc.core import config_store

    for result in config_store.seed_last_good():
        if not result.ok:
            _say("config problem (the instrument runs on its last-good copy, if any):\n  "
                 + "\n  ".join(result.lines()))


def cmd_standalone(args: argparse.Namespace) -> int:
    """Airflow (API server + UI, scheduler, DAG processor, triggerer) on embedded services; its state (catalog,
    archive, Airflow's metadata DB) is kept in the state dir across restarts unless ``--fresh``."""
    from emm_dev.airflow_local import AirflowLocal, AirflowLocalError, default_parallelism
    from emm_dev.embedded import DEMO_USERS
    from emm_sdc.lanes import QUEUES

    state = Path(args.state_dir).resolve()
    if _port_in_use(args.host, args.port):
        _say(f"port {args.port} on {args.host} is in use (another standalone?): pick another with --port")
        return 2
    parallelism = args.parallelism or default_parallelism()
    if args.executor == "celery" and args.workers < 1:
        _say(f"--workers must be at least 1, got {args.workers}")
        return 2
    af = AirflowLocal(state, fresh=args.fresh, persist=True, host=args.host, port=args.port, dags=None,
                      parallelism=parallelism, start_timeout=600, executor=args.executor,
                      celery_workers=args.workers)
    signal.signal(signal.SIGTERM, _raise_stopped)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, even when started with SIGINT ignored (&)
    rc = 0
    try:
        try:
            af.start_services()
        except RuntimeError as exc:  # the state dir is in use, or its S3 state cannot be read
            _say(str(exc))
            return 2
        svc = af.svc
        _seed_last_good()
        how = "reset by --fresh" if args.fresh else "new" if svc.created else "kept from the last run"
        _say(f"State in {state} ({how}): catalog and Airflow metadata in "
             f"PostgreSQL (socket {svc.pg.socket_dir}), inbox and archive in S3 (moto) at {svc.s3.endpoint}, "
             f"saved to {svc.state / svc.S3_SNAPSHOT} at stop and every {svc.S3_CHECKPOINT_SECONDS:.0f} s "
             "while it changes")
        if svc.s3.restored_buckets:
            archived = sum(p.get("KeyCount", 0) for p in svc.client.get_paginator("list_objects_v2").paginate(
                Bucket="emm-sdc-archive"))
            _say(f"  restored S3: {svc.s3.restored_buckets} buckets, {archived} archived objects")
        if svc.unclean_stop:
            _say("  WARNING: the last run did not stop cleanly (killed?): S3 changes after its last checkpoint are "
                 "lost, so the catalog may name archived objects that are missing")
        marker = state / INITIAL_DELIVERY
        if marker.exists():
            _say(f"  the initial synthetic delivery was made on the first start ({marker}); not again")
        else:
            _deliver_kernels(svc.client, state / "moc" / "kernels-1", 10, STANDALONE_SPK_END, "p", generic=True)
            _deliver_synthetic(svc.client, state / "moc" / "delivery-1", (11, 12), anomalies=True)
            marker.write_text(json.dumps({"delivered": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "orbits": [11, 12]}))
            _say(f"Delivered SPICE kernels (predicted Hope SPK for orbits 0010-{STANDALONE_SPK_END - 1:04d}) to "
                 "s3://emm-sdc-inbox/inbox/spice/ and orbits 0011-0012 to s3://emm-sdc-inbox/inbox/<inst>/. "
                 "emm_spice_refresh and the ingest DAGs pick them up; processing follows on the L0 Asset events.")
        if args.executor == "celery":
            assert af.redis is not None
            executor = (f"CeleryExecutor on Redis at {af.redis.url}, with {af.celery_workers} Celery workers of "
                        f"{af.worker_concurrency} slots each, every one serving the queues default, "
                        + ", ".join(QUEUES.values()))
        else:
            executor = f"LocalExecutor, parallelism {parallelism}"
        _say(f"Starting Airflow: API server + UI on {args.host}:{args.port}, scheduler ({executor}), DAG processor, "
             f"triggerer; logs in {af.logs}")
        af.start_airflow()
        _write_airflow_env(state, af.env)
        url = af.base_url
        _say(f"Airflow UI: {url}  (user 'admin', password {af._password}; kept in {af.password_file})")
        _say(f"Science-files API: {url}/emm/api/science-files-metadata (docs at /emm/api/docs); log in at "
             f"{svc.cognito['EMM_COGNITO_ENDPOINT']} with app client {svc.cognito['EMM_COGNITO_CLIENT_ID']} as "
             + ", ".join(f"{u}/{pw} ({', '.join(g)})" for u, (pw, g) in DEMO_USERS.items()))
        _say(f"Science data page: {url}/emm/  (log in as "
             + ", ".join(f"{u}/{pw}" for u, (pw, _g) in DEMO_USERS.items()) + ")")
        _say(f"More data: ./sdc deliver --state-dir {args.state_dir} --orbits 13 14;  a reconstructed SPK "
             f"(reprocesses orbit 11's products): ./sdc deliver --state-dir {args.state_dir} --orbits 11 --spk r")
        _say(f"Airflow CLI on this instance: ./sdc airflow --state-dir {args.state_dir} <command> (e.g. dags list, "
             "backfill create --dag-id emm_exi_reprocess ...); its config: "
             f"{Path(af.env['AIRFLOW_HOME']) / 'airflow.cfg'}")
        for file_name, trace in af.import_errors():
            _say(f"DAG IMPORT ERROR in {file_name}: {trace.strip().splitlines()[-1] if trace.strip() else '?'}")
        workers = f", {af.celery_workers} Celery workers ready" if af.celery_workers else ""
        _say(f"Airflow is ready ({af.startup_seconds:.0f} s): UI and API answer, scheduler, DAG processor and "
             f"triggerer healthy{workers}, every DAG file parsed. Ctrl-C (or SIGTERM) stops it; the state is kept.")
        while True:  # supervise: a component that dies stops the standalone, with its log's end
            af.check_alive()
            time.sleep(2)
    except (KeyboardInterrupt, _Stopped):
        pass
    except AirflowLocalError as exc:
        _say(f"Airflow failed: {exc}")
        rc = 1
    finally:
        # A second Ctrl-C must not interrupt the stop that saves the S3 state.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _say("Stopping Airflow, then the services (saving the S3 state)...")
        af.stop()
        _say(f"Stopped. State kept in {state}: ./sdc standalone starts it again; ./sdc standalone --fresh resets it.")
    return rc


AIRFLOW_ENV_FILE = "airflow.env.json"


def _write_airflow_env(state: Path, env: dict[str, str]) -> None:
    """The standalone's Airflow/SDC settings, for ``./sdc airflow`` (owner-only: it names local services)."""
    keep = {k: v for k, v in env.items() if k.startswith(("AIRFLOW", "EMM_", "AWS_")) or k in ("PYTHONPATH", "PATH")}
    path = state / AIRFLOW_ENV_FILE
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        json.dump(keep, fh, indent=1)
    path.chmod(0o600)


def cmd_airflow(args: argparse.Namespace) -> int:
    """The ``airflow`` CLI against a running standalone (its metadata DB, connections, DAG folder and config)."""
    state = Path(args.state_dir).resolve()
    path = state / AIRFLOW_ENV_FILE
    if not path.exists():
        _say(f"no standalone settings at {path}: start one with ./sdc standalone --state-dir {args.state_dir}")
        return 2
    if _state_owner(state) is None:
        _say(f"the standalone of {state} is not running: start it with ./sdc standalone --state-dir "
             f"{args.state_dir} (its metadata DB runs with it)")
        return 2
    env = {**os.environ, **json.loads(path.read_text())}
    return subprocess.run([sys.executable, "-m", "airflow", *args.airflow_args], env=env, check=False).returncode


def cmd_api(args: argparse.Namespace) -> int:
    """The science-files API alone (behind a deployment's own gateway), from the Airflow connections in the env."""
    import uvicorn

    from emm_sdc.api.app import create_app

    uvicorn.run(create_app(), host=args.host, port=args.port, log_level="info", proxy_headers=True)
    return 0


def cmd_deliver(args: argparse.Namespace) -> int:
    """Upload more synthetic orbits to the inbox of a running standalone (after checking the ITF YAMLs)."""
    import boto3

    from emm_sdc.core import config_store

    broken = [r for r in (config_store.check(config_store.instrument_file(i), keep=False) for i in INSTRUMENTS)
              if not r.ok]
    if broken:
        _say("refusing to deliver: the ITF configs it relies on (inbox prefixes, processing) are invalid; "
             "nothing was uploaded")
        for r in broken:
            _say("\n".join(f"  {line}" for line in r.lines()))
        _say("fix them (./sdc check-config lists the problems) and deliver again")
        return 1
    info_path = Path(args.state_dir) / "services.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    if not info or "stopped" in info:
        _say(f"no running standalone in {args.state_dir}: start one with ./sdc standalone --state-dir {args.state_dir}")
        return 2
    client = boto3.client("s3", endpoint_url=info["s3_endpoint"], region_name="us-east-1",
                          aws_access_key_id="embedded", aws_secret_access_key="embedded")  # noqa: S106
    out = Path(args.state_dir) / "moc" / f"delivery-{int(time.time())}"
    if args.spk:
        files = _deliver_kernels(client, out, min(args.orbits), max(args.orbits) + 1, args.spk, generic=False,
                                 version=args.version)
        _say(f"delivered {', '.join(f.file_name for f in files)} (class {args.spk}) for orbits {args.orbits}")
        return 0
    sent = _deliver_synthetic(client, out, tuple(args.orbits), anomalies=False)
    _say(f"delivered {len(sent['valid'])} files for orbits {args.orbits}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate ITF YAMLs (default: every one in the config folder, and the site config) before they are pushed.

    Prints every problem as ``file: field: rule``; exit 1 on any, 0 with a short summary otherwise. With
    ``--accept``, each valid live config is also kept as its last-good copy (as the emm_config_check DAG does).
    """
    from emm_sdc.core import config_store

    files = [config_store.file_for_path(p) for p in args.paths] if args.paths else config_store.config_files()
    results = []
    for cf in files:
        keep = args.accept and config_store.is_live(cf)
        if args.accept and not keep:
            _say(f"{cf.path}: not a config the SDC runs on, so it is only checked (no last-good copy)")
        results.append(config_store.check(cf, keep=keep))
    for r in results:
        _say("\n".join(r.lines()))
    bad = [r for r in results if not r.ok]
    if bad:
        problems = sum(len(r.error.problems) for r in bad if r.error is not None)
        _say(f"FAILED: {problems} problem(s) in {len(bad)} of {len(results)} file(s)")
        return 1
    kept = sum(r.kept for r in results)
    _say(f"OK: {len(results)} file(s) valid" + (f"; {kept} kept as last-good copies in "
                                                   f"{config_store.last_good_dir()}" if kept else ""))
    return 0


def cmd_migrate(_args: argparse.Namespace) -> int:
    from emm_sdc import connections
    from emm_sdc.core import catalog

    applied = catalog.migrate(connections.catalog().conn)
    _say(f"applied: {', '.join(applied) or 'nothing (up to date)'}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    """Promote a checked candidate image to production (same rules as the emm_image_promote DAG)."""
    from emm_sdc import connections
    from emm_sdc.core import images

    try:
        record = images.promote(connections.catalog(), args.instrument, args.image,
                                promoted_by=f"cli:{os.environ.get('USER', 'unknown')}", reason=args.reason)
    except images.PromotionRefused as exc:
        _say(f"refused: {exc}")
        return 1
    _say(f"{args.image} is now production for {args.instrument} (staging check {record['staging_check_id']}, "
         f"previous {record['previous_image']}). Set processing.runner.image to it in the ITF config.")
    from emm_sdc.campaigns import backfill_command
    from emm_sdc.core.config import load_instrument

    cmd = backfill_command(connections.catalog(), load_instrument(args.instrument), f"image {args.image} promoted",
                           campaign=f"{args.instrument} image {args.image.rsplit(':', 1)[-1]}")
    if cmd:
        _say(f"Then reprocess the archive with it:\n  {cmd}")
    return 0


def cmd_images(_args: argparse.Namespace) -> int:
    """Production image and staging checks of every instrument."""
    from emm_sdc import connections
    from emm_sdc.core import images

    cat = connections.catalog()
    for inst in INSTRUMENTS:
        _say(f"{inst}: production {images.production_image(cat, inst) or '(none promoted)'}")
        for c in cat.staging_checks_of(inst):
            _say(f"    check {c['id']} {c['status']:7} candidate {c['candidate_image']} vs "
                 f"{c['production_image'] or '(first image)'}  {c['report_uri'] or ''}")
    return 0


def cmd_campaigns(args: argparse.Namespace) -> int:
    """Reprocessing campaigns, newest first; with --suggest, the backfills a config change calls for."""
    from emm_sdc import connections
    from emm_sdc.campaigns import format_campaign, suggestions
    from emm_sdc.core.config import load_instrument

    cat = connections.catalog()
    rows = cat.campaigns_summary(args.instrument, args.limit)
    for c in rows:
        _say(format_campaign(c))
    if not rows:
        _say("no reprocessing campaigns yet")
    if args.suggest:
        found = [s for inst in ([args.instrument] if args.instrument else INSTRUMENTS)
                 for s in suggestions(cat, load_instrument(inst))]
        _say("\n".join(found) if found else "nothing to reprocess: every latest product has the YAML's version")
    return 0


def cmd_impact(args: argparse.Namespace) -> int:
    """Everything made from a file, transitively, and which latest products are stale."""
    from emm_sdc import connections
    from emm_sdc.campaigns import impact

    report = impact(connections.catalog(), args.file_name)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if not report["descendants"]:
        _say(f"{args.file_name}: nothing in the catalog was made from it")
    for d in report["descendants"]:
        state = "superseded" if d["superseded"] else ("STALE (an input has a newer version)" if d["stale"] else
                                                      "latest")
        _say(f"{'  ' * d['depth']}{d['file_name']}  [{d['data_level']}, {state}]")
    if report["stale_latest"]:
        _say(f"{len(report['stale_latest'])} latest product(s) are stale; reprocess them with emm_<inst>_reprocess")
    return 0


def cmd_pools(_args: argparse.Namespace) -> int:
    """Create or resize the processing lanes' Airflow pools from the ITF YAMLs."""
    from emm_sdc.lanes import ensure_pools

    for spec in ensure_pools():
        _say(f"pool {spec['name']}: {spec['slots']} slot(s)  ({spec['description']})")
    return 0


def cmd_batch_template(args: argparse.Namespace) -> int:
    """The AWS Batch CloudFormation template from the ITF YAMLs (emm_sdc.deploy.batch_stack)."""
    from emm_sdc.deploy import batch_stack

    return batch_stack.run(args)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # pgserver on servers without a session
    parser = argparse.ArgumentParser(prog="sdc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default_state = str(project_root() / ".sdc")
    p = sub.add_parser("demo", help="run the main job end to end on embedded services")
    p.add_argument("--state-dir", default=f"{default_state}/demo")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("standalone", help="Airflow (UI, scheduler, ...) on embedded services; keeps its data")
    p.add_argument("--state-dir", default=f"{default_state}/standalone")
    p.add_argument("--host", default="127.0.0.1", help="address the UI/API listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--parallelism", type=int, default=0,
                   help="task slots in all (default: two per core, 2 to 8); with Celery, shared by the workers")
    p.add_argument("--executor", choices=("local", "celery"), default="local",
                   help="LocalExecutor, or CeleryExecutor with Debian's redis-server as broker and --workers workers")
    p.add_argument("--workers", type=int, default=2, help="Celery workers (with --executor celery; default 2)")
    p.add_argument("--fresh", action="store_true",
                   help="reset: delete the state dir's catalog, archive, inbox and run history first")
    p.set_defaults(func=cmd_standalone)
    p = sub.add_parser("api", help="the science-files API alone (uvicorn), from the Airflow connections in the env")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.set_defaults(func=cmd_api)
    p = sub.add_parser("deliver", help="deliver synthetic orbits to a running standalone")
    p.add_argument("--state-dir", default=f"{default_state}/standalone")
    p.add_argument("--orbits", type=int, nargs="+", required=True)
    p.add_argument("--spk", choices=("p", "r", "f"), default=None,
                   help="deliver a Hope SPK of this class over the orbits instead of science data")
    p.add_argument("--version", type=int, default=1, help="the SPK's version (with --spk)")
    p.set_defaults(func=cmd_deliver)
    p = sub.add_parser("check-config", help="validate ITF YAMLs (and include/sdc.yaml) before pushing them")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="YAML files to check (default: every ITF config and the site config the SDC runs on)")
    p.add_argument("--accept", action="store_true",
                   help="also keep each valid live config as its last-good copy (EMM_LAST_GOOD_DIR)")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("dagtest", help=argparse.SUPPRESS)
    p.add_argument("--log-dir", required=True)
    p.add_argument("dag_ids", nargs="+")
    p.set_defaults(func=cmd_dagtest)
    p = sub.add_parser("promote", help="promote a checked candidate image to production")
    p.add_argument("--instrument", required=True, choices=INSTRUMENTS)
    p.add_argument("--image", required=True)
    p.add_argument("--reason", default=None)
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("images", help="production images and staging checks")
    p.set_defaults(func=cmd_images)
    p = sub.add_parser("migrate", help="apply catalog migrations (emm_catalog connection)")
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("campaigns", help="reprocessing campaigns (and, with --suggest, backfills to run)")
    p.add_argument("--instrument", choices=INSTRUMENTS, default=None)
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--suggest", action="store_true", help="print the backfills a product_version bump calls for")
    p.set_defaults(func=cmd_campaigns)
    p = sub.add_parser("impact", help="everything made from a file, and which latest products are stale")
    p.add_argument("file_name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_impact)
    p = sub.add_parser("batch-template", help="the AWS Batch CloudFormation template generated from the ITF YAMLs")
    p.add_argument("--instrument", action="append", choices=INSTRUMENTS, help="only this ITF (repeatable)")
    p.add_argument("--config-dir", type=Path, help="the ITF YAMLs' folder (default: include/itf_configs)")
    p.add_argument("--out", type=Path, help="write here (.yaml/.yml: YAML, else JSON) instead of stdout")
    p.set_defaults(func=cmd_batch_template)
    p = sub.add_parser("pools", help="create or resize the processing lanes' Airflow pools (daily, reprocessing)")
    p.set_defaults(func=cmd_pools)
    p = sub.add_parser("airflow", help="the airflow CLI against a running standalone, e.g. ./sdc airflow backfill "
                                       "create --dag-id emm_exi_reprocess ...")
    p.add_argument("--state-dir", default=f"{default_state}/standalone")
    p.add_argument("airflow_args", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_airflow)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
