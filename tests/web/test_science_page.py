"""The science data web page in a real browser: login, search, results against the catalog, details,
downloads (MD5-checked), shared URLs and history, the map, messages, keyboard and narrow screens."""

from __future__ import annotations

import hashlib
import json
import tarfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from emm_dev.embedded import DEMO_USERS
from emm_sdc.api.config import api_settings
from tests.api.conftest import login as cognito_login
from tests.web.conftest import EMR_L2, EMR_QL, EMU_L0, EMU_L1, EXI_QL, Product, Site, copy_docs_screenshot

EMR_L1 = ["emm_emr_l1_20210224t095920_0013_r_v01-00.fits", "emm_emr_l1_20210225t005800_0013_r_v01-00.fits",
          "emm_emr_l1_20210226t000000_0013_r_v01-01.fits"]
F437 = "emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz"
F635 = "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz"
SEARCH_QUERY = ("instrument_id=emr&data_level=l1,l2&start_date=2021-02-24&end_date=2021-04-01"
                "&start_sc_alt=10000&end_sc_alt=40000")


# ------------------------------------------------------------------------------------------------ helpers

def searches(page: Any) -> int:
    return int(page.evaluate("Number(document.body.dataset.searches || 0)"))


def wait_search(page: Any, after: int) -> None:
    page.wait_for_function(f"() => Number(document.body.dataset.searches || 0) > {after} "
                           "&& document.body.dataset.state === 'ready'")


def open_page(page: Any, site: Site, query: str = "") -> None:
    page.goto(site.url + (f"?{query}" if query else ""))
    wait_search(page, 0)


def log_in(page: Any, user: str, password: str | None = None) -> None:
    page.click("#login-open")
    page.fill("#login-form input[name=username]", user)
    page.fill("#login-form input[name=password]", password or DEMO_USERS[user][0])
    n = searches(page)
    page.click("#login-form button[type=submit]")
    wait_search(page, n)


def press_search(page: Any) -> None:
    n = searches(page)
    page.click("#search")
    wait_search(page, n)


def shown(page: Any) -> list[str]:
    """Every file name of the result, page by page (100 a page)."""
    if page.input_value("#per-page") != "100":
        page.select_option("#per-page", "100")
    if not page.is_disabled("#first"):
        page.click("#first")
    names: list[str] = []
    while True:
        names += page.eval_on_selector_all("#tbody tr[data-file]", "rows => rows.map(r => r.dataset.file)")
        if page.is_disabled("#next"):
            return names
        page.click("#next")


def fill_search(page: Any) -> None:
    """EMIRS L1 + L2, 24 Feb – 31 Mar 2021 (inclusive), altitude 10,000 – 40,000 km: through the form."""
    page.click("#clear")
    page.check("#f-instruments input[value=emr]")
    page.check("#f-levels input[value=l1]")
    page.check("#f-levels input[value=l2]")
    page.fill("#f-start-date", "2021-02-24")
    page.fill("#f-end-day", "2021-03-31")
    page.fill("input[name=start_sc_alt]", "10000")
    page.fill("input[name=end_sc_alt]", "40000")


def searched(p: Product) -> bool:
    """The catalog side of fill_search()."""
    n = p.parsed
    alt = p.geometry["spacecraft_alt"]
    return (n.instrument == "emr" and n.level in ("l1", "l2") and datetime(2021, 2, 24) <= n.start.replace(tzinfo=None)
            < datetime(2021, 4, 1) and alt is not None and 10000 <= alt <= 40000)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def open_detail(page: Any, name: str) -> None:
    page.click(f"#tbody tr[data-file='{name}'] button.link")
    page.wait_for_selector("#detail-body table.fields")


def token(site: Site, user: str) -> str:
    return cognito_login(site.cognito, user, DEMO_USERS[user][0]).json()["AuthenticationResult"]["AccessToken"]


# ------------------------------------------------------------------------------------------------ tests

