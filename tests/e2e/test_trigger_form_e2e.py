"""The Trigger forms in the real Airflow 3 UI (headless Chromium against emm_dev.airflow_local).

``emm_exi_process`` triggers with its defaults, its lists are text boxes (one value per line), ``levels``
is a multi-select, and clearing a list keeps Trigger enabled (the list becomes null); the run it starts
succeeds. ``emm_exi_reprocess`` is the required-by-design case: Trigger stays disabled until a reason is typed.
Screenshots go to the test's temp dir. The browser is Debian's ``chromium`` (never ``playwright install``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emm_dev.airflow_local import ADMIN, AirflowLocal

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def airflow(operator_sdc: dict[str, Any]) -> AirflowLocal:
    """The session's real Airflow (tests/e2e/conftest.py), every run of its seed delivery finished."""
    return operator_sdc["af"]


@pytest.fixture
def page(airflow: AirflowLocal) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1300})
        page.goto(f"{airflow.base_url}/auth/login")
        page.locator("input[name=username]").fill(ADMIN)
        page.locator("input[name=password]").fill(airflow._password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
        yield page
        browser.close()


def _expect(locator: Any) -> Any:
    from playwright.sync_api import expect

    return expect(locator)


def _open_trigger_form(page: Any, airflow: AirflowLocal, dag_id: str) -> Any:
    page.goto(f"{airflow.base_url}/dags/{dag_id}")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Run Parameters").wait_for()
    return dialog


def test_process_form_triggers_with_its_defaults(airflow: AirflowLocal, page: Any, tmp_path: Path) -> None:
    dialog = _open_trigger_form(page, airflow, "emm_exi_process")
    for name in ("files", "orbits"):  # lists edited as lists, not as a JSON editor
        assert dialog.locator(f"#element_{name}").evaluate("e => e.tagName") == "TEXTAREA"
    assert dialog.get_by_text("Select one or multiple values").count() == 1  # levels: a multi-select
    for text in ("L0 file names to process", "orbit numbers to process", "levels to make", "why this run"):
        assert dialog.get_by_text(text).count() == 1, text  # each Param's description is shown
    submit = dialog.get_by_role("button", name="Trigger")
    _expect(submit).to_be_enabled()
    orbits = dialog.locator("#element_orbits")
    orbits.fill("12")
    orbits.fill("")
    orbits.blur()  # a cleared list becomes null: it must not disable Trigger
    _expect(submit).to_be_enabled()
    dialog.screenshot(path=str(tmp_path / "emm_exi_process-trigger-form.png"))
    submit.click()
    page.get_by_text("Dag Run Triggered").first.wait_for()
    page.screenshot(path=str(tmp_path / "emm_exi_process-triggered.png"))

    [run] = [r for r in airflow.api("GET", "/dags/emm_exi_process/dagRuns")["dag_runs"] if r["run_type"] == "manual"]
    assert run["conf"] == {name: None for name in ("files", "orbits", "start_date", "end_date", "levels", "reason")}
    assert airflow.wait_for_run("emm_exi_process", run["dag_run_id"], timeout=300) == "success"
    states = {ti["task_id"]: ti["state"] for ti in airflow.task_instances("emm_exi_process", run["dag_run_id"])}
    assert states["plan_units"] == "success"  # planned "everything pending": every L0 has its products


def test_reprocess_form_requires_a_reason(airflow: AirflowLocal, page: Any, tmp_path: Path) -> None:
    dialog = _open_trigger_form(page, airflow, "emm_exi_reprocess")
    submit = dialog.get_by_role("button", name="Trigger")
    assert dialog.get_by_text("Reason (required)").count() == 1
    _expect(submit).to_be_disabled()  # required by design: no reason, no run
    dialog.locator("#element_reason").fill("flat field v2")
    _expect(submit).to_be_enabled()
    dialog.screenshot(path=str(tmp_path / "emm_exi_reprocess-trigger-form.png"))
