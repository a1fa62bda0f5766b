"""A Martian year of load, simulated (issue 16): scheduler throughput, the catalog at year's end, reprocessing time.

The load is :mod:`emm_dev.mars_year`'s timeline: 687 days of EXI/EMUS/EMIRS L0 (6/4/8 observations per 55 h
orbit, ~300 orbits), one HK file per instrument per day, kernels weekly; ~100 GB per quarter with products.
A whole year through Airflow is ~10,000 deliveries and ~100,000 task instances, days on this 2-core machine,
so the benchmark measures three things it can measure honestly and extrapolates the rest:

A. **Scheduler throughput** (per executor in ``--executors``): real Airflow (``emm_dev.airflow_local``, the
   processors replaced by the constant-time stub ``processors/stub/processor.py``, ``EMM_STUB_SECONDS``
   ``--stub-seconds``) is given the first ``--days`` days of the year as real synthetic files (kernels first:
   the SPICE refresh runs, then all three instruments' L0 and HK are uploaded and their ingest DAGs
   triggered). Ingest archives, the L0 Asset events start ``emm_<inst>_process``, every chain level is
   made. Measured from Airflow's metadata DB: task instances finished per minute (ingest + processing DAGs,
   from the first trigger to the last task's end). ``local`` = LocalExecutor with ``--parallelism`` slots;
   ``celery:N`` = CeleryExecutor (embedded Redis broker) with N workers of ``--worker-concurrency`` slots.
B. **Reprocessing the year**: on the same instance, ``airflow backfill create`` of every
   ``emm_<inst>_reprocess`` over the window's days with ``{"force": true}`` (remakes everything); its wall
   time, jobs and tasks per minute are extrapolated to the year's 687 days x 3 instruments.
C. **The catalog at year's end** (no Airflow): a year of catalog rows (every L0/HK delivery, a ``p`` and an
   ``r`` revision of every chain level's product of every L0, their processing runs and lineage, kernels,
   the delivery log) bulk-loaded with COPY into an embedded PostgreSQL migrated with the catalog's own
   migrations, and beside it the first week alone (the baseline). The named queries users and DAGs run
   (``include/sql/queries``: the science-files API search, the processing plan's L0 lookups and
   unprocessed inputs, the SPICE refresh's products to upgrade, the release's candidates, summaries) are
   timed on both: p50/p95 and the ratio year/week; table and index sizes are printed.

Usage: ``PYTHONPATH=plugins:devtools .venv/bin/python bench/mars_year.py [--days 2] [--executors
local,celery:1,celery:2] [--parallelism 4] [--worker-concurrency 2] [--stub-seconds 1] [--skip-airflow]
[--skip-catalog] [--state-dir DIR] [--keep]``; 18 min at the defaults on a quiet 2-core VM (1,083 s measured:
catalog ~20 s, then per executor 4-6 min: start, kernels, the window's ingest and processing, the reprocessing
backfill). Each executor gets fresh embedded services (emptied buckets: moto's state is per process).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchlib import T0, pct, say

from emm_dev import mars_year
from emm_dev.mars_year import INSTRUMENTS, Delivery, chain_inputs
from emm_dev.synthetic import ORBIT_EPOCH

STUB = ["python", "processors/launch.py", "processors/stub/processor.py"]
YEAR_DAYS = mars_year.MARS_YEAR_DAYS
MARS_YEAR_S = 686.98 * 86400
FINISHED_TI = ("success", "skipped", "failed", "upstream_failed")


# =========================================================================== C. the catalog at year's end

SF_COLS = ("id", "file_name", "directory_path", "file_size", "instrument_id", "data_level", "timetag", "descriptor",
           "mode", "orbit_number", "pred_rec", "version", "revision", "file_root", "absolute_version",
           "md5checksum", "product_type", "bucket", "s3_key", "released", "mars_ls", "spacecraft_lst",
           "subsolar_lat", "subsolar_lon", "spacecraft_lat", "spacecraft_lon", "spacecraft_alt",
           "processing_run_id", "ingested_at")
RUN_COLS = ("id", "dag_id", "dag_run_id", "task_id", "map_index", "instrument_id", "data_level", "work_unit",
            "runner", "processor_name", "processor_version", "environment", "started_at", "ended_at",
            "exit_status", "status", "input_hash", "lane")
DELIVERY_COLS = ("instrument_id", "inbox_key", "md5checksum", "file_size", "outcome", "file_id", "dag_id",
                 "dag_run_id", "received_at", "delivery_id")
KERNEL_COLS = ("id", "file_name", "kernel_type", "kernel_class", "version", "coverage_start", "coverage_end",
               "md5checksum", "file_size", "bucket", "s3_key", "series", "kind", "ingested_at")
ARCHIVE = "emm-sdc-archive"
N = r"\N"


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _ts(t: datetime) -> str:
    return t.isoformat()


class CatalogRows:
    """COPY lines of a catalog holding ``records`` as the SDC would have indexed them (ids assigned here)."""

    def __init__(self, records: Iterable[Delivery]):
        self.sf: list[str] = []
        self.runs: list[str] = []
        self.lineage: list[str] = []
        self.deliveries: list[str] = []
        self.kernels: list[str] = []
        file_id = run_id = kernel_id = 0
        run_of: dict[tuple[str, int, str, int], int] = {}  # (inst, orbit, level, revision) -> run id
        for d in records:
            if d.area == "spice":
                kernel_id += 1
                from emm_sdc.core import kernels

                k = kernels.parse_kernel_name(d.file_name)
                lo = N if k.start is None else f"{k.start.isoformat()} 00:00:00+00"
                hi = N if k.end is None else f"{k.end.isoformat()} 23:59:59+00"
                self.kernels.append(_line(kernel_id, d.file_name, k.kernel_type, k.kernel_class, k.version, lo, hi,
                                          _md5(d.file_name), d.size, ARCHIVE, k.archive_key, "/".join(k.series),
                                          "hope" if k.is_hope else "generic", _ts(d.time)))
                continue
            file_id += 1
            in_id = file_id
            self.sf.append(self._file(file_id, d.file_name, d.size, d.time, None))
            self.deliveries.append(_line(d.area, f"inbox/{d.area}/{d.file_name}", _md5(d.file_name), d.size,
                                         "archived", file_id, f"emm_{d.area}_ingest", f"ingest_{d.time:%Y%m%d}",
                                         _ts(d.time), _md5("delivery" + d.file_name)))
            made: dict[str, int] = {"l0": in_id}
            for revision, kernel, lag, lane in ((0, "p", 1, "daily"), (1, "r", 24 * 8, "reprocessing")):
                at = d.time + timedelta(hours=lag)
                for level, name, size, input_level in mars_year.products(d, revision=revision, kernel=kernel):
                    key = (d.area, d.orbit or 0, level, revision)
                    if key not in run_of:
                        run_id += 1
                        run_of[key] = run_id
                        dag = f"emm_{d.area}_{'process' if lane == 'daily' else 'reprocess'}"
                        self.runs.append(_line(run_id, dag, f"{lane}_{d.orbit:04d}_{revision}", f"unit.{level}.run",
                                               0, d.area, level, f"orbit-{d.orbit:04d}-{kernel}", "local",
                                               f"emm-{d.area}-ref", "1.0.0", "prod", _ts(at),
                                               _ts(at + timedelta(minutes=2)), 0, "success",
                                               _md5(f"{key}"), lane))
                    file_id += 1
                    made[level] = file_id
                    self.sf.append(self._file(file_id, name, size, at, run_of[key]))
                    self.lineage.append(_line(file_id, made[input_level]))

    @staticmethod
    def _file(file_id: int, file_name: str, size: int, ingested: datetime, run_id: int | None) -> str:
        from emm_sdc.core import naming

        n = naming.parse(file_name)
        key = n.archive_key
        ls = ((n.start - ORBIT_EPOCH).total_seconds() / MARS_YEAR_S * 360 + 35.0) % 360
        return _line(file_id, n.file_name, key.rsplit("/", 1)[0], size, n.instrument, n.level, _ts(n.start),
                     n.descriptor or N, n.mode or N, n.orbit, n.kernel, n.version, n.revision, n.file_root,
                     n.absolute_version, _md5(n.file_name), n.product_type, ARCHIVE, key,
                     "t" if file_id % 3 == 0 else "f", f"{ls:.4f}", f"{(file_id * 0.37) % 24:.4f}",
                     f"{(file_id * 7) % 50 - 25}", f"{(file_id * 13) % 360}", f"{(file_id * 3) % 180 - 90}",
                     f"{(file_id * 11) % 360}", f"{20000 + (file_id * 97) % 23000}", N if run_id is None else run_id,
                     _ts(ingested))

    def load(self, conn: Any) -> dict[str, int]:
        with conn.cursor() as cur:
            for table, cols, lines in (("processing_runs", RUN_COLS, self.runs), ("science_files", SF_COLS, self.sf),
                                       ("lineage", ("product_id", "input_id"), self.lineage),
                                       ("deliveries", DELIVERY_COLS, self.deliveries),
                                       ("spice_kernels", KERNEL_COLS, self.kernels)):
                with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
                    for start in range(0, len(lines), 20_000):
                        copy.write("".join(lines[start:start + 20_000]))
            cur.execute("SELECT setval(pg_get_serial_sequence('processing_runs', 'id'), %s)", (len(self.runs),))
            cur.execute("SELECT setval(pg_get_serial_sequence('science_files', 'id'), %s)", (len(self.sf),))
            cur.execute("SELECT setval(pg_get_serial_sequence('spice_kernels', 'id'), %s)",
                        (max(len(self.kernels), 1),))
            cur.execute("ANALYZE")
        conn.commit()
        return {"science_files": len(self.sf), "processing_runs": len(self.runs), "lineage": len(self.lineage),
                "deliveries": len(self.deliveries), "spice_kernels": len(self.kernels)}


def _line(*values: Any) -> str:
    return "\t".join(str(v) for v in values) + "\n"


def catalog_queries(last: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, named query, parameters) users and DAGs run, aimed at the catalog's last week ``last``."""
    from emm_sdc.api.query import parse_items

    def api(query: str, *, public: bool = False) -> dict[str, Any]:
        items = [tuple(kv.split("=", 1)) for kv in query.split("&")]
        return {**parse_items(items), "see_all": not public, "own_instruments": [], "limit": 2001}  # type: ignore[arg-type]

    month = (last - timedelta(days=30)).date().isoformat(), last.date().isoformat()
    week = last - timedelta(days=7)
    orbit = int((last - ORBIT_EPOCH) / timedelta(hours=55)) - 2
    return [
        ("API: exi l2a, a month, latest", "api_science_files",
         api(f"instrument_id=exi&data_level=l2a&start_date={month[0]}&end_date={month[1]}&latest=true")),
        ("API: one orbit, all, latest", "api_science_files", api(f"orbit_num={orbit}&latest=true")),
        ("API public: emu, a month, latest", "api_science_files",
         api(f"instrument_id=emu&start_date={month[0]}&end_date={month[1]}&latest=true", public=True)),
        ("API: newest 2000, no filter", "api_science_files", api("latest=true")),
        ("plan: L0 of an orbit", "science_l0_by_orbit", {"instrument_id": "emr", "orbits": [orbit]}),
        ("plan: L0 of a day", "science_l0_by_time",
         {"instrument_id": "exi", "start": week, "end": week + timedelta(days=1)}),
        ("plan: unprocessed exi l0 -> l1", "unprocessed_inputs",
         {"instrument_id": "exi", "input_level": "l0", "target_level": "l1"}),
        ("refresh: products to upgrade (week)", "products_to_upgrade",
         {"instrument_id": "exi", "levels": ["l1", "l2a"], "worse": ["p"], "start": week, "end": last}),
        ("release: candidates (a quarter)", "release_candidates",
         {"instrument_id": "emr", "levels": ["l1", "l2"], "pred_rec": ["r", "f"], "start": last - timedelta(days=91),
          "end": last, "carry_over": True}),
        ("summary: counts by level", "counts_by_level", {}),
    ]


