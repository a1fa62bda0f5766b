"""The EMM science-files API as a FastAPI app: mounted by Airflow's API server (plugin) or run alone.

Routes (GET only, as the real clients use):

* ``/science-files-metadata``: records of the matching files (a JSON array).
* ``/science-files-download?file_name=``: a presigned URL of one file (plain text);
  with metadata filters instead: a presigned URL of one ``.tgz`` holding every match.
* ``/upload?file_name=``: for ITF members, a presigned PUT URL into their inbox
  (the file then goes through the normal ingest).
* ``/processing-logs``: processing runs and their logs, for ITF members and the team.
* ``/science-file-details?file_name=`` and ``/quicklook-urls?file_names=``: what the web page shows
  around a file (versions, lineage, processing run, quicklooks).
* ``/health``: no auth.

Airflow does not authenticate plugin apps; every route but ``/health`` does
its own auth (api/auth.py). Errors are JSON ``{"message": ...}``; every
response carries ``X-Request-ID``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from emm_sdc.api import bundles
from emm_sdc.api.auth import Principal, Unauthorized, principal_from_header
from emm_sdc.api.config import ApiSettings, api_settings
from emm_sdc.api.query import BadQuery, has_filters, parse_items
from emm_sdc.core import catalog, naming
from emm_sdc.core.catalog_ops.api import ApiQueriesMixin
from emm_sdc.core.settings import get_settings

log = logging.getLogger(__name__)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
TOO_MANY = ("Too many files found in API query ({n} or more; the limit is {limit}). Please narrow the search, "
            "for example with start_date/end_date to search a few months at a time.")


class ApiError(Exception):
    """An answer other than 200, with its JSON message."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message
        super().__init__(message)


@dataclass
class Backends(ApiQueriesMixin):
    """The catalog (a connection pool) and S3 client the API uses, made on first use."""

    conninfo: Callable[[], str]
    s3_client: Callable[[], Any]
    _pool: Any = None
    _s3: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg.rows import dict_row
                from psycopg_pool import ConnectionPool

                self._pool = ConnectionPool(self.conninfo(), min_size=1, max_size=8, open=True,
                                            kwargs={"autocommit": True, "row_factory": dict_row})
            return self._pool

    def s3(self) -> Any:
        with self._lock:
            if self._s3 is None:
                self._s3 = self.s3_client()
            return self._s3

    def query(self, name: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """A named query, sent unprepared so PostgreSQL plans it with the actual values."""
        with self.pool().connection() as conn:
            return list(conn.execute(catalog.queries()[name], dict(params or {}), prepare=False).fetchall())

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()


def airflow_backends() -> Backends:
    """Backends from the Airflow connections ``emm_catalog`` and ``emm_s3`` (secrets stay in Airflow)."""

    def conninfo() -> str:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from psycopg.conninfo import make_conninfo

        c = PostgresHook.get_connection(get_settings().catalog_conn_id)
        return make_conninfo(host=c.host or "", port=str(c.port or 5432), user=c.login or "",
                             password=c.password or "", dbname=c.schema or "")

    def s3() -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=get_settings().aws_conn_id).get_conn()

    return Backends(conninfo, s3)