def test_team_searches_with_the_form_and_sees_the_catalog(page: Any, site: Site) -> None:
    open_page(page, site)
    assert "Log in to search" in page.inner_text("#message")
    log_in(page, "team")
    assert "Logged in as team" in page.inner_text("#who")
    fill_search(page)
    press_search(page)
    assert page.url == f"{site.url}?{SEARCH_QUERY}"  # the API's own parameter names: the URL is the API query
    names = shown(page)
    assert set(names) == site.expected("team", searched) == {EMR_L2, *EMR_L1[:2],
                                                              "emm_emr_l2_20210316t120000_0024_p_v00-01.fits"}
    assert len(names) == len(set(names))
    assert page.inner_text("#range") == f"1 – {len(names)} of {len(names)}"
    # newest first, as the API answers, until a column is sorted
    assert names == sorted(names, key=lambda n: site.products[n].parsed.start, reverse=True)
    page.click("th button.sort:has-text('SC alt')")
    alts = [site.products[n].geometry["spacecraft_alt"] for n in shown(page)]
    assert alts == sorted(alts)
    assert page.get_attribute("th:has(button:has-text('SC alt'))", "aria-sort") == "ascending"


def test_public_sees_released_files_only(page: Any, site: Site) -> None:
    open_page(page, site, SEARCH_QUERY)
    log_in(page, "public")
    names = set(shown(page))
    assert names == site.expected("public", searched) == {EMR_L2, *EMR_L1[:2]}
    assert all(site.products[n].released for n in names)
    assert "released files" in page.inner_text("#count")
    # every EXI image of 2022 the public may see, paged 20 at a time: "1 – 20 of N"
    page.goto(f"{site.url}?instrument_id=exi&start_date=2022-01-01")
    wait_search(page, 0)
    want = site.expected("public", lambda p: p.parsed.instrument == "exi" and p.parsed.start.year == 2022)
    page.select_option("#per-page", "20")
    assert page.inner_text("#range") == f"1 – 20 of {len(want)}"
    page.click("#next")
    assert page.inner_text("#range") == f"21 – 40 of {len(want)}"
    assert set(shown(page)) == want


def test_detail_panel_versions_lineage_and_run(page: Any, site: Site, screenshots: Path) -> None:
    open_page(page, site, "instrument_id=emu&latest=false")
    log_in(page, "team")
    open_detail(page, EMU_L1)
    assert page.inner_text("#detail-heading") == EMU_L1
    assert "#file=" in page.url
    metadata = page.locator("#detail-body section:has(h3:has-text('Metadata')) table.fields tr")
    assert metadata.count() == 25
    assert site.products[EMU_L1].md5 in page.inner_text("#detail-body")
    run = page.inner_text("#detail-body section:has(h3:has-text('Processing run'))")
    assert "localhost/emm-emu-ref:1.2.0" in run and "emm_meta_v0003.tm" in run and "kernel_class" in run
    assert page.inner_text("#detail-body .versions").count("latest") == 1
    # lineage: the input opens its own detail, which links back to its output
    page.click(f"#detail-body a:has-text('{EMU_L0}')")
    page.wait_for_function(f"() => document.getElementById('detail-heading').textContent === '{EMU_L0}'")
    page.wait_for_selector(f"#detail-body section:has(h3:has-text('Used to make')) a:has-text('{EMU_L1}')")
    page.go_back()
    page.wait_for_function(f"() => document.getElementById('detail-heading').textContent === '{EMU_L1}'")
    # versions of a remade product, the latest marked; the older one opens from there
    page.goto(f"{site.url}?instrument_id=emr&data_level=l1#file={EMR_L1[2]}")
    page.wait_for_selector("#detail-body .versions")
    items = page.eval_on_selector_all("#detail-body .versions li", "lis => lis.map(li => li.textContent)")
    assert len(items) == 2 and "v01-01" in items[0] and "latest" in items[0] and "latest" not in items[1]
    # an observation with a quicklook: the image and the quicklook made from it
    page.goto(f"{site.url}?instrument_id=emr#file={EMR_L2}")
    page.wait_for_selector("#detail-body figure img")
    page.wait_for_function("() => document.querySelector('#detail-body figure img').naturalWidth > 0")
    assert EMR_QL in page.inner_text("#detail-body section:has(h3:has-text('Used to make'))")
    page.screenshot(path=screenshots / "detail-panel.png")
    page.keyboard.press("Escape")
    assert page.is_hidden("#detail") and "#file=" not in page.url