#: The baseline of the lift: ``science_files_latest`` as it was before migration 0015 (DISTINCT ON over the whole
#: table), timed beside the named queries that use the view, which now is the "no newer version" filter that
#: PostgreSQL can push a query's own conditions into and serve from the (file_root, absolute_version) index.
LATEST_DISTINCT_ON = (
    "CREATE VIEW science_files_latest_before_0015 AS SELECT DISTINCT ON (file_root) * FROM science_files "
    "ORDER BY file_root, absolute_version DESC, id DESC"
)
VIEW_QUERIES = ("science_l0_by_orbit", "science_l0_by_time", "unprocessed_inputs", "products_to_upgrade")


def time_named(conn: Any, name: str, params: dict[str, Any], repeat: int, *, before: bool = False,
               ) -> tuple[list[float], int]:
    """Timings of a named query (``before``: the same text on the latest view as it was before migration 0015)."""
    from emm_sdc.core.catalog_ops.base import queries

    sql = queries()[name]
    if before:
        sql = sql.replace("science_files_latest", "science_files_latest_before_0015")
    times, n = [], 0
    with conn.cursor() as cur:
        cur.execute(sql, params)  # warm the cache once
        for _ in range(repeat):
            t = time.perf_counter()
            cur.execute(sql, params)
            n = len(cur.fetchall())
            times.append(time.perf_counter() - t)
    conn.rollback()
    return times, n


