"""The science data web page in headless Chromium, against the API on embedded services.

One module-scoped world: a catalog of products of the three instruments (the API tests' products, a
processing run with lineage, PNG quicklooks of two observations, and a few hundred EXI images for
paging and timing), their archived objects in moto's S3, moto's Cognito users, and one FastAPI parent
app with the API at ``/emm/api`` and the page at ``/emm`` (as Airflow's API server mounts them), served
by uvicorn on loopback. The browser is Debian's ``chromium`` driven by Playwright (never
``playwright install``); screenshots go to a folder under the run's temp dir.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emm_dev.embedded import DEMO_USERS
from emm_sdc.api.app import Backends
from emm_sdc.api.app import create_app as create_api
from emm_sdc.core import catalog, naming
from emm_sdc.core.catalog import Catalog, file_record
from emm_sdc.web.app import create_app as create_page
from tests.api.conftest import PRODUCTS
from tests.helpers import dissemination_world, served

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
ROOT = Path(__file__).resolve().parents[2]
DOCS_SCREENSHOT = ROOT / "docs" / "images" / "science-search.png"

# An EMUS L1 made from the L0 by a processing run; an EMIRS quicklook made from the L2 (lineage both ways).
EMU_L0 = "emm_emu_l0_20210801t000000_0090_os2_n_v01-00.bin"
EMU_L1 = "emm_emu_l1_20210801t000000_0090_os2_sw1of3_f_v01-00.fits.gz"
EMR_L2 = "emm_emr_l2_20210315t044030_0024_r_v00-02.fits"
EMR_QL = "emm_emr_l2ql_20210315t044030_0024_r_v00-02.png"
EXI_QL = "emm_exi_l1ql_20210301T064846_0014_xos5_f437_r_v03-02.png"
#: (name, geometry (Ls, LST h, lat, lon, alt, sslat, sslon), released, made by a run from these inputs)
EXTRAS: list[tuple[str, tuple[Any, ...], bool, tuple[str, ...] | None]] = [
    (EMU_L1, (145.0, 9.0, 0.0, 0.0, 25000.0, 24.0, 100.0), False, (EMU_L0,)),
    (EMR_QL, (17.4, 5.947, 10.0, 20.0, 16758.4, -5.0, 300.0), True, (EMR_L2,)),
    (EXI_QL, (10.0, 14.0, 20.0, 90.0, 20000.0, 0.0, 0.0), True, None),
]
#: EXI images of 2022 for paging and timing (a realistic page of results: "1 – 20 of 600").
N_BULK = 600


@dataclass
class Product:
    name: str
    released: bool
    geometry: dict[str, Any]
    body: bytes
    md5: str
    key: str = ""

    @property
    def parsed(self) -> naming.EmmName:
        return naming.parse(self.name)


@dataclass
class Site:
    """The served page and API, the catalog and storage behind them, and what the world holds."""

    url: str  # the page: http://127.0.0.1:<port>/emm/
    api: str  # http://127.0.0.1:<port>/emm/api
    cognito: dict[str, str]
    cat: Catalog
    client: Any
    buckets: dict[str, str]
    products: dict[str, Product]
    shots: Path

    def visible(self, user: str) -> list[Product]:
        """What ``user`` may see (team: all; public: released), HK aside."""
        team = "emm-team" in DEMO_USERS[user][1]
        return [p for p in self.products.values() if team or p.released]

    def expected(self, user: str, keep: Callable[[Product], bool], *, latest: bool = True) -> set[str]:
        """File names a search shows ``user``: the visible products that ``keep`` accepts, newest visible version
        of each file root only when ``latest``."""
        seen = self.visible(user)
        newest: dict[str, int] = {}
        for p in seen:
            newest[p.parsed.file_root] = max(newest.get(p.parsed.file_root, -1), p.parsed.absolute_version)
        return {p.name for p in seen
                if keep(p) and (not latest or p.parsed.absolute_version == newest[p.parsed.file_root])}


def _png(seed: int) -> bytes:
    """A small real PNG: a Mars-coloured disk on black, different for each seed."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (96, 96), (0, 0, 0))
    draw = ImageDraw.Draw(img)
    draw.ellipse((8, 8, 88, 88), fill=(193, 68 + seed * 20, 14))
    draw.ellipse((30 + seed * 6, 24, 46 + seed * 6, 40), fill=(240, 230, 220))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _geometry(values: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("mars_ls", "spacecraft_lst", "spacecraft_lat", "spacecraft_lon", "spacecraft_alt", "subsolar_lat",
            "subsolar_lon")
    return dict(zip(keys, values, strict=True))


def _bulk(i: int) -> tuple[str, tuple[float, ...], bool]:
    """The i-th synthetic EXI image: every 3 h from 2022-01-01, 20 per orbit, geometry spread over Mars."""
    t = datetime(2022, 1, 1, tzinfo=UTC).timestamp() + i * 3 * 3600
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y%m%dT%H%M%S")
    mode, filt = naming.EXI_MODES[i % 5], naming.EXI_FILTERS[i % 6]
    name = f"emm_exi_l2a_{stamp}_{500 + i // 20:04d}_{mode}_{filt}_r_v01-00.fits.gz"
    geom = (round(200 + i * 0.1, 3), round((i * 1.7) % 24, 3), round(60 * math.sin(i * 0.37), 3),
            round((i * 47.3) % 360, 3), round(20000 + (i * 383) % 23000, 1), round(-10 + (i % 40) * 0.5, 2),
            round((i * 13.1) % 360, 2))
    return name, geom, i % 3 != 0


def _put(client: Any, bucket: str, cat: Catalog, name: str, body: bytes, geom: dict[str, Any],
         run_id: int | None = None, inputs: tuple[str, ...] = ()) -> Product:
    md5 = hashlib.md5(body).hexdigest()
    record = file_record(naming.parse(name), size=len(body), md5=md5, bucket=bucket, geometry=geom)
    client.put_object(Bucket=bucket, Key=record["s3_key"], Body=body, Metadata={"md5": md5})
    if run_id is None:
        cat.archive_delivery(record, inbox_key="inbox/" + name, dag_id="t", dag_run_id="t")
    else:
        cat.index_products(run_id, [(record, list(inputs))], ended_at=datetime.now(UTC), log_uri=None)
    return Product(name, False, geom, body, md5, record["s3_key"])


def _release(cat: Catalog, names: list[str]) -> None:
    """Flag files released, as the release DAG does (its own tests are elsewhere)."""
    with catalog.transaction(cat.conn) as cur:
        cur.execute("UPDATE science_files SET released = true WHERE file_name = ANY(%(n)s)", {"n": names})


_RUN: dict[str, Path] = {}


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save screenshots (the folder is printed at the end of the run)."""
    _RUN["shots"] = tmp_path_factory.mktemp("web-screenshots")
    return _RUN["shots"]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    path = _RUN.get("shots")
    if path is None:
        return
    shots = sorted(p.name for p in path.glob("*.png"))
    if shots:
        terminalreporter.write_line(f"web page screenshots ({', '.join(shots)}): {path}")
    if (path / "timings.json").exists():
        t = json.loads((path / "timings.json").read_text())
        terminalreporter.write_line(f"web page timings: first render {t['first_render_ms']:.0f} ms, search of "
                                    f"{t['files']} files {t['search_ms']:.0f} ms (in the browser)")


@pytest.fixture(scope="module")
def site(pg_server: Any, s3_server: Any, screenshots: Path) -> Iterator[Site]:
    from fastapi import FastAPI

    with dissemination_world(pg_server, s3_server, "web") as w:
        cat, client, buckets, cognito = w["cat"], w["client"], w["buckets"], w["cognito"]
        archive = buckets["archive"]
        products: dict[str, Product] = {}
        for i, (name, geom, rel) in enumerate(PRODUCTS):
            products[name] = _put(client, archive, cat, name, f"{name} #{i}\n".encode() * 50, _geometry(geom))
            products[name].released = rel
        for i, (name, geom, rel, inputs) in enumerate(EXTRAS):
            body = _png(i) if name.endswith(".png") else f"{name}\n".encode() * 80
            run_id = None
            if inputs is not None:
                parsed = naming.parse(name)
                run_id = cat.start_run(
                    dag_id=f"emm_{parsed.instrument}_process", dag_run_id=f"asset_triggered__2021-08-0{i}",
                    task_id="unit.run", map_index=0, try_number=1, instrument_id=parsed.instrument,
                    data_level=parsed.level, work_unit=f"orbit-{parsed.orbit:04d}", runner="docker",
                    processor_name=f"emm-{parsed.instrument}-ref", processor_version="1.2.0",
                    image=f"localhost/emm-{parsed.instrument}-ref:1.2.0", environment="production",
                    meta_kernel="emm_meta_v0003.tm", reason="new L0", started_at=datetime.now(UTC))
            products[name] = _put(client, archive, cat, name, body, _geometry(geom), run_id, inputs or ())
            products[name].released = rel
        for i in range(N_BULK):
            name, geom, rel = _bulk(i)
            products[name] = _put(client, archive, cat, name, f"{name}\n".encode() * 4, _geometry(geom))
            products[name].released = rel
        _release(cat, [p.name for p in products.values() if p.released])

        backends = Backends(lambda: pg_server.conninfo(w["db"]), s3_server.client)
        root = FastAPI()
        root.mount("/emm/api", create_api(backends))  # before /emm: mounts match prefixes in order
        root.mount("/emm", create_page())
        try:
            with served(root) as port:
                base = f"http://127.0.0.1:{port}"
                yield Site(f"{base}/emm/", f"{base}/emm/api", cognito, cat, client, buckets, products, screenshots)
        finally:
            backends.close()
def _skip_browser() -> bool:
    """EMM_SKIP_BROWSER=1 (read by tests/conftest.py before it clears EMM_* variables)."""
    import tests.conftest as root

    return bool(getattr(root, "SKIP_BROWSER", False))


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless Chromium under Playwright; a missing browser fails (the suite installs it)."""
    missing = None
    if not CHROMIUM.exists():
        missing = f"{CHROMIUM} is missing (Debian package chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "the playwright package is missing (requirements-dev.txt)"
    if missing:
        if _skip_browser():
            pytest.skip(f"EMM_SKIP_BROWSER=1: browser tests skipped ({missing})")
        pytest.fail(f"browser tests need headless Chromium: {missing}. scripts/install-system-deps installs it "
                    "(as root: apt-get install chromium); EMM_SKIP_BROWSER=1 skips these tests", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page_factory(browser: Any) -> Iterator[Callable[..., Any]]:
    """New pages, each in its own browser context (its own sessionStorage), closed after the test; an uncaught
    error in the page's scripts fails the test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def make(width: int = 1280, height: int = 800) -> Any:
        ctx = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert errors == [], f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(page_factory: Callable[..., Any]) -> Any:
    return page_factory()


def copy_docs_screenshot(shot: Path) -> None:
    """Refresh the README's screenshot when it is missing or SDC_UPDATE_SCREENSHOTS=1 (runs leave it alone)."""
    if not DOCS_SCREENSHOT.exists() or os.environ.get("SDC_UPDATE_SCREENSHOTS") == "1":
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOCS_SCREENSHOT)