def create_app(backends: Backends | None = None, settings: Callable[[], ApiSettings] = api_settings) -> FastAPI:
    """The API app; ``backends`` default to the Airflow connections (tests and ``./sdc api`` may pass others)."""
    be = backends or airflow_backends()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        be.close()

    app = FastAPI(title="EMM science-files API", version="1.0", docs_url="/docs", openapi_url="/openapi.json",
                  redoc_url=None, lifespan=lifespan)

    @app.middleware("http")
    async def request_id(request: Request, call_next: Callable[[Request], Any]) -> Response:
        rid = request.headers.get("x-request-id", "")
        rid = rid if _REQUEST_ID.match(rid) else uuid.uuid4().hex
        request.state.request_id = rid
        response: Response = await call_next(request)
        response.headers["X-Request-ID"] = rid
        return response

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"message": exc.message}, status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"message": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        rid = getattr(request.state, "request_id", "")
        log.exception("request %s failed", rid)
        return JSONResponse({"message": f"internal error (request id {rid})"}, status_code=500,
                            headers={"X-Request-ID": rid})

    def caller(request: Request) -> Principal:
        try:
            return principal_from_header(request.headers.get("authorization"), settings())
        except Unauthorized as exc:
            raise ApiError(401, f"Unauthorized: {exc}") from None

    def params_of(request: Request, *, allow_file_name: bool) -> dict[str, Any]:
        try:
            return parse_items(request.query_params.multi_items(), allow_file_name=allow_file_name)
        except BadQuery as exc:
            raise ApiError(400, str(exc)) from None

    def visibility(who: Principal) -> dict[str, Any]:
        return {"see_all": who.team, "own_instruments": list(who.itf_instruments)}

    def presign(bucket: str, key: str, save_as: str | None = None) -> str:
        """A presigned GET; ``save_as``: a browser saves the file under that name whatever its content type."""
        params = {"Bucket": bucket, "Key": key}
        if save_as:
            params["ResponseContentDisposition"] = f'attachment; filename="{save_as}"'
        return be.s3().generate_presigned_url("get_object", Params=params, ExpiresIn=settings().url_ttl_s)

    def matches(p: dict[str, Any], who: Principal) -> list[dict[str, Any]]:
        limit = settings().max_records
        rows = be.api_science_files(p, visibility(who), limit + 1)
        if len(rows) > limit:
            raise ApiError(504, TOO_MANY.format(n=limit + 1, limit=limit))
        return rows

    @app.get("/health", include_in_schema=False)
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/science-files-metadata")
    def metadata(request: Request) -> JSONResponse:
        """Records of the files matching every filter given (newest timetag first)."""
        who = caller(request)
        rows = matches(params_of(request, allow_file_name=False), who)
        # The catalog writes each record (include/sql/queries/api.sql); the API only joins them.
        return Response("[" + ",".join(r["record"] for r in rows) + "]", media_type="application/json")

    @app.get("/science-files-download")
    def download(request: Request) -> PlainTextResponse:
        """A presigned URL (plain text) of one file, or of one .tgz of every file matching the filters."""
        who = caller(request)
        p = params_of(request, allow_file_name=True)
        rows = matches(p, who)
        if not has_filters(p):
            if not rows:
                raise ApiError(404, f"no file named {p['file_names'][0]} is available to you")
            row = rows[0]
            return PlainTextResponse(presign(row["bucket"], row["s3_key"], save_as=row["file_name"]))
        if not rows:
            raise ApiError(404, "No files were found matching the search parameters.")
        bucket = get_settings().archive_bucket
        key = f"{naming.BUNDLE_ROOT}/{datetime.now(UTC):%Y/%m/%d}/{request.state.request_id}-{uuid.uuid4().hex[:8]}.tgz"
        try:
            bundles.write_bundle(be.s3(), rows, bucket, key)
        except bundles.BundleError as exc:
            log.error("bulk download %s refused: %s", request.state.request_id, exc)
            raise ApiError(500, str(exc)) from None
        return PlainTextResponse(presign(bucket, key))

    def only(request: Request, *names: str) -> dict[str, str]:
        """The query of a route that takes just ``names`` (400 naming any other)."""
        items = dict(request.query_params.multi_items())
        unknown = sorted(set(items) - {*names, ""})
        if unknown:
            raise ApiError(400, f"unknown parameter {unknown[0]!r}; valid parameters: {', '.join(names)}")
        return items

    @app.get("/science-file-details")
    def details(request: Request) -> JSONResponse:
        """One file with everything around it: its record, all versions of its root (latest marked), its
        inputs and outputs, the processing run that made it, and its quicklook (for the web page)."""
        who = caller(request)
        p = params_of(request, allow_file_name=True)
        if has_filters(p) or any(v is not None for k, v in p.items() if k not in ("file_names", "latest")):
            raise ApiError(400, "science-file-details takes one parameter: file_name")
        rows = matches(p, who)
        if not rows:
            raise ApiError(404, f"no file named {p['file_names'][0]} is available to you")
        row, vis = rows[0], visibility(who)
        record = json.loads(row["record"])
        versions = be.api_versions_of(row["file_name"], vis)
        lineage = be.api_lineage_of(record["id"], vis)
        runs = be.api_run_of(record["id"])
        quicklooks = be.api_quicklooks_of([row["file_name"]], vis)
        return JSONResponse({
            "record": record,
            "versions": [{**v, "latest": i == 0} for i, v in enumerate(versions)],
            "inputs": [r["file_name"] for r in lineage if r["direction"] == "input"],
            "outputs": [r["file_name"] for r in lineage if r["direction"] == "output"],
            "processing_run": _plain(runs[0]) if runs else None,
            "quicklooks": [{"file_name": q["quicklook"], "url": presign(q["bucket"], q["s3_key"])}
                           for q in quicklooks],
        })

    @app.get("/quicklook-urls")
    def quicklook_urls(request: Request) -> JSONResponse:
        """Presigned URLs of the PNG quicklooks of the named files' observations (thumbnails)."""
        who = caller(request)
        items = only(request, "file_names")
        wanted = [n for n in items.get("file_names", "").split(",") if n]
        if not wanted or len(wanted) > MAX_QUICKLOOK_NAMES or not all(naming.SAFE_NAME.match(n) for n in wanted):
            raise ApiError(400, f"file_names: 1 to {MAX_QUICKLOOK_NAMES} comma-separated EMM file names")
        rows = be.api_quicklooks_of(wanted, visibility(who))
        return JSONResponse({r["file_name"]: presign(r["bucket"], r["s3_key"]) for r in rows})

    @app.get("/upload")
    def upload(request: Request) -> PlainTextResponse:
        """For ``itf-<inst>`` members: a presigned PUT URL for a Level 3 product (or its .md5 sidecar)."""
        from emm_sdc.core.config_store import running_config

        who = caller(request)
        items = only(request, "file_name")
        name = items.get("file_name", "")
        base = name.removesuffix(naming.SIDECAR_SUFFIX)
        parsed, problems = naming.problems_in(base)
        if parsed is None:
            raise ApiError(400, "file_name: " + "; ".join(str(p) for p in problems))
        if parsed.instrument not in who.itf_instruments:
            raise ApiError(403, f"uploads of {naming.INSTRUMENT_NAMES[parsed.instrument]} files are for the "
                                f"group itf-{parsed.instrument}")
        if parsed.level not in UPLOAD_LEVELS or parsed.level not in naming.LEVELS[parsed.instrument]:
            raise ApiError(400, f"file_name: ITFs upload levels {', '.join(UPLOAD_LEVELS)} that their instrument "
                                f"has ({naming.INSTRUMENT_NAMES[parsed.instrument]} levels: "
                                f"{', '.join(naming.LEVELS[parsed.instrument])})")
        canonical = parsed.canonical_name + (naming.SIDECAR_SUFFIX if name.endswith(naming.SIDECAR_SUFFIX) else "")
        if be.api_file_indexed(parsed.canonical_name):
            raise ApiError(409, f"{parsed.canonical_name} is already archived; a new product needs a new "
                                "version or revision")
        cfg = running_config(parsed.instrument)
        url = be.s3().generate_presigned_url(
            "put_object", Params={"Bucket": get_settings().inbox_bucket,
                                  "Key": cfg.ingest.inbox_prefix + canonical},
            ExpiresIn=settings().url_ttl_s)
        log.info("upload URL for %s issued to %s", canonical, who.username)
        return PlainTextResponse(url)

    @app.get("/processing-logs")
    def processing_logs(request: Request) -> JSONResponse:
        """Processing runs of the caller's instruments (ITF members; the team sees all), with log URLs."""
        who = caller(request)
        allowed = who.log_instruments()
        if not allowed:
            raise ApiError(404, "no processing logs are available to you")
        items = only(request, "instrument_id", "run_id")
        wanted = [i for i in (items.get("instrument_id") or ",".join(allowed)).split(",") if i]
        if any(i not in allowed for i in wanted):
            raise ApiError(404, "no processing logs are available to you for that instrument")
        run_id = items.get("run_id") or None
        if run_id is not None and not run_id.isdigit():
            raise ApiError(400, "run_id: expected a processing run id (integer)")
        rows = be.api_processing_runs(wanted, int(run_id) if run_id else None, settings().max_records)
        out = []
        for r in rows:
            log_uri = r.pop("log_uri")
            url = presign(*log_uri.removeprefix("s3://").split("/", 1)) if log_uri else None
            out.append({**_plain(r), "log_url": url})
        return JSONResponse(out)

    return app


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A catalog row for JSON: datetimes as text."""
    return {k: str(v) if isinstance(v, datetime) else v for k, v in row.items()}


#: Levels an ITF may upload itself (its own higher-level products).
UPLOAD_LEVELS = ("l3",)
#: Most file names one thumbnail request may name (a page of results).
MAX_QUICKLOOK_NAMES = 200