def catalog_part(work: Path, records: list[Delivery], repeat: int) -> list[str]:
    """Load a year's catalog and a week's, time the named queries on both; the report lines."""
    from emm_dev.embedded import EmbeddedPostgres
    from emm_sdc.core import catalog

    out = []
    first_week = [d for d in records if d.time < ORBIT_EPOCH + timedelta(days=7)]
    pg = EmbeddedPostgres(work / "pgdata", databases=("year", "week")).start()
    try:
        conns = {db: pg.connect(db) for db in ("year", "week")}
        loaded = {}
        for db, recs in (("year", records), ("week", first_week)):
            catalog.migrate(conns[db])
            with conns[db].cursor() as cur:
                cur.execute(LATEST_DISTINCT_ON)
            conns[db].commit()
            t = time.perf_counter()
            rows = CatalogRows(recs)
            counts = rows.load(conns[db])
            loaded[db] = (counts, time.perf_counter() - t)
        say(f"catalog: year {loaded['year'][0]} loaded in {loaded['year'][1]:.0f} s; week {loaded['week'][0]}")
        with conns["year"].cursor() as cur:
            cur.execute(
                "SELECT c.relname, pg_table_size(c.oid), pg_indexes_size(c.oid), c.reltuples::bigint "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname = ANY(%s) ORDER BY 2 DESC",
                (["science_files", "lineage", "processing_runs", "deliveries", "spice_kernels"],))
            sizes = cur.fetchall()
            cur.execute("SELECT pg_database_size(current_database())")
            db_size = cur.fetchone()[0]
        conns["year"].rollback()
        out.append(f"C. Catalog at year's end ({YEAR_DAYS} days; baseline: the first week alone), embedded PostgreSQL")
        out.append(f"  {'table':16} {'rows':>9} {'table MB':>9} {'index MB':>9}")
        for name, table_b, index_b, tuples in sizes:
            out.append(f"  {name:16} {tuples:9,d} {table_b / 1e6:9.1f} {index_b / 1e6:9.1f}")
        out.append(f"  database total {db_size / 1e6:.0f} MB (COPY load {loaded['year'][1]:.0f} s)")
        last = max(d.time for d in records)
        first = max(d.time for d in first_week)
        out.append(f"  {'query (named, include/sql/queries)':38} {'rows':>5} {'year p50':>9} {'year p95':>9} "
                   f"{'week p95':>9} {'year/week':>9}")
        for label, name, params in catalog_queries(last):
            week_params = dict(params)
            for k, v in params.items():  # the same question asked of the week's catalog: shift its times
                if isinstance(v, datetime):
                    week_params[k] = v - (last - first)
            if name == "api_science_files" and params.get("start_time"):
                week_params["start_time"] = params["start_time"] - (last - first)
                week_params["end_time"] = params["end_time"] - (last - first)
            if name in ("api_science_files", "science_l0_by_orbit") and params.get("orbits"):
                week_params["orbits"] = [1]
            year_t, n_rows = time_named(conns["year"], name, params, repeat)
            week_t, _ = time_named(conns["week"], name, week_params, repeat)
            y50, y95, w95 = 1000 * statistics.median(year_t), 1000 * pct(year_t, 95), 1000 * pct(week_t, 95)
            out.append(f"  {label:38} {n_rows:5d} {y50:7.2f}ms {y95:7.2f}ms {w95:7.2f}ms {y95 / w95:8.1f}x")
            if name in VIEW_QUERIES:
                year_b, n_b = time_named(conns["year"], name, params, repeat, before=True)
                week_b, _ = time_named(conns["week"], name, week_params, repeat, before=True)
                b50, b95, bw95 = 1000 * statistics.median(year_b), 1000 * pct(year_b, 95), 1000 * pct(week_b, 95)
                assert n_b == n_rows, f"{name}: {n_b} rows on the old view, {n_rows} on the new one"
                out.append(f"    {'baseline: the view before 0015':36} {n_b:5d} {b50:7.2f}ms {b95:7.2f}ms "
                           f"{bw95:7.2f}ms {b95 / bw95:8.1f}x  (0015 is {b95 / y95:.0f}x faster at a year)")
        for c in conns.values():
            c.close()
    finally:
        pg.stop()
    return out


