"""``./sdc`` commands: the end-to-end demo, Airflow standalone on embedded services, catalog migrations.

    ./sdc demo          run the SDC's main job end to end on embedded services; print a summary
    ./sdc standalone    start Airflow (UI on :8080) on embedded services, with a synthetic delivery
    ./sdc deliver       deliver more synthetic orbits to a running standalone's inbox
    ./sdc api           the science-files API alone (uvicorn), e.g. behind a deployment's own gateway
    ./sdc migrate       apply catalog migrations using the emm_catalog connection
    ./sdc promote       promote a checked ITF image to production;  ./sdc images: list images and checks
"""

from __future__ import annotations

import argparse
import contextlib
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
    proc = subprocess.run([sys.executable, "-m", "emm_sdc.cli", "dagtest", "--log-dir", str(log_dir), *dag_ids],
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
    log_path = log_dir / f"{dag.dag_id}-{time.strftime('%H%M%S')}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    with log_path.open("w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        t0 = time.monotonic()
        try:
            state = str(dag.test(run_conf=conf).state)
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
    """Embedded S3 + PostgreSQL and the environment that points Airflow at them."""

    def __init__(self, state: Path, *, fresh: bool):
        from emm_sdc.embedded import EmbeddedPostgres, EmbeddedS3, airflow_env

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        if fresh and state.exists():
            EmbeddedPostgres(state / "pgdata").stop_stale()
            shutil.rmtree(state)
        state.mkdir(parents=True, exist_ok=True)
        self.state = state
        self.pg = EmbeddedPostgres(state / "pgdata").start()
        self.s3 = EmbeddedS3().start()
        from emm_sdc.embedded import cognito_env

        self.cognito = cognito_env(self.s3.endpoint)
        self.env = {**os.environ, **airflow_env(state, self.s3.endpoint, self.pg), **self.cognito}
        # `airflow standalone` starts its components as `airflow ...` subprocesses found on PATH.
        self.env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        (state / "services.json").write_text(json.dumps({
            "s3_endpoint": self.s3.endpoint, "catalog": self.pg.conn_json(), "pid": os.getpid(),
        }))
        from emm_sdc.core import catalog

        self.catalog_conn = self.pg.connect()
        self.applied = catalog.migrate(self.catalog_conn)
        client = self.s3.client()
        for bucket in ("emm-sdc-inbox", "emm-sdc-archive"):
            client.create_bucket(Bucket=bucket)
        self.client = client

    def close(self) -> None:
        self.catalog_conn.close()
        self.s3.stop()
        self.pg.stop()


def _deliver_synthetic(client: Any, out: Path, orbits: Sequence[int], *, anomalies: bool) -> dict[str, Any]:
    """Write synthetic MOC files for every instrument and upload them to the inbox."""
    from emm_sdc import synthetic
    from emm_sdc.core.config import load_instrument
    from emm_sdc.moc import deliver

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
    from emm_sdc import synthetic, synthetic_spice
    from emm_sdc.core.settings import get_settings
    from emm_sdc.moc import deliver

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

    from emm_sdc.api.app import Backends, create_app
    from emm_sdc.api.config import api_settings
    from emm_sdc.embedded import CATALOG_DB, DEMO_USERS, free_port

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
    for r in cat.query("delivery_outcomes"):
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + r["files"]
    inbox = svc.client.list_objects_v2(Bucket="emm-sdc-inbox").get("KeyCount", 0)
    lines.append(f"Files delivered by the MOC (data files and kernels, without sidecars): {received}")
    lines.append(f"  archived+indexed: {outcomes.get('archived', 0)}   duplicates (no-op): "
                 f"{outcomes.get('duplicate', 0)}   quarantined: {outcomes.get('quarantined', 0)}   "
                 f"still in inbox (waiting for a sidecar): {inbox}")
    lines.append("Quarantined (reason code: reason):")
    for q in cat.query("quarantine_list"):
        lines.append(f"  {q['original_key'].rsplit('/', 1)[-1]}")
        lines.append(f"      {q['reason_code']}: {q['reason'][:150]}")
    lines.append("Archive by instrument and level (catalog):")
    lines.append(f"  {'inst':5} {'level':6} {'type':10} {'files':>6} {'bytes':>12}")
    for r in cat.query("counts_by_level"):
        lines.append(f"  {r['instrument_id']:5} {r['data_level']:6} {r['product_type']:10} "
                     f"{r['files']:>6} {int(r['bytes']):>12,}")
    lines.append("Processing runs (instrument, runner, image, environment: status count):")
    for r in cat.query("runs_by_runner"):
        lines.append(f"  {r['instrument_id']:5} {r['runner']:7} {r['image']:32} {r['environment']:10} "
                     f"{r['status']} {r['runs']}")
    lines.append("Catalog rows: " + ", ".join(f"{r['table_name']} {r['rows']}" for r in cat.query("table_counts")))
    keys = [o["Key"] for page in svc.client.get_paginator("list_objects_v2").paginate(Bucket="emm-sdc-archive")
            for o in page.get("Contents", [])]
    by_root: dict[str, int] = {}
    for k in keys:
        root = "/".join(k.split("/")[:2])
        by_root[root] = by_root.get(root, 0) + 1
    lines.append("Archive bucket s3://emm-sdc-archive: " + ", ".join(f"{k}/ {v}" for k, v in sorted(by_root.items())))
    lines.append("SPICE kernels (active) and meta-kernels:")
    for k in cat.query("active_kernels"):
        span = (f"  {k['coverage_start']:%Y-%m-%dT%H:%M} .. {k['coverage_end']:%Y-%m-%dT%H:%M}"
                if k["coverage_start"] else "")
        lines.append(f"  {k['file_name']:36} {k['kind']:5} class {k['kernel_class'] or '-'}{span}")
    lines.append("  " + ", ".join(f"{m['file_name']} ({len(m['kernels'])} kernels)"
                                  for m in cat.query("meta_kernels")))
    lines.append("Latest products by kernel class (p predicted, r reconstructed, n none) and revision:")
    lines.append(f"  {'inst':5} {'level':6} {'class':5} {'rev':>3} {'files':>6}")
    for r in cat.query("latest_by_kernel_class"):
        lines.append(f"  {r['instrument_id']:5} {r['data_level']:6} {r['pred_rec']:5} {r['revision']:>3} "
                     f"{r['files']:>6}")
    for g in cat.query("sample_geometry"):
        lines.append(f"Geometry of {g['file_name']}:")
        lines.append(f"  Ls {g['mars_ls']:.3f} deg, local solar time {g['spacecraft_lst']:.3f} h, "
                     f"sub-spacecraft {g['spacecraft_lat']:.3f} N {g['spacecraft_lon']:.3f} E, "
                     f"altitude {g['spacecraft_alt']:,.1f} km, subsolar {g['subsolar_lat']:.3f} N "
                     f"{g['subsolar_lon']:.3f} E")
    sample = cat.query("sample_lineage")
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
        from emm_sdc import synthetic

        better = _deliver_kernels(svc.client, state / "moc" / "kernels-2", 11, 12, "r", generic=False)
        again = _deliver_synthetic(svc.client, state / "moc" / "delivery-2", (13,), anomalies=False)
        from emm_sdc.moc import deliver

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
        _say(f"\nDemo {'finished' if ok else 'FINISHED WITH FAILURES'} in {time.monotonic() - t0:.0f} s.")
        return 0 if ok else 1
    finally:
        svc.close()


def cmd_standalone(args: argparse.Namespace) -> int:
    """Airflow standalone (scheduler, triggerer, API server + UI) on embedded services."""
    state = Path(args.state_dir).resolve()
    svc = Services(state, fresh=True)
    try:
        env = {**svc.env, "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
               "AIRFLOW__API__PORT": str(args.port),
               "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{args.port}/execution/"}
        _deliver_kernels(svc.client, state / "moc" / "kernels-1", 10, STANDALONE_SPK_END, "p", generic=True)
        _deliver_synthetic(svc.client, state / "moc" / "delivery-1", (11, 12), anomalies=True)
        _say(f"S3 (moto) at {svc.s3.endpoint}; catalog PostgreSQL socket {svc.pg.socket_dir}")
        _say(f"Delivered SPICE kernels (predicted Hope SPK for orbits 0010-{STANDALONE_SPK_END - 1:04d}) to "
             "s3://emm-sdc-inbox/inbox/spice/ and orbits 0011-0012 to s3://emm-sdc-inbox/inbox/<inst>/. "
             "emm_spice_refresh and the ingest DAGs pick them up on their schedule; processing follows on "
             "the L0 Asset events.")
        _say(f"Airflow UI: http://localhost:{args.port}  (user 'admin'; password printed by Airflow below)")
        from emm_sdc.embedded import DEMO_USERS

        _say(f"Science-files API: http://localhost:{args.port}/emm/api/science-files-metadata (docs at /emm/api/docs)"
             f"; log in at {svc.cognito['EMM_COGNITO_ENDPOINT']} with app client "
             f"{svc.cognito['EMM_COGNITO_CLIENT_ID']} as "
             + ", ".join(f"{u}/{pw} ({', '.join(g)})" for u, (pw, g) in DEMO_USERS.items()))
        _say(f"Science data page: http://localhost:{args.port}/emm/  (log in as "
             + ", ".join(f"{u}/{pw}" for u, (pw, _g) in DEMO_USERS.items()) + ")")
        _say(f"More data: ./sdc deliver --state-dir {args.state_dir} --orbits 13 14;  a reconstructed SPK "
             f"(reprocesses orbit 11's products): ./sdc deliver --state-dir {args.state_dir} --orbits 11 --spk r")
        _write_airflow_env(state, env)
        # Pools live in Airflow's metadata DB: migrate it, then create the lanes' pools before anything runs.
        for step in (["db", "migrate"], ["pools"]):
            cmd = [sys.executable, "-m", "airflow", *step] if step[0] == "db" else \
                [sys.executable, "-m", "emm_sdc.cli", *step]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL if step[0] == "db" else None)
        _say(f"Airflow CLI on this standalone: ./sdc airflow --state-dir {args.state_dir} <command> "
             "(e.g. backfill create --dag-id emm_exi_reprocess ...)")
        # Airflow runs in its own process group so that one signal stops every component (scheduler,
        # workers, API server) before the services they use, on Ctrl-C as on `kill <pid>`.
        child = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, start_new_session=True)

        def stop(*_: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        try:
            return child.wait()
        except KeyboardInterrupt:
            stop()
            child.wait(timeout=120)
            return 0
    finally:
        svc.close()


AIRFLOW_ENV_FILE = "airflow.env.json"


def _write_airflow_env(state: Path, env: dict[str, str]) -> None:
    """The standalone's Airflow/SDC settings, for ``./sdc airflow`` (owner-only: it names local services)."""
    keep = {k: v for k, v in env.items() if k.startswith(("AIRFLOW", "EMM_", "AWS_")) or k in ("PYTHONPATH", "PATH")}
    path = state / AIRFLOW_ENV_FILE
    path.write_text(json.dumps(keep, indent=1))
    path.chmod(0o600)


def cmd_airflow(args: argparse.Namespace) -> int:
    """The ``airflow`` CLI against a running standalone (its metadata DB, connections and DAG folder)."""
    path = Path(args.state_dir).resolve() / AIRFLOW_ENV_FILE
    if not path.exists():
        _say(f"no standalone settings at {path}: start one with ./sdc standalone --state-dir {args.state_dir}")
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
    """Upload more synthetic orbits to the inbox of a running standalone."""
    import boto3

    info = json.loads((Path(args.state_dir) / "services.json").read_text())
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
        for c in cat.query("staging_checks_of", {"instrument_id": inst}):
            _say(f"    check {c['id']} {c['status']:7} candidate {c['candidate_image']} vs "
                 f"{c['production_image'] or '(first image)'}  {c['report_uri'] or ''}")
    return 0


def cmd_campaigns(args: argparse.Namespace) -> int:
    """Reprocessing campaigns, newest first; with --suggest, the backfills a config change calls for."""
    from emm_sdc import connections
    from emm_sdc.campaigns import format_campaign, suggestions
    from emm_sdc.core.config import load_instrument

    cat = connections.catalog()
    rows = cat.query("campaigns_summary", {"instrument_id": args.instrument, "limit": args.limit})
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


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")  # pgserver on servers without a session
    parser = argparse.ArgumentParser(prog="sdc", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    default_state = str(project_root() / ".sdc")
    p = sub.add_parser("demo", help="run the main job end to end on embedded services")
    p.add_argument("--state-dir", default=f"{default_state}/demo")
    p.set_defaults(func=cmd_demo)
    p = sub.add_parser("standalone", help="airflow standalone on embedded services")
    p.add_argument("--state-dir", default=f"{default_state}/standalone")
    p.add_argument("--port", type=int, default=8080)
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
