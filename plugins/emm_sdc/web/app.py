"""The science data web page as a FastAPI app: mounted by Airflow's API server at ``/emm`` (the API at ``/emm/api``).

Routes:

* ``/``: the page (static/index.html); its ES modules and CSS under ``/static/``.
* ``/config.json``: where the API is, whether anonymous browsing is allowed, and the public login facts
  (Cognito endpoint and app client id, which the published clients carry too) for "copy as curl / Python".
* ``POST /login``: ``{"username", "password"}`` -> Cognito ``InitiateAuth`` (``USER_PASSWORD_AUTH``), sent
  server-side the way the published clients send it -> ``{"access_token", "expires_in"}``.

Everything the page shows comes from the API, with the API's own auth and visibility rules; this app
holds no data and no secrets. The page is served from the API's origin, so it needs no CORS.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from emm_sdc.api.config import ApiSettings, api_settings
from emm_sdc.core import naming

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
WRONG_PASSWORD = "Incorrect username or password."  # noqa: S105 (a message)
#: The page loads nothing from elsewhere but the presigned S3 URLs of quicklooks and downloads (any host).
CSP = ("default-src 'self'; img-src 'self' data: https: http:; frame-src https: http:; "
       "object-src 'none'; base-uri 'self'; frame-ancestors 'self'")


class Credentials(BaseModel):
    """A login form's fields."""

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=256)


def create_app(settings: Callable[[], ApiSettings] = api_settings, api_path: str | None = None) -> FastAPI:
    """The page app; the API is found at ``api_path`` (default: ``<this app's mount path>/api``)."""
    app = FastAPI(title="EMM science data search", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def headers(request: Request, call_next: Callable[[Request], Any]) -> Any:
        response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-cache")  # revalidate (ETag): upgrades show at once
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "same-origin"
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers["Content-Security-Policy"] = CSP
        return response

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/config.json", include_in_schema=False)
    def config(request: Request) -> dict[str, Any]:
        s = settings()
        levels = sorted({lv for lvs in naming.LEVELS.values() for lv in lvs if lv != "hk"}, key=_level_order)
        return {
            "api": api_path or request.scope.get("root_path", "").rstrip("/") + "/api",
            "allow_anonymous": s.allow_anonymous,
            "login_endpoint": s.endpoint,
            "client_id": s.client_id,
            "instruments": [{"id": i, "name": naming.INSTRUMENT_NAMES[i],
                             "levels": [lv for lv in naming.LEVELS[i] if lv != "hk"]} for i in naming.INSTRUMENTS],
            "levels": levels,
            "modes": [*naming.EXI_MODES, *naming.EMU_MODES],
        }

    # A proxy, not a direct call from the page: a browser page may not POST cross-origin to Cognito (AWS's or
    # moto's) without CORS, and the API's origin is not Cognito's. The body is the published clients' request.
    @app.post("/login", include_in_schema=False)
    def login(creds: Credentials) -> JSONResponse:
        s = settings()
        if not s.configured:
            return JSONResponse({"message": "Logging in is not set up on this server (no Cognito user pool)."},
                                status_code=503)
        try:
            r = requests.post(s.endpoint + "/", timeout=15, headers={
                "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
                "Content-Type": "application/x-amz-json-1.1",
            }, data=json.dumps({"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": s.client_id,
                                "AuthParameters": {"USERNAME": creds.username, "PASSWORD": creds.password}}))
            body = r.json() if r.content else {}
        except (requests.RequestException, ValueError) as exc:
            log.error("login: Cognito at %s did not answer: %s", s.endpoint, exc)
            return JSONResponse({"message": "The login service did not answer; try again later."}, status_code=502)
        result = body.get("AuthenticationResult") if isinstance(body, dict) else None
        if r.ok and result and result.get("AccessToken"):
            return JSONResponse({"access_token": result["AccessToken"], "expires_in": result.get("ExpiresIn", 3600)})
        if r.ok and isinstance(body, dict) and body.get("ChallengeName"):
            return JSONResponse({"message": f"This account must first answer Cognito's {body['ChallengeName']} "
                                            "challenge (e.g. set a new password) with another client."},
                                status_code=401)
        if r.status_code >= 500:
            log.error("login: Cognito answered %s: %s", r.status_code, r.text[:200])
            return JSONResponse({"message": "The login service failed; try again later."}, status_code=502)
        return JSONResponse({"message": WRONG_PASSWORD}, status_code=401)

    return app


def _level_order(level: str) -> tuple[int, str]:
    """l0 < l1 < l1ql < l2 < l2a < l2b < l2ql < l3: by number, then name."""
    return (int(level[1]) if level[1:2].isdigit() else 9, level)