# =========================================================================== A + B. real Airflow on a window


def airflow_part(state: Path, executor: str, args: argparse.Namespace) -> dict[str, Any]:
    """Deliver the window, process it, reprocess it; the figures of one executor."""
    from emm_dev.airflow_local import INBOX_BUCKET, NEVER, AirflowLocal
    from emm_dev.moc import deliver
    from emm_sdc.core.config import load_instrument
    from emm_sdc.core.settings import get_settings

    dags = ["emm_spice_refresh"] + [f"emm_{i}_{k}" for i in INSTRUMENTS for k in ("ingest", "process", "reprocess")]
    kind, _, workers = executor.partition(":")
    kw: dict[str, Any] = {}
    if kind == "celery":  # AirflowLocal gives Celery workers x concurrency slots in all
        kw = {"executor": "celery", "celery_workers": int(workers), "worker_concurrency": args.worker_concurrency}
    af = AirflowLocal(state, parallelism=args.parallelism,
                      ingest_schedule=NEVER, inbox_events=False, dags=dags,
                      itf_overrides={"processing.runner.command": STUB},
                      env={"EMM_STUB_SECONDS": str(args.stub_seconds)}, **kw)
    start, end = ORBIT_EPOCH, ORBIT_EPOCH + timedelta(days=args.days)
    res: dict[str, Any] = {"executor": executor, "slots": af.parallelism}
    try:
        af.start_services()
        kern, files = mars_year.write_window(state / "moc", start, end, seed=args.seed)
        deliver(af.s3, INBOX_BUCKET, get_settings().spice_inbox_prefix, kern)
        af.start_airflow()
        say(f"[{executor}] Airflow ready in {af.startup_seconds:.0f} s; {len(files)} files in the window")
        af.trigger("emm_spice_refresh", note="mars-year benchmark: kernels")
        af.wait_for(lambda: af.catalog_sql("SELECT 1 FROM meta_kernels"), 600, interval=1,
                    what="the first meta-kernel")
        say(f"[{executor}] kernels archived, meta-kernel written")
        l0 = {i: sum(1 for f in files if f.instrument == i and f.level == "l0") for i in INSTRUMENTS}
        [(t_a,)] = af.meta_sql("SELECT now()")
        for inst in INSTRUMENTS:
            deliver(af.s3, INBOX_BUCKET, load_instrument(inst).ingest.inbox_prefix,
                    [f for f in files if f.instrument == inst])
            af.trigger(f"emm_{inst}_ingest", note="mars-year benchmark: window")
        want = sum(n * len(chain_inputs(i)) for i, n in l0.items())

        def products() -> int:
            [(n,)] = af.catalog_sql("SELECT count(*) FROM science_files WHERE data_level NOT IN ('l0', 'hk')")
            return int(n)

        def active() -> int:
            [(n,)] = af.meta_sql("SELECT count(*) FROM dag_run WHERE state IN ('queued', 'running') "
                                 "AND dag_id <> 'emm_spice_refresh'")
            return int(n)

        progress(af, lambda: products() >= want and not active(), args.timeout,
                 lambda: f"[{executor}] processing: {products()}/{want} products", "the window's products")
        res["a"] = ti_stats(af, t_a, [f"emm_{i}_{k}" for i in INSTRUMENTS for k in ("ingest", "process")])
        res["a"].update(files=len(files), products=products())
        say(f"[{executor}] window processed: {res['a']}")

        days = sorted({f_start.date() for f_start in (mars_year_start(f.file_name) for f in files)})
        [(t_b,)] = af.meta_sql("SELECT now()")
        backfills = []
        for inst in INSTRUMENTS:
            cfg = load_instrument(inst)
            backfills.append(af.backfill(f"emm_{inst}_reprocess", days[0].isoformat(), days[-1].isoformat(),
                                         {"reason": "mars-year benchmark", "force": True},
                                         max_active_runs=cfg.airflow.reprocess_max_active_runs)["id"])

        def backfill_done() -> bool:
            states: dict[str, int] = {}
            for b in backfills:
                for s, n in af.backfill_progress(b).items():
                    states[s] = states.get(s, 0) + n
            return sum(states.values()) >= len(days) * len(INSTRUMENTS) and not any(
                states.get(s) for s in ("queued", "running"))

        def jobs() -> int:
            [(n,)] = af.catalog_sql("SELECT count(*) FROM processing_runs WHERE lane = 'reprocessing' "
                                    "AND status = 'success'")
            return int(n)

        progress(af, backfill_done, args.timeout, lambda: f"[{executor}] reprocessing: {jobs()} jobs done",
                 "the reprocessing backfills")
        res["b"] = ti_stats(af, t_b, [f"emm_{i}_reprocess" for i in INSTRUMENTS])
        [(failed,)] = af.meta_sql("SELECT count(*) FROM dag_run WHERE backfill_id = ANY(%s) AND state = 'failed'",
                                  (backfills,))
        res["b"].update(days=len(days), jobs=jobs(), failed_runs=int(failed))
        say(f"[{executor}] reprocessing done: {res['b']}")
        return res
    finally:
        af.stop()


