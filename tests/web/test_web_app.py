"""The page's own app without a browser: config, the login proxy to Cognito, static files and headers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from emm_dev.embedded import DEMO_USERS, cognito_env, free_port
from emm_sdc.api.config import ApiSettings, api_settings
from emm_sdc.web.app import create_app


def _client(settings: ApiSettings) -> TestClient:
    root = FastAPI()
    root.mount("/emm", create_app(lambda: settings))
    return TestClient(root)


def test_config_follows_the_mount_and_the_settings() -> None:
    s = replace(api_settings(), user_pool_id="pool", client_id="client-1", allow_anonymous=True,
                endpoint="http://cognito.example")
    c = _client(s).get("/emm/config.json").json()
    assert (c["api"], c["allow_anonymous"], c["login_endpoint"], c["client_id"]) == (
        "/emm/api", True, "http://cognito.example", "client-1")
    assert {"l1ql", "l2ql", "l2a", "l3"} <= set(c["levels"]) and "hk" not in c["levels"]
    assert [i["id"] for i in c["instruments"]] == ["exi", "emu", "emr"]


def test_page_assets_and_headers() -> None:
    client = _client(api_settings())
    page = client.get("/emm/")
    assert page.status_code == 200 and "Science data search" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("app.js", "api.js", "query.js", "plot.js"):
        r = client.get(f"/emm/static/{asset}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], asset
    assert client.get("/emm/static/style.css").headers["content-type"].startswith("text/css")
    assert client.get("/emm/static/../app.py").status_code == 404


def test_login_proxy(s3_server: Any) -> None:
    cognito = cognito_env(s3_server.endpoint, pool_name="emm-web-login")
    s = replace(api_settings(), user_pool_id=cognito["EMM_COGNITO_USER_POOL_ID"],
                client_id=cognito["EMM_COGNITO_CLIENT_ID"], endpoint=cognito["EMM_COGNITO_ENDPOINT"])
    client = _client(s)
    ok = client.post("/emm/login", json={"username": "public", "password": DEMO_USERS["public"][0]})
    assert ok.status_code == 200 and ok.json()["access_token"].count(".") == 2 and ok.json()["expires_in"] > 0
    for user, password in (("public", "wrong"), ("nobody", "x")):
        r = client.post("/emm/login", json={"username": user, "password": password})
        assert (r.status_code, r.json()) == (401, {"message": "Incorrect username or password."})
    assert client.post("/emm/login", json={"username": "", "password": "x"}).status_code == 422
    down = _client(replace(s, endpoint=f"http://127.0.0.1:{free_port()}"))
    r = down.post("/emm/login", json={"username": "public", "password": "x"})
    assert r.status_code == 502 and "did not answer" in r.json()["message"]
    r = _client(replace(s, user_pool_id="")).post("/emm/login", json={"username": "a", "password": "b"})
    assert r.status_code == 503
