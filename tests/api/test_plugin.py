"""The API as Airflow serves it: the plugin's app mounted by Airflow's own API server at /emm/api."""

from __future__ import annotations


def test_airflow_api_server_mounts_the_api_with_its_own_auth(airflow_db: None) -> None:
    from airflow import plugins_manager
    from airflow.api_fastapi.app import create_app
    from fastapi.testclient import TestClient

    assert plugins_manager.get_import_errors() == {}
    apps, _middlewares = plugins_manager.get_fastapi_plugins()
    assert [a["url_prefix"] for a in apps] == ["/emm/api", "/emm"]  # the API first: /emm is its prefix
    [info] = [p for p in plugins_manager.get_plugin_info() if p["name"] == "emm_sdc"]
    assert [(v["name"], v["href"]) for v in info["external_views"]] == [
        ("EMM science data search", "/emm/"), ("EMM science-files API", "/emm/api/docs")]

    client = TestClient(create_app(apps="all"))
    assert client.get("/emm/api/health").json() == {"status": "ok"}
    r = client.get("/emm/api/science-files-metadata")  # Airflow does not authenticate plugin apps; the API does
    assert r.status_code == 401 and r.json()["message"].startswith("Unauthorized")
    page = client.get("/emm/")
    assert page.status_code == 200 and "Science data search" in page.text
