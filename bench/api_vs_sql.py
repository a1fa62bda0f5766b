"""Latency of the science-files API on a catalog of 1,000,000 products vs the same SQL run directly.

Loads 1,000,000 ``science_files`` rows with COPY into an embedded PostgreSQL
(three instruments, their levels, four years of timetags, one product in ten
with a second version), starts the API on loopback (uvicorn, moto's Cognito for
the token), then times typical queries both ways in the same run:

* through the API: an HTTP GET with a team token, as the published clients send it;
* directly: the API's own named query through psycopg (same parameters, unprepared).

Prints p50/p95 of each and the ratio API/SQL. Goal: API p95 < 50 ms and <= 1.5x the direct SQL.

Usage: ``./sdc bench`` or ``PYTHONPATH=plugins:devtools .venv/bin/python bench/api_vs_sql.py [--rows 1000000]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

QUERIES = {
    "one instrument+level+month, latest": "instrument_id=exi&data_level=l2a&start_date=2022-03-01&end_date=2022-04-01"
                                          "&latest=true",
    "an Ls range, latest": "start_mars_ls=100&end_mars_ls=100.5&latest=true",
    "an orbit": "orbit_num=500&latest=true",
}
STREAMS = [("exi", "l1", "xos1", "f437"), ("exi", "l2a", "xos1", "f635"), ("exi", "l1ql", "xos2", "f437"),
           ("emu", "l1", "os2", None), ("emu", "l2a", "os2", "sw1of3"), ("emu", "l2b", "os4", "12"),
           ("emr", "l1", None, None), ("emr", "l2", None, None), ("emr", "l2ql", None, None)]
START = datetime(2021, 2, 9, tzinfo=UTC)
SPAN = timedelta(days=4 * 365)
ORBIT_S = 55 * 3600
MARS_YEAR_S = 686.98 * 86400
COLUMNS = ("file_name", "directory_path", "file_size", "instrument_id", "data_level", "timetag", "descriptor", "mode",
           "orbit_number", "pred_rec", "version", "revision", "file_root", "absolute_version", "md5checksum",
           "product_type", "bucket", "s3_key", "released", "mars_ls", "spacecraft_lst", "subsolar_lat",
           "subsolar_lon", "spacecraft_lat", "spacecraft_lon", "spacecraft_alt")


def rows(total: int) -> Any:
    """Tab-separated COPY lines of ``total`` products (one in ten has a second revision)."""
    per_stream = total // len(STREAMS)
    step = SPAN / (per_stream / 1.1)
    for inst, level, mode, desc in STREAMS:
        made = i = 0
        while made < per_stream:
            t = START + step * i
            i += 1
            sep = "T" if inst == "exi" else "t"
            orbit = int((t - START).total_seconds() // ORBIT_S) + 1
            root = "_".join(x for x in ("emm", inst, level, t.strftime(f"%Y%m%d{sep}%H%M%S"), f"{orbit:04d}", mode,
                                        desc) if x)
            ext = ".png" if level.endswith("ql") else ".fits"
            ls = ((t - START).total_seconds() / MARS_YEAR_S * 360 + 0.0) % 360
            for revision in (0, 1) if i % 10 == 0 else (0,):
                if made >= per_stream:
                    break
                name = f"{root}_r_v01-{revision:02d}{ext}"
                directory = "/".join(x for x in ("emm/data", inst, level, mode, f"{t:%Y}", f"{t:%m}") if x)
                values = (name, directory, 1_000_000 + i, inst, level, t.isoformat(), desc or r"\N", mode or r"\N",
                          orbit, "r", 1, revision, root, 100 + revision, f"{i:032x}",
                          "quicklook" if level.endswith("ql") else "science", "emm-sdc-archive",
                          f"{directory}/{name}", "t" if i % 2 else "f", f"{ls:.4f}", f"{(i * 0.37) % 24:.4f}",
                          f"{(i * 7) % 50 - 25}", f"{(i * 13) % 360}", f"{(i * 3) % 180 - 90}", f"{(i * 11) % 360}",
                          f"{20000 + (i * 97) % 23000}")
                made += 1
                yield "\t".join(str(v) for v in values) + "\n"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=60)
    args, _ = ap.parse_known_args()

    import requests
    import uvicorn

    from emm_dev.embedded import DEMO_USERS, EmbeddedPostgres, EmbeddedS3, cognito_env, free_port
    from emm_sdc.api.app import Backends, create_app
    from emm_sdc.api.config import api_settings
    from emm_sdc.api.query import parse_items
    from emm_sdc.core import catalog

    work = Path(tempfile.mkdtemp(prefix="emm-bench-api-"))
    pg = EmbeddedPostgres(work / "pgdata", databases=("bench",)).start()
    s3 = EmbeddedS3().start()
    try:
        conn = pg.connect("bench")
        catalog.migrate(conn)
        t0 = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY science_files ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            buf = io.StringIO()
            for n, line in enumerate(rows(args.rows), start=1):
                buf.write(line)
                if n % 50_000 == 0:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("ANALYZE science_files")
            cur.execute("SELECT count(*) FROM science_files")
            count = cur.fetchone()[0]
        conn.commit()
        print(f"catalog: {count:,} rows loaded with COPY in {time.perf_counter() - t0:.0f} s")

        os.environ.update(cognito_env(s3.endpoint))
        api_settings.cache_clear()
        backends = Backends(lambda: pg.conninfo("bench"), s3.client)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(backends), host="127.0.0.1", port=port,
                                               log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        while not server.started:
            time.sleep(0.05)
        settings = api_settings()
        token = requests.post(settings.endpoint + "/", timeout=10, headers={
            "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
            "Content-Type": "application/x-amz-json-1.1"}, data=json.dumps({
                "AuthFlow": "USER_PASSWORD_AUTH", "ClientId": settings.client_id,
                "AuthParameters": {"USERNAME": "team", "PASSWORD": DEMO_USERS["team"][0]}}),
        ).json()["AuthenticationResult"]["AccessToken"]
        session = requests.Session()
        print(f"{'query':38s} {'rows':>6s} {'SQL p50':>9s} {'SQL p95':>9s} {'API p50':>9s} {'API p95':>9s} "
              f"{'p95 ratio':>9s}")
        for label, query in QUERIES.items():
            params = {**parse_items([tuple(kv.split("=", 1)) for kv in query.split("&")]),  # type: ignore[misc]
                      "see_all": True, "own_instruments": [], "limit": settings.max_records + 1}
            direct, api = [], []
            n_rows = 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                n_rows = len(backends.query("api_science_files", params))
                direct.append(time.perf_counter() - t)
                t = time.perf_counter()
                r = session.get(f"http://127.0.0.1:{port}/science-files-metadata?{query}",
                                headers={"Authorization": token}, timeout=60)
                r.raise_for_status()
                api.append(time.perf_counter() - t)
            assert len(r.json()) == n_rows
            ms = [1000 * percentile(x, q) for x in (direct, api) for q in (0.5, 0.95)]
            print(f"{label:38s} {n_rows:6d} {ms[0]:8.1f}ms {ms[1]:8.1f}ms {ms[2]:8.1f}ms {ms[3]:8.1f}ms "
                  f"{ms[3] / ms[1]:8.2f}x")
        print("goal: API p95 < 50 ms and <= 1.5x the direct SQL's p95")
        server.should_exit = True
        backends.close()
        conn.close()
    finally:
        s3.stop()
        pg.stop()


if __name__ == "__main__":
    main()
