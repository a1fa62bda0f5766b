"""Fixtures of the adversarial fault suite and its summary line.

Every case gets fresh buckets and a fresh catalog on the real services (moto's
S3 server, PostgreSQL); ``mode`` runs a case against a versioned and an
unversioned inbox where the bucket setting matters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emm_dev import synthetic
from emm_sdc.core import delivery
from emm_sdc.core.archiving import Archiver, Outcome, RunContext
from emm_sdc.core.catalog import Catalog
from emm_sdc.core.config import load_instrument
from emm_sdc.core.kernel_archiving import KernelArchiver
from emm_sdc.core.storage import Storage
from tests.faults.harness import TOTALS, DbFaults, S3Faults, World

PREFIX = "inbox/exi/"
SPICE_PREFIX = "inbox/spice/"


_CASES = {"held": 0, "broken": 0}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Count the fault cases: a case holds when its test (all its invariant checks) passed."""
    if "tests/faults/" in report.nodeid and (report.when == "call" or report.failed):
        _CASES["held" if report.passed else "broken"] += 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not (_CASES["held"] or _CASES["broken"]):
        return
    write = terminalreporter.write_line
    write(f"fault suite: {_CASES['held']} cases held, {_CASES['broken']} broken")
    if TOTALS["checks"]:
        write(f"fault suite (ingest): {TOTALS['checks']} invariant checks placed delivered objects "
              f"{TOTALS['held']} times; {TOTALS['lost']} objects lost, {TOTALS['duplicate_rows']} duplicate rows")
    if TOTALS["product_checks"]:
        write(f"fault suite (processing): {TOTALS['product_checks']} product invariant checks; "
              f"{TOTALS['rows_without_objects']} rows without objects, {TOTALS['objects_without_rows']} objects "
              f"without rows, {TOTALS['duplicate_products']} duplicate products")


@pytest.fixture(params=["versioned", "unversioned"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def world(buckets: dict[str, str], catalog_conn: Any, s3_server: Any, request: pytest.FixtureRequest) -> World:
    versioned = "mode" not in request.fixturenames or request.getfixturevalue("mode") == "versioned"
    client = s3_server.client()
    if versioned:
        client.put_bucket_versioning(Bucket=buckets["inbox"], VersioningConfiguration={"Status": "Enabled"})
    return World(client, buckets["inbox"], buckets["archive"], catalog_conn, versioned)


@pytest.fixture(scope="session")
def l0(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A valid EXI L0 file, another file, and other valid bytes under the first one's name."""
    out = tmp_path_factory.mktemp("l0")
    files = synthetic.generate(out / "moc", orbits=(11,), instruments=("exi",))
    science = [f for f in files if f.level == "l0"]
    other = synthetic.conflicting(out / "again", science[0])
    second = science[1] if len(science) > 1 else files[-1]
    return {"name": science[0].file_name, "data": science[0].path.read_bytes(), "other": other.path.read_bytes(),
            "name2": second.file_name, "data2": second.path.read_bytes()}


@pytest.fixture
def actors(world: World, s3_server: Any, pg_server: Any) -> Iterator[Callable[..., tuple[Any, S3Faults, DbFaults]]]:
    """Makes handlers like separate workers: each has its own S3 client (with fault hooks) and catalog session."""
    opened: list[Any] = []
    admin = pg_server.connect(world.conn.info.dbname)
    opened.append(admin)

    def make(kind: str = "ingest", kernel_dir: Path | None = None,
             run_id: str = "run") -> tuple[Any, S3Faults, DbFaults]:
        client = s3_server.client()
        conn = pg_server.connect(world.conn.info.dbname)
        opened.append(conn)
        s3f = S3Faults(client)
        dbf = DbFaults(conn, admin)
        common = {"inbox_bucket": world.inbox, "archive_bucket": world.archive,
                  "ctx": RunContext("fault_dag", run_id)}
        if kind == "ingest":
            handler: Any = Archiver(Storage(client), Catalog(dbf), load_instrument("exi"), **common)
        else:
            assert kernel_dir is not None
            handler = KernelArchiver(Storage(client), Catalog(dbf), kernel_dir=kernel_dir, **common)
        return handler, s3f, dbf

    yield make
    for conn in opened:
        conn.close()


def ingest(handler: Any, prefix: str = PREFIX, *, final_attempt: bool = True,
           grace: timedelta = timedelta(0)) -> list[Outcome]:
    """One run's work: plan the inbox and handle every actionable item (what the ingest DAG's tasks do)."""
    objects = handler.storage.list(handler.inbox_bucket, prefix)
    plan = delivery.plan(objects, prefix, now=datetime.now(UTC) + timedelta(seconds=1), grace=grace)
    return [handler.handle(item, final_attempt=final_attempt) for item in plan.actionable]
