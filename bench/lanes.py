"""Daily processing latency with a reprocessing backfill running vs idle, on real Airflow (lanes, issue 12).

Starts real Airflow 3 components (api-server, scheduler with LocalExecutor and ``--parallelism``
slots, dag-processor, triggerer) on the embedded S3 and PostgreSQL (``emm_dev.airflow_local``),
with the lane pools of the ITF YAMLs. Then:

1. Seed: the MOC delivers SPICE kernels (a predicted Hope SPK over every orbit used here) and the
   EXI L0 of ``--orbits`` orbits; ``emm_spice_refresh`` and ``emm_exi_ingest`` archive them and
   ``emm_exi_process`` (started by the L0 Asset event) makes every chain level of the ITF YAML.
2. Idle (the baseline): ``--samples`` times, one new orbit's L0 is delivered and ``emm_exi_ingest``
   triggered; the latency is from the upload to the last of that orbit's products (every chain
   level) indexed in ``science_files``, split into ingest (upload -> L0 indexed) and processing.
3. Loaded: ``airflow backfill create`` of ``emm_exi_reprocess`` over the seeded days with conf
   ``{"reason": "lanes benchmark", "force": true}`` (remakes everything) and ``--max-active-runs`` from
   the YAML's ``airflow.reprocess_max_active_runs`` (the CLI's own default is 10, whatever the DAG says);
   once its first job runs, the same delivery measurements are repeated while it is running.

Prints idle and loaded p50/max, the ratio loaded/idle (goal <= 1.2), the settings, how many
reprocessing jobs and reprocessing-pool tasks ran at once at most, and the backfill's progress.

The ITF configs are copied with an ingest schedule that never fires (``airflow_local.NEVER``), so
the only ingest runs are the triggered ones: a cron run's deferred sensor polls the inbox once a
minute and would add 0-60 s of noise to every sample (production latency includes that poll).

Usage: ``PYTHONPATH=plugins:devtools .venv/bin/python bench/lanes.py [--orbits 30] [--samples 4] [--parallelism 4]
[--state-dir DIR] [--keep]``, or ``./sdc bench`` (every bench/*.py); about 10-12 min at the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchlib import say

from emm_dev import synthetic
from emm_dev.airflow_local import INBOX_BUCKET, NEVER, AirflowLocal
from emm_dev.moc import deliver
from emm_sdc.core.config import load_instrument
from emm_sdc.lanes import pool_name

INST = "exi"
FIRST_ORBIT = 10
REPROCESS_DAG = f"emm_{INST}_reprocess"
PROCESS_DAG = f"emm_{INST}_process"
INGEST_DAG = f"emm_{INST}_ingest"
ACTIVE = ("queued", "running")


def deliver_l0(af: AirflowLocal, out: Path, orbits: range | list[int]) -> list[synthetic.Delivered]:
    """Write and upload the EXI L0 science files of ``orbits`` (no housekeeping: processing does not use it)."""
    files = [f for f in synthetic.generate(out, orbits=list(orbits), instruments=(INST,)) if f.level == "l0"]
    deliver(af.s3, INBOX_BUCKET, load_instrument(INST).ingest.inbox_prefix, files)
    return files


def active_runs(af: AirflowLocal, dag_id: str) -> int:
    [(n,)] = af.meta_sql("SELECT count(*) FROM dag_run WHERE dag_id = %s AND state IN ('queued', 'running')", (dag_id,))
    return int(n)


def products_by_level(af: AirflowLocal, orbits: list[int], levels: list[str]) -> dict[tuple[int, str], int]:
    """Products (distinct file roots) per (orbit, level) of the given orbits."""
    rows = af.catalog_sql(
        "SELECT orbit_number, data_level, count(DISTINCT file_root) FROM science_files "
        "WHERE instrument_id = %s AND orbit_number = ANY(%s) AND data_level = ANY(%s) GROUP BY 1, 2",
        (INST, orbits, levels),
    )
    return {(int(o), str(lvl)): int(n) for o, lvl, n in rows}


def fail_fast(af: AirflowLocal) -> None:
    """Stop waiting as soon as a processing run failed (its failed tasks named), not at the timeout."""
    failed = af.meta_sql(
        "SELECT ti.run_id, ti.task_id, ti.map_index FROM task_instance ti JOIN dag_run dr "
        "ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE ti.dag_id = %s AND dr.state = 'failed' AND ti.state = 'failed'",
        (PROCESS_DAG,),
    )
    if failed:
        raise SystemExit(f"{PROCESS_DAG} failed: {failed[:5]}; task logs under {af.env['AIRFLOW_HOME']}/logs")


def busy_tasks(af: AirflowLocal) -> int:
    [(n,)] = af.meta_sql("SELECT count(*) FROM task_instance WHERE state IN ('scheduled', 'queued', 'running')")
    return int(n)


def seed(af: AirflowLocal, state: Path, orbits: range, levels: list[str], timeout: float) -> dict[str, int]:
    """Archive and process the seed orbits; the number of products per level one orbit makes."""
    if not af.catalog_sql("SELECT 1 FROM meta_kernels") and not active_runs(af, "emm_spice_refresh"):
        af.trigger("emm_spice_refresh", note="lanes benchmark: seed kernels")
    af.wait_for(
        lambda: af.catalog_sql("SELECT 1 FROM meta_kernels"),
        300,
        interval=1,
        what="the SPICE refresh's first meta-kernel",
    )
    say("SPICE kernels archived and a meta-kernel written")
    files = deliver_l0(af, state / "moc" / "seed", orbits)
    run_id = af.trigger(INGEST_DAG, note="lanes benchmark: seed")
    state_ = af.wait_for_run(INGEST_DAG, run_id, timeout)
    [(archived,)] = af.catalog_sql(
        "SELECT count(*) FROM science_files WHERE instrument_id = %s AND data_level = 'l0'", (INST,)
    )
    say(f"{len(files)} L0 files for orbits {orbits[0]}-{orbits[-1]} delivered; ingest {state_}, {archived} archived")
    if archived != len(files):
        raise SystemExit(f"seed: {archived} of {len(files)} L0 files archived; see {af.logs}")
    want = len(orbits) * len(levels)
    last = [time.monotonic()]

    def done() -> bool:
        fail_fast(af)
        have = products_by_level(af, list(orbits), levels)
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            say(f"  seed processing: {len(have)}/{want} (orbit, level) pairs made, {sum(have.values())} products")
        return len(have) == want and not active_runs(af, PROCESS_DAG)

    af.wait_for(done, timeout, interval=2, what="the seed orbits' products")
    per_orbit = {lvl: n for (o, lvl), n in products_by_level(af, [orbits[0]], levels).items()}
    say(f"seed processed: {sum(products_by_level(af, list(orbits), levels).values())} products; per orbit {per_orbit}")
    return per_orbit


def measure(af: AirflowLocal, state: Path, orbit: int, expected: dict[str, int], timeout: float) -> dict[str, Any]:
    """Deliver one orbit's L0, trigger ingest, wait for all its products; the latencies (seconds)."""
    levels = list(expected)
    t_upload = time.time()
    files = deliver_l0(af, state / "moc" / f"orbit-{orbit:04d}", [orbit])
    ingest_run = af.trigger(INGEST_DAG, note=f"lanes benchmark: orbit {orbit}")

    def complete() -> bool:
        fail_fast(af)
        have = products_by_level(af, [orbit], levels)
        return all(have.get((orbit, lvl), 0) >= n for lvl, n in expected.items())

    af.wait_for(complete, timeout, interval=0.5, what=f"orbit {orbit}'s products")
    [(l0_at, last_at)] = af.catalog_sql(
        "SELECT max(ingested_at) FILTER (WHERE data_level = 'l0'), max(ingested_at) FILTER (WHERE data_level <> 'l0') "
        "FROM science_files WHERE instrument_id = %s AND orbit_number = %s",
        (INST, orbit),
    )
    # The next sample starts with this one's runs finished (the process DAG runs one at a time).
    af.wait_for(
        lambda: not active_runs(af, PROCESS_DAG) and not active_runs(af, INGEST_DAG),
        timeout,
        what=f"orbit {orbit}'s runs to finish",
    )
    # Where the time went: the ingest run's and the processing run's tasks (a processing run starts after the upload).
    since = datetime.fromtimestamp(t_upload, UTC)
    runs = af.meta_sql(
        "SELECT dag_id, run_id, queued_at, start_date FROM dag_run WHERE (dag_id = %s AND run_id = %s) "
        "OR (dag_id = %s AND queued_at >= %s) ORDER BY queued_at",
        (INGEST_DAG, ingest_run, PROCESS_DAG, since),
    )
    tis = af.meta_sql(
        "SELECT ti.dag_id, ti.task_id, ti.try_number, ti.scheduled_dttm, ti.queued_dttm, ti.start_date, ti.end_date "
        "FROM task_instance ti JOIN dag_run dr ON dr.dag_id = ti.dag_id AND dr.run_id = ti.run_id "
        "WHERE ti.state = 'success' AND ti.queued_dttm IS NOT NULL "
        "AND ((ti.dag_id = %s AND ti.run_id = %s) OR (ti.dag_id = %s AND dr.queued_at >= %s))",
        (INGEST_DAG, ingest_run, PROCESS_DAG, since),
    )
    announced = max((e for d, t, _, _, _, _, e in tis if d == INGEST_DAG and t == "announce_l0"), default=None)
    process = [(q, st) for d, _, q, st in runs if d == PROCESS_DAG]

    def worst(values: list[tuple[float, str]]) -> tuple[float, str]:
        return max(values, default=(0.0, "-"))

    diag = {
        "process_runs": len(process),
        "asset_to_run": (process[0][0] - announced).total_seconds() if process and announced else float("nan"),
        "run_queued": (process[0][1] - process[0][0]).total_seconds() if process and process[0][1] else float("nan"),
        "worst_slot_wait": worst([((q - sc).total_seconds(), t) for _, t, _, sc, q, _, _ in tis if sc]),
        "worst_startup": worst([((st - q).total_seconds(), t) for _, t, _, _, q, st, _ in tis]),
        "worst_run": worst([((e - st).total_seconds(), t) for _, t, _, _, _, st, e in tis]),
        "retries": sum(1 for _, _, n, *_ in tis if n > 1),
    }
    n = len(tis)
    wait = sum((q - sc).total_seconds() for _, _, _, sc, q, _, _ in tis if sc) / max(n, 1)
    startup = sum((st - q).total_seconds() for _, _, _, _, q, st, _ in tis) / max(n, 1)
    run = sum((e - st).total_seconds() for _, _, _, _, _, st, e in tis) / max(n, 1)
    return {
        "orbit": orbit,
        "files": len(files),
        "tasks": n,
        "slot_wait": wait,
        "task_startup": startup,
        "task_run": run,
        "diag": diag,
        "total": last_at.timestamp() - t_upload,
        "ingest": l0_at.timestamp() - t_upload,
        "processing": (last_at - l0_at).total_seconds(),
        "start": datetime.fromtimestamp(t_upload, UTC),
        "end": last_at,
    }