def mars_year_start(file_name: str) -> datetime:
    from emm_sdc.core import naming

    return naming.parse(file_name).start


def progress(af: Any, done: Callable[[], bool], timeout: float, line: Callable[[], str], what: str) -> None:
    last = [time.monotonic()]

    def check() -> bool:
        if time.monotonic() - last[0] > 30:
            last[0] = time.monotonic()
            say(line())
        return done()

    af.wait_for(check, timeout, interval=2, what=what)


def ti_stats(af: Any, since: datetime, dag_ids: list[str]) -> dict[str, Any]:
    """Task instances of ``dag_ids`` finished since ``since``: count, span, per minute, mean queue wait."""
    [(n, last, wait, run_s, failed)] = af.meta_sql(
        "SELECT count(*), max(end_date), avg(extract(epoch FROM start_date - queued_dttm)), "
        "avg(extract(epoch FROM end_date - start_date)), count(*) FILTER (WHERE state = 'failed') "
        "FROM task_instance WHERE dag_id = ANY(%s) AND end_date >= %s AND state = ANY(%s)",
        (dag_ids, since, list(FINISHED_TI)))
    minutes = max((last - since).total_seconds(), 1) / 60 if last else float("nan")
    return {"tasks": int(n), "minutes": round(minutes, 2), "per_min": round(n / minutes, 1) if n else 0.0,
            "queued_to_start_s": round(float(wait or 0), 2), "task_run_s": round(float(run_s or 0), 2),
            "failed_tasks": int(failed)}


