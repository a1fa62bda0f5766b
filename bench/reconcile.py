"""Integrity reconciliation at scale vs a same-run baseline: a raw read of the same keys plus a raw SELECT of the rows.

Two cases, each on the embedded services (moto's S3 server, a real PostgreSQL), catalog rows bulk-loaded with COPY:

* **inventory**: ``--inventory-objects`` (default 1,000,000) archived L0 objects described by an S3 Inventory
  (CSV manifest + gzipped data files, as S3 publishes it) and as many ``science_files`` rows. Reconciliation =
  the whole run (plan, the bucket-wide merge streaming the inventory against a server-side cursor, the catalog
  checks, the report). Baseline = reading every inventory row (download, gunzip, CSV) + ``SELECT`` of the rows.
* **listing**: ``--listing-objects`` (default 100,000) objects really in the bucket (put into moto's store
  directly, for a fast set-up), reconciled through live ``ListObjectsV2`` pages, one partition per instrument.
  Baseline = a raw paginated listing of the same keys + the same ``SELECT``.

Deep verification is off (fraction 0: a byte-reading rate is a setting, not a speed) and nothing is damaged,
so both runs must find nothing. Each measurement runs in its own child process, so its peak RSS is its own.
Prints both ratios (goal <= 2x) and the reconciliation's peak RSS (goal <= 500 MB at 1M).

Usage: ``PYTHONPATH=plugins:devtools .venv/bin/python bench/reconcile.py [--inventory-objects N] [--listing-objects N]``
(0 skips a case; e.g. ``--inventory-objects 100000 --listing-objects 10000`` for a quick run).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

START = datetime(2021, 2, 9, tzinfo=UTC)
COLUMNS = ("file_name", "directory_path", "file_size", "instrument_id", "data_level", "timetag", "orbit_number",
           "pred_rec", "version", "revision", "file_root", "absolute_version", "md5checksum", "product_type",
           "bucket", "s3_key")
MODES = {"exi": "xos1_", "emu": "os2_", "emr": ""}


def objects(total: int) -> list[tuple[str, str, int, str]]:
    """(key, file name, size, MD5) of ``total`` L0 files over three instruments, sorted by key."""
    out = []
    for i in range(total):
        inst = ("exi", "emu", "emr")[i % 3]
        t = START + timedelta(seconds=60 * i)
        sep = "T" if inst == "exi" else "t"
        name = f"emm_{inst}_l0_{t:%Y%m%d}{sep}{t:%H%M%S}_{(i // 900) % 10000:04d}_{MODES[inst]}n_v01-00.bin"
        mode_dir = MODES[inst].rstrip("_")
        key = f"emm/data/{inst}/l0/{mode_dir + '/' if mode_dir else ''}{t:%Y/%m}/{name}"
        body = key.encode()
        out.append((key, name, len(body), hashlib.md5(body).hexdigest()))
    out.sort()
    return out


def copy_rows(conn: Any, objs: list[tuple[str, str, int, str]], bucket: str) -> None:
    """Bulk-load the catalog rows with COPY (the generated API record is computed by PostgreSQL)."""
    with conn.cursor() as cur:
        with cur.copy(f"COPY science_files ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            buf = io.StringIO()
            for n, (key, name, size, md5) in enumerate(objs, start=1):
                inst = name[4:7]
                root = name.rsplit("_n_v", 1)[0]
                buf.write("\t".join([name, key.rsplit("/", 1)[0], str(size), inst, "l0",
                                     f"{name[11:15]}-{name[15:17]}-{name[17:19]} {name[20:22]}:{name[22:24]}:"
                                     f"{name[24:26]}+00", name[27:31], "n", "1", "0", root, "100", md5, "science",
                                     bucket, key]) + "\n")
                if n % 50_000 == 0:
                    copy.write(buf.getvalue())
                    buf = io.StringIO()
            copy.write(buf.getvalue())
        cur.execute("ANALYZE science_files")
    conn.commit()


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process: prints seconds, peak RSS and what it counted."""
    import boto3
    import psycopg

    from emm_sdc.core import inventory
    from emm_sdc.core import reconcile as rc
    from emm_sdc.core.catalog import Catalog
    from emm_sdc.core.site_config import InventorySource, ReconciliationConfig
    from emm_sdc.core.storage import Storage

    env = json.loads(args.child_env)
    client = boto3.client("s3", endpoint_url=env["endpoint"], region_name="us-east-1",
                          aws_access_key_id="bench", aws_secret_access_key="bench")  # noqa: S106 (moto)

    def connect() -> Any:
        return psycopg.connect(env["conninfo"])

    t0 = time.perf_counter()
    counted: dict[str, Any] = {}
    if args.child.startswith("baseline"):
        n = 0
        if args.child == "baseline-inventory":
            manifest = inventory.latest_manifest(client, env["inventory_bucket"], env["inventory_prefix"])
            assert manifest is not None
            import csv
            import gzip

            for key in manifest.files:
                body = client.get_object(Bucket=env["inventory_bucket"], Key=key)["Body"]
                with gzip.GzipFile(fileobj=body) as gz:
                    for _row in csv.reader(io.TextIOWrapper(gz, encoding="utf-8", newline="")):
                        n += 1
        else:
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=env["bucket"]):
                n += len(page.get("Contents", ()))
        rows = 0
        with connect() as conn, conn.transaction(), conn.cursor(name="baseline") as cur:
            cur.itersize = 5000
            cur.execute("SELECT s3_key, file_size, md5checksum FROM science_files")
            for _row in cur:
                rows += 1
        counted = {"objects": n, "rows": rows}
    else:
        cfg = ReconciliationConfig(settle_minutes=0, deep_verify_mb_per_s=0)
        if args.child == "recon-inventory":
            cfg = cfg.model_copy(update={"inventory": InventorySource(bucket=env["inventory_bucket"],
                                                                      prefix=env["inventory_prefix"])})
        with connect() as conn, connect() as snap:
            # partitions run parallel_tasks at a time on their own connections, as the DAG's mapped tasks do
            summary = rc.reconcile(Storage(client), Catalog(conn), snap, bucket=env["bucket"], cfg=cfg,
                                   deep_fraction=0.0, work_dir=Path(env["work"]), connect=connect)
        counted = {"objects": summary.stats.get("objects"), "rows": summary.stats.get("catalog_rows"),
                   "findings": summary.total}
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), **counted}))


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM; ru_maxrss would include the forking parent's pages)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, env: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", kind, "--child-env", json.dumps(env)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case(name: str, total: int, pg: Any, s3: Any, tmp: Path) -> None:
    from moto.s3.models import s3_backends

    from emm_sdc.core import catalog, inventory

    db = f"bench_{name}"
    pg._server.psql(f'DROP DATABASE IF EXISTS "{db}";')
    pg._server.psql(f'CREATE DATABASE "{db}";')
    conn = pg.connect(db)
    catalog.migrate(conn)
    client = s3.client()
    bucket = f"bench-{name}-archive"
    client.create_bucket(Bucket=bucket)
    t0 = time.perf_counter()
    objs = objects(total)
    copy_rows(conn, objs, bucket)
    env: dict[str, Any] = {"endpoint": s3.endpoint, "conninfo": pg.conninfo(db), "bucket": bucket,
                           "work": str(tmp / "work")}
    if name == "inventory":
        env.update(inventory_bucket=f"bench-{name}-inventory", inventory_prefix=f"inv/{bucket}/daily/")
        client.create_bucket(Bucket=env["inventory_bucket"])
        stamp = datetime.now(UTC) - timedelta(hours=1)
        inventory.write_inventory(client, source_bucket=bucket, destination_bucket=env["inventory_bucket"],
                                  prefix=env["inventory_prefix"],
                                  objects=((k, size, md5, stamp) for k, _n, size, md5 in objs), created=stamp)
    else:
        backend = s3_backends["123456789012"]["aws"]
        for key, _n, _size, _md5 in objs:
            backend.put_object(bucket, key, key.encode())
    del objs
    conn.close()
    print(f"{name}: {total:,} objects and rows set up in {time.perf_counter() - t0:.0f} s", flush=True)
    base1 = measure(f"baseline-{name}", env)
    recon = measure(f"recon-{name}", env)
    base2 = measure(f"baseline-{name}", env)
    baseline = (base1["seconds"] + base2["seconds"]) / 2
    assert recon["findings"] == 0, recon
    assert recon["objects"] == total and base1["objects"] == total and base1["rows"] == total, (recon, base1)
    ratio = recon["seconds"] / baseline
    print(f"{name}: reconciliation {recon['seconds']:.1f} s vs baseline {baseline:.1f} s (raw read of the keys + "
          f"raw SELECT; runs {base1['seconds']:.1f}/{base2['seconds']:.1f} s): ratio {ratio:.2f} (goal <= 2); "
          f"peak RSS {recon['peak_rss_mb']:.0f} MB (baseline {base1['peak_rss_mb']:.0f} MB; goal <= 500 MB); "
          f"findings {recon['findings']}", flush=True)
    pg._server.psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE);')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inventory-objects", type=int, default=1_000_000)
    parser.add_argument("--listing-objects", type=int, default=100_000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-env", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    import logging

    from emm_dev.embedded import EmbeddedPostgres, EmbeddedS3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="emm-bench-reconcile-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pgdata", databases=()).start()
        s3 = EmbeddedS3().start()
        try:
            if args.inventory_objects:
                case("inventory", args.inventory_objects, pg, s3, Path(tmp))
            if args.listing_objects:
                case("listing", args.listing_objects, pg, s3, Path(tmp))
        finally:
            s3.stop()
            pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