def test_thumbnails_where_a_quicklook_exists(page: Any, site: Site) -> None:
    open_page(page, site, "instrument_id=emr,exi&start_date=2021-02-01&end_date=2021-04-01&latest=false")
    log_in(page, "team")
    page.wait_for_function(f"() => (document.querySelector(\"tr[data-file='{F437}'] td.thumb img\") || {{}})"
                           ".naturalWidth > 0")
    with_thumb = set(page.eval_on_selector_all("#tbody tr:has(td.thumb img)", "rows => rows.map(r => r.dataset.file)"))
    assert with_thumb == {F437, EXI_QL, EMR_L2, EMR_QL, "emm_emr_l2_20210315t044030_0024_r_v00-01.fits"}
    src = page.get_attribute(f"tr[data-file='{EMR_L2}'] td.thumb img", "src")
    assert requests.get(src, timeout=10).content == site.products[EMR_QL].body  # the presigned PNG itself


def test_download_one_file_md5(page: Any, site: Site) -> None:
    open_page(page, site, "instrument_id=emr&data_level=l1")
    log_in(page, "team")
    open_detail(page, EMR_L1[0])
    with page.expect_download() as dl:
        page.click("#detail-body button:has-text('Download')")
    data = Path(dl.value.path()).read_bytes()
    assert md5(data) == site.products[EMR_L1[0]].md5 == page.inner_text(
        "#detail-body tr:has(th:text-is('md5checksum')) td")