def explain(sample: dict[str, Any]) -> str:
    """One line on where a sample's time went beyond the tasks' own work."""
    d = sample["diag"]
    return (
        f"announce_l0 -> process run created {d['asset_to_run']:.1f} s, run queued {d['run_queued']:.1f} s, "
        f"{d['process_runs']} process run(s); worst task: slot wait {d['worst_slot_wait'][0]:.1f} s "
        f"({d['worst_slot_wait'][1]}), start-up {d['worst_startup'][0]:.1f} s ({d['worst_startup'][1]}), "
        f"running {d['worst_run'][0]:.1f} s ({d['worst_run'][1]}); {d['retries']} retried"
    )


def max_overlap(spans: list[tuple[datetime, datetime]]) -> int:
    """Largest number of spans open at one instant (an end and a start at the same instant do not overlap)."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    cur = best = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def reprocessing_stats(af: AirflowLocal, window: tuple[datetime, datetime] | None = None) -> dict[str, int]:
    """At most how many reprocessing jobs (catalog) and reprocessing-pool tasks (Airflow) ran at once."""
    now = datetime.now(UTC)
    jobs = [
        (s, e or now)
        for s, e in af.catalog_sql(
            "SELECT started_at, ended_at FROM processing_runs WHERE instrument_id = %s AND lane = 'reprocessing'",
            (INST,),
        )
    ]
    tasks = [
        (s, e or now)
        for s, e in af.meta_sql(
            "SELECT start_date, end_date FROM task_instance WHERE pool = %s AND start_date IS NOT NULL",
            (pool_name(INST, "reprocessing"),),
        )
    ]
    all_tasks = [
        (s, e or now)
        for s, e in af.meta_sql(
            "SELECT start_date, end_date FROM task_instance WHERE start_date IS NOT NULL AND state <> 'deferred' "
            "AND operator NOT LIKE '%%Sensor%%'"
        )
    ]
    if window is not None:
        lo, hi = window
        jobs, tasks = [(s, e) for s, e in jobs if e > lo and s < hi], [(s, e) for s, e in tasks if e > lo and s < hi]
        all_tasks = [(s, e) for s, e in all_tasks if e > lo and s < hi]
    return {
        "jobs": len(jobs),
        "max_jobs": max_overlap(jobs),
        "tasks": len(tasks),
        "max_tasks": max_overlap(tasks),
        "max_all_tasks": max_overlap(all_tasks),
    }


def line(name: str, samples: list[dict[str, Any]]) -> str:
    tot = [s["total"] for s in samples]

    def med(key: str) -> float:
        return statistics.median(s[key] for s in samples)

    return (
        f"  {name:7} p50 {statistics.median(tot):6.1f} s  max {max(tot):6.1f} s   samples "
        f"{', '.join(f'{t:.1f}' for t in tot)}\n"
        f"          p50 ingest {med('ingest'):5.1f} s + processing {med('processing'):5.1f} s; its {med('tasks'):.0f} "
        f"tasks: mean {med('slot_wait'):.2f} s scheduled->queued (slots), {med('task_startup'):.2f} s "
        f"queued->started, {med('task_run'):.2f} s running"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orbits", type=int, default=30, help="seed orbits (the backfill's span; >= 30 for the brief)")
    ap.add_argument("--samples", type=int, default=4, help="deliveries measured idle and again loaded")
    ap.add_argument("--parallelism", type=int, default=4, help="[core] parallelism (LocalExecutor slots)")
    ap.add_argument(
        "--backfill-max-active-runs",
        type=int,
        default=None,
        help="the backfill's --max-active-runs (default: the DAG's, reprocess_max_active_runs)",
    )
    ap.add_argument("--timeout", type=float, default=1200, help="seconds allowed for the seed processing")
    ap.add_argument("--state-dir", default=None, help="default: a temp dir, removed at the end unless --keep")
    ap.add_argument("--keep", action="store_true", help="keep the state dir (logs, data) at the end")
    args, _ = ap.parse_known_args()
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    # A SIGTERM (timeout, CI) unwinds like Ctrl-C, through the finally below that stops Airflow and the services.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="emm-bench-lanes-"))
    load_before = os.getloadavg()[0]
    cfg = load_instrument(INST)
    levels = [s.level for s in cfg.processing.chain]
    seed_orbits = range(FIRST_ORBIT, FIRST_ORBIT + args.orbits)
    idle_orbits = [seed_orbits[-1] + 1 + k for k in range(args.samples)]
    loaded_orbits = [idle_orbits[-1] + 1 + k for k in range(args.samples)]
    af = AirflowLocal(
        state,
        parallelism=args.parallelism,
        ingest_schedule=NEVER,
        inbox_events=False,  # ingest runs only when triggered (see above)
        dags=("emm_spice_refresh", INGEST_DAG, PROCESS_DAG, REPROCESS_DAG),
    )
    ok = False
    try:
        af.start_services()
        from emm_dev.cli import _deliver_kernels

        # Kernels first, before Airflow starts: the refresh's first (cron) run finds them at its first poke.
        _deliver_kernels(af.s3, state / "moc" / "kernels", FIRST_ORBIT, loaded_orbits[-1] + 2, "p", generic=True)
        af.start_airflow()
        say(f"Airflow ready ({af.startup_seconds:.0f} s; API {af.base_url}; logs {af.logs})")
        expected = seed(af, state, seed_orbits, levels, args.timeout)

        af.wait_for(lambda: busy_tasks(af) == 0, 300, interval=1, what="no task running before the idle samples")
        idle = []
        for orbit in idle_orbits:
            idle.append(measure(af, state, orbit, expected, 600))
            say(f"idle   orbit {orbit}: {idle[-1]['total']:.1f} s (ingest {idle[-1]['ingest']:.1f} s)")
            say(f"         {explain(idle[-1])}")
            af.wait_for(lambda: busy_tasks(af) == 0, 300, interval=1, what="no task running between idle samples")

        [(first, last)] = af.catalog_sql(
            "SELECT min(timetag), max(timetag) FROM science_files WHERE instrument_id = %s AND data_level = 'l0' "
            "AND orbit_number = ANY(%s)",
            (INST, list(seed_orbits)),
        )
        days = (last.date() - first.date()).days + 1
        backfill = af.backfill(
            REPROCESS_DAG,
            first.date().isoformat(),
            last.date().isoformat(),
            {"reason": "lanes benchmark", "force": True},
            max_active_runs=args.backfill_max_active_runs or cfg.airflow.reprocess_max_active_runs,
        )
        say(
            f"backfill {backfill['id']} of {REPROCESS_DAG}: {first.date()}..{last.date()} ({days} days), "
            f"max_active_runs {backfill['max_active_runs']}"
        )
        af.wait_for(
            lambda: reprocessing_stats(af)["jobs"] > 0, 600, interval=1, what="the backfill's first reprocessing job"
        )
        say("reprocessing jobs are running")
        loaded = []
        for orbit in loaded_orbits:
            before = af.backfill_progress(backfill["id"])
            loaded.append(measure(af, state, orbit, expected, 900))
            sample = loaded[-1]
            during = reprocessing_stats(af, (sample["start"], sample["end"]))
            sample["reprocessing_during"] = during
            sample["backfill_running"] = any(before.get(s, 0) for s in ACTIVE)
            say(
                f"loaded orbit {orbit}: {sample['total']:.1f} s (ingest {sample['ingest']:.1f} s); "
                f"{during['tasks']} reprocessing-pool tasks ran during it, backfill runs before it {before}"
            )
            say(f"         {explain(sample)}")
        progress = af.backfill_progress(backfill["id"])
        stats = reprocessing_stats(af)
        [(remade,)] = af.catalog_sql(
            "SELECT count(*) FROM processing_runs WHERE instrument_id = %s AND lane = 'reprocessing' "
            "AND status = 'success'",
            (INST,),
        )

        idle_p50 = statistics.median(s["total"] for s in idle)
        loaded_p50 = statistics.median(s["total"] for s in loaded)
        ratio = loaded_p50 / idle_p50
        max_ratio = max(s["total"] for s in loaded) / max(s["total"] for s in idle)
        pools = {p["name"]: p["slots"] for p in af.pools if p["name"].startswith(f"emm_{INST}_")}
        print()
        print(
            f"Daily processing latency, {INST.upper()} L0 delivery -> last product indexed ({'/'.join(levels)}), "
            f"real Airflow {af.api('GET', '/version')['version']}"
        )
        print(
            f"  settings: parallelism {args.parallelism} (LocalExecutor), pools {pools}, backfill max_active_runs "
            f"{backfill['max_active_runs']}, {args.orbits} seed orbits ({days} days), {args.samples} samples each; "
            f"{os.cpu_count()} CPUs, 1-min load average {load_before:.1f} before the start (other work on the "
            f"machine skews both halves)"
        )
        print(line("idle", idle))
        print(line("loaded", loaded))
        unloaded = [s["orbit"] for s in loaded if not s["backfill_running"] or not s["reprocessing_during"]["tasks"]]
        print(
            f"  ratio loaded/idle: p50 {ratio:.2f}, max {max_ratio:.2f}  (goal <= 1.2: "
            f"{'met' if ratio <= 1.2 else 'NOT met'})"
            + (f"; WARNING: no reprocessing during orbit(s) {unloaded}" if unloaded else "")
        )
        total_runs = sum(progress.values())
        outside = af.meta_sql(
            "SELECT task_id, pool, count(*) FROM task_instance WHERE dag_id = %s AND pool <> %s "
            "AND state IN ('running', 'success', 'failed', 'up_for_retry') GROUP BY 1, 2 ORDER BY 1",
            (REPROCESS_DAG, pool_name(INST, "reprocessing")),
        )
        print(
            f"  reprocessing: at most {stats['max_tasks']} {pool_name(INST, 'reprocessing')} task(s) running at once "
            f"({stats['tasks']} so far); at most {stats['max_jobs']} reprocessing job(s) open at once (a job is open "
            f"from its prepare to its collect task, waiting for the pool between them; {stats['jobs']} so far); at "
            f"most {stats['max_all_tasks']} tasks of any DAG running at once"
        )
        if outside:
            print(
                f"  {REPROCESS_DAG} tasks outside the lane pool: "
                + ", ".join(f"{task} ({pool}) x{n}" for task, pool, n in outside)
            )
        print(
            f"  backfill progress: {progress.get('success', 0)}/{days} days done, {total_runs} runs created "
            f"{progress}; {remade} reprocessing jobs succeeded"
        )
        ok = True
        return 0
    finally:
        say("stopping Airflow and the services")
        af.stop()
        if args.keep or not ok:
            print(f"state, logs and data kept in {state}")
        elif args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