def executor_label(r: dict[str, Any], args: argparse.Namespace) -> str:
    if r["executor"] == "local":
        return f"local, {r['slots']} slots"
    n = r["executor"].partition(":")[2]
    return f"celery, {n} worker{'s' * (n != '1')} x {args.worker_concurrency} = {r['slots']} slots"


def airflow_report(results: list[dict[str, Any]], year: list[Delivery], args: argparse.Namespace) -> list[str]:
    out = []
    year_l0 = sum(1 for d in year if d.level == "l0")
    year_hk = sum(1 for d in year if d.level == "hk")
    out.append(f"A. Scheduler throughput: the first {args.days:g} days of the year (all three instruments, kernels "
               f"first), stub processor {args.stub_seconds:g} s")
    out.append(f"  {'executor':30} {'files':>5} {'products':>8} {'tasks':>6} {'minutes':>7} {'tasks/min':>9} "
               f"{'queued->start':>13} {'task run':>8}")
    base = None
    for r in results:
        a = r["a"]
        label = executor_label(r, args)
        base = base or a["per_min"]
        out.append(f"  {label:30} {a['files']:5d} {a['products']:8d} {a['tasks']:6d} {a['minutes']:7.1f} "
                   f"{a['per_min']:9.1f} {a['queued_to_start_s']:12.1f}s {a['task_run_s']:7.1f}s"
                   + (f"   ratio to local {a['per_min'] / base:.2f}" if r is not results[0] else ""))
        per_file = a["tasks"] / max(a["files"], 1)
        year_tasks = per_file * (year_l0 + year_hk)
        out.append(f"    -> {per_file:.1f} tasks per delivered file; the year's {year_l0 + year_hk:,d} L0+HK files = "
                   f"~{year_tasks:,.0f} tasks = {year_tasks / a['per_min'] / 60:.1f} h of scheduler time at this "
                   f"rate ({year_tasks / YEAR_DAYS:,.0f} tasks/day needed: {year_tasks / YEAR_DAYS / 1440:.2f}/min)")
    out.append(f"B. Reprocessing the window with airflow backfill (force), extrapolated to {YEAR_DAYS} days x 3 "
               f"instruments")
    out.append(f"  {'executor':30} {'days':>4} {'jobs':>5} {'tasks':>6} {'minutes':>7} {'jobs/min':>8} "
               f"{'tasks/min':>9} {'year (h)':>8}")
    base_b = None
    for r in results:
        b = r["b"]
        label = executor_label(r, args)
        year_h = b["minutes"] * YEAR_DAYS / max(b["days"], 1) / 60
        base_b = base_b or year_h
        out.append(f"  {label:30} {b['days']:4d} {b['jobs']:5d} {b['tasks']:6d} {b['minutes']:7.1f} "
                   f"{b['jobs'] / b['minutes']:8.1f} {b['per_min']:9.1f} {year_h:8.1f}"
                   + (f"   ratio to local {year_h / base_b:.2f}" if r is not results[0] else "")
                   + (f"  ({b['failed_runs']} failed runs!)" if b["failed_runs"] else ""))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=2.0, help="window of the year run through Airflow")
    ap.add_argument("--executors", default="local,celery:1,celery:2",
                    help="comma list: local (LocalExecutor, --parallelism slots), celery:N (N Celery workers)")
    ap.add_argument("--parallelism", type=int, default=4, help="LocalExecutor slots")
    ap.add_argument("--worker-concurrency", type=int, default=2, help="task slots per Celery worker")
    ap.add_argument("--stub-seconds", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=30, help="timings per catalog query")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=1500, help="seconds allowed per Airflow phase")
    ap.add_argument("--skip-airflow", action="store_true")
    ap.add_argument("--skip-catalog", action="store_true")
    ap.add_argument("--state-dir", default=None, help="default: a temp dir, removed at the end unless --keep")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="emm-bench-mars-"))
    load_before = os.getloadavg()[0]
    year = list(mars_year.timeline(args.seed))
    report = [f"Mars-year benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, 1-min load "
              f"{load_before:.1f} at the start"]
    report += [f"The year (emm_dev.mars_year, seed {args.seed}):", *mars_year.summary(year).lines()]
    ok = False
    try:
        if not args.skip_catalog:
            report += catalog_part(state / "catalog", year, args.repeat)
            print("\n".join(report[-16:]), flush=True)
        results = []
        if not args.skip_airflow:
            for executor in [e.strip() for e in args.executors.split(",") if e.strip()]:
                results.append(airflow_part(state / f"airflow-{executor.replace(':', '-')}", executor, args))
            if results:
                report += airflow_report(results, year, args)
        print()
        print("\n".join(report))
        print(f"(run time {time.monotonic() - T0:.0f} s)")
        ok = True
        return 0
    finally:
        if args.keep or not ok:
            print(f"state kept in {state}")
        elif args.state_dir is None:
            shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())