def _archive(download: Any) -> dict[str, bytes]:
    with tarfile.open(download.path(), "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_bulk_download_of_a_selection_and_of_the_result(page: Any, site: Site) -> None:
    open_page(page, site, "instrument_id=emr&data_level=l1")
    log_in(page, "team")
    assert set(shown(page)) == set(EMR_L1)
    # two files that a filter selects exactly: one .tgz through the API's bulk download
    for name in EMR_L1[:2]:
        page.check(f"tr[data-file='{name}'] input[type=checkbox]")
    assert page.inner_text("#dl-selected") == "DOWNLOAD SELECTED FILES (2)"
    with page.expect_download(timeout=30_000) as dl:
        page.click("#dl-selected")
    members = _archive(dl.value)
    assert members == {site.products[n].key: site.products[n].body for n in EMR_L1[:2]}
    # the whole result
    with page.expect_download(timeout=30_000) as dl:
        page.click("#dl-all")
    assert {Path(k).name for k in _archive(dl.value)} == set(EMR_L1)
    # two files no filter separates from the third: downloaded one by one
    page.uncheck(f"tr[data-file='{EMR_L1[1]}'] input[type=checkbox]")
    page.check(f"tr[data-file='{EMR_L1[2]}'] input[type=checkbox]")
    got: list[Any] = []
    page.on("download", lambda d: got.append(d))
    page.click("#dl-selected")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Started 2 downloads')")
    page.wait_for_timeout(500)
    assert sorted(md5(Path(d.path()).read_bytes()) for d in got) == sorted(
        site.products[n].md5 for n in (EMR_L1[0], EMR_L1[2]))


def test_shared_url_reload_and_history(page_factory: Any, site: Site) -> None:
    page = page_factory()
    open_page(page, site, "instrument_id=emr")
    log_in(page, "team")
    first = shown(page)
    page.click("#clear")
    page.check("#f-instruments input[value=exi]")
    page.click("summary:has-text('More filters')")
    page.fill("input[name=orbit_num]", "14")
    page.uncheck("#f-latest")
    press_search(page)
    second_url = page.url
    assert second_url.endswith("?instrument_id=exi&orbit_num=14&latest=false")
    second = shown(page)
    assert set(second) == {F437, F635, EXI_QL}
    page.reload()
    wait_search(page, 0)
    assert shown(page) == second and page.is_checked("#f-instruments input[value=exi]")
    assert not page.is_checked("#f-latest") and page.input_value("input[name=orbit_num]") == "14"
    n = searches(page)
    page.go_back()
    wait_search(page, n)
    assert shown(page) == first and page.is_checked("#f-instruments input[value=emr]")
    assert not page.is_checked("#f-instruments input[value=exi]") and page.is_checked("#f-latest")
    n = searches(page)
    page.go_forward()
    wait_search(page, n)
    assert shown(page) == second
    # the same URL shared with a colleague: after their login, the same results
    other = page_factory()
    other.goto(second_url)
    wait_search(other, 0)
    log_in(other, "team")
    assert shown(other) == second


def test_wrong_password_message(page: Any, site: Site) -> None:
    open_page(page, site)
    page.click("#login-open")
    page.fill("#login-form input[name=username]", "team")
    page.fill("#login-form input[name=password]", "not-the-password")
    page.click("#login-form button[type=submit]")
    page.wait_for_function("() => document.getElementById('login-error').textContent !== ''")
    assert page.inner_text("#login-error") == "Incorrect username or password."
    assert page.is_visible("#login") and page.evaluate("sessionStorage.getItem('emm.session')") is None
    r = requests.post(site.url + "login", json={"username": "nobody", "password": "x"}, timeout=10)
    assert (r.status_code, r.json()) == (401, {"message": "Incorrect username or password."})
    r = requests.post(site.url + "login", json={"username": "team", "password": DEMO_USERS["team"][0]}, timeout=10)
    assert r.status_code == 200 and r.json()["expires_in"] > 0
    assert requests.get(site.api + "/science-files-metadata?instrument_id=emr", timeout=10,
                        headers={"Authorization": r.json()["access_token"]}).status_code == 200


@pytest.mark.parametrize("expires_in_s", [3600, -5], ids=["rejected-by-the-api", "past-its-expiry"])
def test_expired_session_message(page: Any, site: Site, expires_in_s: int) -> None:
    open_page(page, site)
    log_in(page, "team")
    assert shown(page)
    page.evaluate("""s => { const v = JSON.parse(sessionStorage.getItem('emm.session'));
        if (s > 0) v.token = 'eyJhbGciOiJSUzI1NiJ9.e30.garbage';
        v.expires_at = Date.now() + s * 1000; sessionStorage.setItem('emm.session', JSON.stringify(v)); }""",
                  expires_in_s)
    press_search(page)
    assert page.inner_text("#message").startswith("Your session has expired, log in again.")
    assert page.locator("#tbody tr[data-file]").count() == 0
    assert page.is_visible("#login-open") and "Not logged in" in page.inner_text("#who")
    page.click("#message button:has-text('Log in')")
    page.fill("#login-form input[name=username]", "team")
    page.fill("#login-form input[name=password]", DEMO_USERS["team"][0])
    n = searches(page)
    page.click("#login-form button[type=submit]")
    wait_search(page, n)
    assert page.is_hidden("#message") and shown(page)


def test_logout_and_anonymous_browsing(page_factory: Any, site: Site) -> None:
    page = page_factory()
    open_page(page, site, "instrument_id=emr")
    log_in(page, "team")
    page.click("#logout")
    assert page.locator("#tbody tr[data-file]").count() == 0 and "Not logged in" in page.inner_text("#who")
    assert page.evaluate("sessionStorage.getItem('emm.session')") is None
    mp = pytest.MonkeyPatch()
    mp.setenv("EMM_API_ALLOW_ANONYMOUS", "true")
    api_settings.cache_clear()
    try:
        guest = page_factory()
        open_page(guest, site, "instrument_id=emr")
        assert "Guest: released files only" in guest.inner_text("#who")
        assert set(shown(guest)) == site.expected("public", lambda p: p.parsed.instrument == "emr")
    finally:
        mp.undo()
        api_settings.cache_clear()


def test_map_click_selects_and_opens_the_file(page: Any, site: Site, screenshots: Path) -> None:
    open_page(page, site, "start_date=2021-01-01&end_date=2022-01-01")
    log_in(page, "team")
    target = "emm_emr_l2_20210316t120000_0024_p_v00-01.fits"  # lat -40, lon 350: alone down there
    geom = site.products[target].geometry
    width = page.evaluate("document.getElementById('map').clientWidth")
    pw = width - 42
    x, y = 34 + geom["spacecraft_lon"] / 360 * pw, 8 + (90 - geom["spacecraft_lat"]) / 180 * round(pw / 2)
    page.click("#map", position={"x": x, "y": y})
    page.wait_for_function(f"() => document.getElementById('detail-heading').textContent === '{target}'")
    assert page.is_checked(f"tr[data-file='{target}'] input[type=checkbox]")
    page.keyboard.press("Escape")
    page.locator("section.map").screenshot(path=screenshots / "map.png")
    # keyboard: arrows move between points, Enter opens one
    page.focus("#map")
    page.keyboard.press("ArrowRight")
    first = page.inner_text("#map-focus").split(":")[0]
    page.keyboard.press("Enter")
    page.wait_for_function(f"() => document.getElementById('detail-heading').textContent === '{first}'")


def test_copy_as_python_runs_the_same_search(page: Any, site: Site, tmp_path: Path, monkeypatch: Any) -> None:
    open_page(page, site, SEARCH_QUERY)
    log_in(page, "team")
    page.click("#code-open")
    curl = page.inner_text("#code-text")
    assert f"API={site.api}\n" in curl
    assert f'curl -s -H "Authorization: $TOKEN" "$API/science-files-metadata?{SEARCH_QUERY}"' in curl
    page.click("#tab-python")
    code = page.inner_text("#code-text").replace("YOUR_USERNAME", "team").replace("YOUR_PASSWORD",
                                                                                   DEMO_USERS["team"][0])
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(compile(code, "copied-python", "exec"), scope)  # noqa: S102 (the page's own snippet, run as a user would)
    assert [f["file_name"] for f in scope["files"]] == shown(page)
    with tarfile.open(tmp_path / "emm_files.tgz") as tar:
        assert {Path(m).name for m in tar.getnames()} == set(shown(page))


def test_keyboard_labels_and_narrow_screen(page_factory: Any, site: Site, screenshots: Path) -> None:
    page = page_factory(400, 800)
    open_page(page, site, "instrument_id=emr")
    unlabeled = page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(el => el.type !== 'hidden' && !el.labels?.length && !el.getAttribute('aria-label'))
        .map(el => el.name || el.id)""")
    assert unlabeled == []
    log_in(page, "team")
    assert page.evaluate("document.documentElement.scrollWidth") <= 400  # no sideways scrolling of the page
    assert page.is_visible("#filters-toggle")
    page.screenshot(path=screenshots / "narrow.png", full_page=True)
    # keyboard: a file name opens its detail (focus moves there); Escape closes it and focus comes back
    button = f"tr[data-file='{EMR_L1[0]}'] button.link"
    page.focus(button)
    page.keyboard.press("Enter")
    page.wait_for_selector("#detail-body table.fields")
    assert page.evaluate("document.activeElement.id") == "detail-heading"
    assert page.evaluate("document.getElementById('detail').getBoundingClientRect().width") <= 400
    page.keyboard.press("Escape")
    assert page.evaluate("document.activeElement.textContent") == EMR_L1[0]
    # sorting from the keyboard
    page.focus("th button.sort:has-text('Ls')")
    page.keyboard.press("Enter")
    assert page.get_attribute("th:has(button:has-text('Ls'))", "aria-sort") == "ascending"


def test_whole_catalog_renders_and_its_timings_are_reported(page: Any, site: Site, screenshots: Path) -> None:
    """The whole catalog (about 600 files) after a reload and after a search; the timings are printed in the run's
    summary, not asserted (speed is measured, never asserted, in this project's tests)."""
    open_page(page, site)
    log_in(page, "team")
    total = len(site.expected("team", lambda p: True))
    assert page.inner_text("#range") == f"1 – 20 of {total}"
    page.reload()
    wait_search(page, 0)
    first = page.evaluate("performance.getEntriesByName('emm:first-results')[0].startTime")
    press_search(page)
    search = float(page.get_attribute("body", "data-search-ms"))
    page.wait_for_function("() => [...document.querySelectorAll('td.thumb img')].length === 0 || "
                           "[...document.querySelectorAll('td.thumb img')].every(i => i.complete)")
    print(f"\nweb page timings: first render {first:.0f} ms, search of {total} files {search:.0f} ms")
    (screenshots / "timings.json").write_text(json.dumps({"first_render_ms": first, "search_ms": search,
                                                          "files": total}))
    assert first > 0 and search > 0
    # the README's screenshot: a search with thumbnails
    page.goto(f"{site.url}?instrument_id=emr,exi&start_date=2021-02-01&end_date=2021-04-01&latest=false")
    wait_search(page, 0)
    page.wait_for_function("() => [...document.querySelectorAll('td.thumb img')].length > 0 && "
                           "[...document.querySelectorAll('td.thumb img')].every(i => i.complete)")
    for name in (EMR_L2, F437):
        page.check(f"tr[data-file='{name}'] input[type=checkbox]")
    page.mouse.move(0, 0)
    page.screenshot(path=screenshots / "search-page.png")
    copy_docs_screenshot(screenshots / "search-page.png")
