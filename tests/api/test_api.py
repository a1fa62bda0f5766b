"""Every filter, who sees what, every 401/404/400/504 path, hostile input, ITF uploads and logs."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from emm_sdc.api.config import api_settings
from tests.api.conftest import PRODUCTS, Api, login

SUPERSEDED = {"emm_emr_l2_20210315t044030_0024_r_v00-01.fits", "emm_emr_l1_20210226t000000_0013_r_v01-00.fits"}
TEAM_LATEST = {n for n, _, _ in PRODUCTS if n not in SUPERSEDED}
RELEASED = {n for n, _, released in PRODUCTS if released}
#: what the public sees with latest=true: the newest *released* version of each product
PUBLIC_LATEST = (RELEASED & TEAM_LATEST) | {"emm_emr_l1_20210226t000000_0013_r_v01-00.fits"}


def names(api: Api, query: str, user: str = "team") -> set[str]:
    r = api.get("/science-files-metadata?" + query, api.tokens[user])
    assert r.status_code == 200, r.text
    return {x["file_name"] for x in r.json()}


@pytest.mark.parametrize(("query", "expected"), [
    ("instrument_id=exi", {"emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz",
                           "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz"}),
    ("instrument_id=exi,emu&data_level=l2a", {"emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz",
                                               "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz",
                                               "emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz"}),
    ("data_level=l0", {"emm_emu_l0_20210801t000000_0090_os2_n_v01-00.bin"}),
    ("mode=xos5", {"emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz",
                   "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz"}),
    ("mode=os4,os2&data_level=l2b,l2a", {"emm_emu_l2b_20210712t004428_0078_os4_9997_r_v01-06.fits.gz",
                                         "emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz"}),
    ("pred_rec=p", {"emm_emr_l2_20210316t120000_0024_p_v00-01.fits"}),
    ("pred_rec=f,n", {"emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz",
                      "emm_emu_l0_20210801t000000_0090_os2_n_v01-00.bin"}),
    ("orbit_num=13", {"emm_emr_l1_20210224t095920_0013_r_v01-00.fits",
                      "emm_emr_l1_20210225t005800_0013_r_v01-00.fits",
                      "emm_emr_l1_20210226t000000_0013_r_v01-01.fits"}),
    ("orbit_num=24&latest=false", {"emm_emr_l2_20210315t044030_0024_r_v00-01.fits",
                                   "emm_emr_l2_20210315t044030_0024_r_v00-02.fits",
                                   "emm_emr_l2_20210316t120000_0024_p_v00-01.fits"}),
    # end_date is exclusive: the 25th's file at 00:58 is in, the 26th's none
    ("start_date=2021-02-24&end_date=2021-02-26", {"emm_emr_l1_20210224t095920_0013_r_v01-00.fits",
                                                   "emm_emr_l1_20210225t005800_0013_r_v01-00.fits"}),
    ("start_date=2021-02-24&end_date=2021-02-25", {"emm_emr_l1_20210224t095920_0013_r_v01-00.fits"}),
    ("start_sc_lst=11:00:00&end_sc_lst=15:00:00", {"emm_emr_l1_20210224t095920_0013_r_v01-00.fits",
                                                   "emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz",
                                                   "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz"}),
    # a range that wraps past midnight
    ("start_sc_lst=23:00:00&end_sc_lst=02:00:00", {"emm_emr_l2_20210316t120000_0024_p_v00-01.fits",
                                                   "emm_emr_l1_20210225t005800_0013_r_v01-00.fits"}),
    ("start_mars_ls=130&end_mars_ls=250", {"emm_emu_l2b_20210712t004428_0078_os4_9997_r_v01-06.fits.gz",
                                           "emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz"}),
    ("start_sc_lat=-45&end_sc_lat=-30", {"emm_emr_l2_20210316t120000_0024_p_v00-01.fits"}),
    ("start_sc_lon=340&end_sc_lon=360", {"emm_emr_l2_20210316t120000_0024_p_v00-01.fits"}),
    ("start_sc_alt=22000&end_sc_alt=35000&data_level=l1", {"emm_emr_l1_20210224t095920_0013_r_v01-00.fits",
                                                           "emm_emr_l1_20210225t005800_0013_r_v01-00.fits"}),
    ("start_subsolar_lat=20&end_subsolar_lat=30", {"emm_emu_l2b_20210712t004428_0078_os4_9997_r_v01-06.fits.gz",
                                                   "emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz"}),
    ("start_subsolar_lon=250&end_subsolar_lon=310", {"emm_emr_l2_20210315t044030_0024_r_v00-02.fits"}),
    ("", TEAM_LATEST),
])
def test_every_filter(api: Api, query: str, expected: set[str]) -> None:
    assert names(api, query) == expected


def test_results_are_newest_first(api: Api) -> None:
    records = api.get("/science-files-metadata?latest=false", api.tokens["team"]).json()
    stamps = [r["timetag"] for r in records]
    assert stamps == sorted(stamps, reverse=True) and len(records) == len(PRODUCTS)


# --- who sees what ---------------------------------------------------------------------------------------


def test_team_public_and_itf_visibility(api: Api) -> None:
    assert names(api, "") == TEAM_LATEST
    assert names(api, "", "public") == PUBLIC_LATEST
    emus_unreleased = {n for n, _, r in PRODUCTS if n.startswith("emm_emu_") and not r}
    assert names(api, "", "emus-itf") == PUBLIC_LATEST | emus_unreleased
    # the remade version is the team's latest, not yet the public's
    assert names(api, "start_date=2021-02-26&end_date=2021-02-27") == {"emm_emr_l1_20210226t000000_0013_r_v01-01.fits"}
    assert names(api, "start_date=2021-02-26&end_date=2021-02-27", "public") == {
        "emm_emr_l1_20210226t000000_0013_r_v01-00.fits"}


def test_a_file_one_may_not_see_is_404_not_403(api: Api) -> None:
    hidden = "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz"
    r = api.get("/science-files-download?file_name=" + hidden, api.tokens["public"])
    assert r.status_code == 404 and hidden in r.json()["message"]
    missing = api.get("/science-files-download?file_name=emm_exi_l2a_20990101T000000_0001_xos1_f437_r_v01-00.fits",
                      api.tokens["public"])
    assert missing.status_code == 404 and missing.json()["message"].startswith("no file named")
    assert api.get("/science-files-download?file_name=" + hidden, api.tokens["team"]).status_code == 200


def test_anonymous_only_when_allowed(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    r = api.get("/science-files-metadata")
    assert r.status_code == 401 and r.json()["message"].startswith("Unauthorized")
    monkeypatch.setenv("EMM_API_ALLOW_ANONYMOUS", "true")
    api_settings.cache_clear()
    try:
        r = api.get("/science-files-metadata")
        assert r.status_code == 200 and {x["file_name"] for x in r.json()} == PUBLIC_LATEST
    finally:
        monkeypatch.delenv("EMM_API_ALLOW_ANONYMOUS")
        api_settings.cache_clear()


# --- 401 ---------------------------------------------------------------------------------------------------


def _moto_private_key() -> dict[str, Any]:
    import moto.cognitoidp

    path = Path(moto.cognitoidp.__file__).parent / "resources" / "jwks-private.json.gz"
    return json.loads(gzip.decompress(path.read_bytes()))


def _forge(api: Api, **changes: Any) -> str:
    """A token signed with the pool's real key (moto's), with chosen claims."""
    claims = jwt.decode(api.tokens["team"], options={"verify_signature": False})
    claims.update(changes)
    key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(_moto_private_key()))
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "dummy"})  # type: ignore[arg-type]


def _own_key_token(api: Api) -> str:
    from cryptography.hazmat.primitives.asymmetric import rsa

    claims = jwt.decode(api.tokens["team"], options={"verify_signature": False})
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "dummy"})


@pytest.mark.parametrize(("case", "phrase"), [
    ("no token", "log in first"),
    ("garbage", "not valid"),
    ("bad signature", "not valid"),
    ("expired", "expired"),
    ("wrong client", "another app client"),
    ("id token", "access token is needed"),
    ("other issuer", "not valid"),
])
def test_every_401(api: Api, case: str, phrase: str) -> None:
    now = int(time.time())
    token = {
        "no token": None,
        "garbage": "not-a-jwt",
        "bad signature": _own_key_token(api),
        "expired": _forge(api, iat=now - 7200, exp=now - 3600),
        "wrong client": _forge(api, client_id="someone-else"),
        "id token": _forge(api, token_use="id"),
        "other issuer": _forge(api, iss="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_other"),
    }[case]
    for path in ("/science-files-metadata", "/science-files-download?file_name=x.fits", "/upload?file_name=x"):
        r = api.get(path, token)
        assert r.status_code == 401, (path, r.text)
        assert phrase in r.json()["message"]


def test_a_real_id_token_is_refused(api: Api) -> None:
    id_token = login(api.cognito, "team", "Team-pass-2021").json()["AuthenticationResult"]["IdToken"]
    r = api.get("/science-files-metadata", id_token)
    assert r.status_code == 401


# --- 400 and hostile input --------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "phrase"), [
    ("instrument=exi", "unknown parameter instrument; valid parameters: instrument_id"),
    ("instrument_id=hope", "instrument_id: hope not among exi, emu, emr"),
    ("latest=yes", "latest: expected the string true or false"),
    ("orbit_num=eleven", "orbit_num: expected an orbit number"),
    ("start_date=2021-13-01", "start_date: expected a date YYYY-MM-DD"),
    ("end_date=24/02/2021", "end_date: expected a date YYYY-MM-DD"),
    ("start_sc_lst=25:00:00&end_sc_lst=01:00:00", "start_sc_lst: expected a local solar time HH:MM:SS"),
    ("start_sc_lst=01:00:00", "give both"),
    ("start_mars_ls=abc", "start_mars_ls: expected a number"),
    ("start_sc_lon=-10", "start_sc_lon: expected a number from 0 to 360"),
    ("end_sc_lat=nan", "end_sc_lat: expected a number from -90 to 90"),
    ("pred_rec=x", "pred_rec: x not among n, p, r, f"),
    ("data_level=L1;DROP", "data_level"),
])
def test_every_400_names_the_parameter(api: Api, query: str, phrase: str) -> None:
    r = api.get("/science-files-metadata?" + query, api.tokens["team"])
    assert r.status_code == 400 and phrase in r.json()["message"], r.text


INJECTIONS = ["' OR '1'='1", "exi'); DROP TABLE science_files; --", "../../etc/passwd", "%00", "1 OR 1=1",
              "emr\u0000", "..%2f..%2fsecret"]


@pytest.mark.parametrize("param", ["instrument_id", "data_level", "mode", "pred_rec", "orbit_num", "latest",
                                   "start_date", "end_date", "start_mars_ls", "end_sc_alt", "file_name"])
def test_injection_and_traversal_never_reach_sql_or_paths(api: Api, param: str) -> None:
    endpoint = "/science-files-download?" if param == "file_name" else "/science-files-metadata?"
    for evil in INJECTIONS:
        r = api.get(endpoint + param + "=" + requests.utils.quote(evil, safe=""), api.tokens["team"])
        assert r.status_code in (400, 404), (param, evil, r.status_code, r.text)
        assert set(r.json()) == {"message"}
    assert names(api, "") == TEAM_LATEST  # the catalog is intact


def test_too_many_records_is_504_with_advice(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMM_API_MAX_RECORDS", "3")
    api_settings.cache_clear()
    try:
        for path in ("/science-files-metadata?latest=false", "/science-files-download?latest=false"):
            r = api.get(path, api.tokens["team"])
            assert r.status_code == 504 and "start_date/end_date" in r.json()["message"]
        assert api.get("/science-files-metadata?instrument_id=exi", api.tokens["team"]).status_code == 200
    finally:
        monkeypatch.delenv("EMM_API_MAX_RECORDS")
        api_settings.cache_clear()


def test_errors_are_json_with_a_request_id(api: Api) -> None:
    r = api.get("/no-such-route", api.tokens["team"])
    assert r.status_code == 404 and set(r.json()) == {"message"} and r.headers["x-request-id"]
    r = requests.get(api.url + "/science-files-metadata", headers={"X-Request-ID": "abc-123"}, timeout=10)
    assert r.headers["x-request-id"] == "abc-123"


# --- ITF uploads and processing logs --------------------------------------------------------------------


def test_itf_uploads_l3_through_the_normal_ingest(api: Api) -> None:
    from emm_sdc.core.archiving import Archiver, RunContext
    from emm_sdc.core.config import load_instrument
    from emm_sdc.core.storage import Storage
    from tests.faults.conftest import ingest

    name = "emm_emu_l3_20210801t000000_0090_os2_r_v01-00.fits"
    body = b"SIMPLE  =                    T / an EMUS L3 product" + b" " * 2800
    token = api.tokens["emus-itf"]
    put = api.get("/upload?file_name=" + name, token)
    assert put.status_code == 200, put.text
    assert requests.put(put.text, data=body, timeout=30).status_code == 200
    import hashlib

    side = api.get("/upload?file_name=" + name + ".md5", token)
    sidecar = f"{hashlib.md5(body).hexdigest()}  {name}\n".encode()
    assert requests.put(side.text, data=sidecar, timeout=30).status_code == 200
    archiver = Archiver(Storage(api.client), api.cat, load_instrument("emu"), inbox_bucket=api.buckets["inbox"],
                        archive_bucket=api.buckets["archive"], ctx=RunContext("emm_emu_ingest", "upload"))
    [outcome] = ingest(archiver, "inbox/emu/")
    assert outcome.outcome == "archived" and outcome.archive_key.startswith("emm/data/emu/l3/os2/2021/08/")
    assert name in names(api, "data_level=l3", "emus-itf")
    again = api.get("/upload?file_name=" + name, token)
    assert again.status_code == 409


@pytest.mark.parametrize(("user", "name", "status", "phrase"), [
    ("public", "emm_emu_l3_20210801t000000_0090_os2_r_v01-01.fits", 403, "itf-emu"),
    ("emus-itf", "emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-09.fits", 403, "itf-exi"),
    ("emus-itf", "emm_emu_l2a_20210801t000000_0090_os2_r_v01-00.fits", 400, "ITFs upload levels l3"),
    ("emus-itf", "emm_emu_l3_2021_bad.fits", 400, "file_name"),
    ("emus-itf", "../../inbox/exi/x.bin", 400, "file_name"),
])
def test_upload_refusals(api: Api, user: str, name: str, status: int, phrase: str) -> None:
    r = api.get("/upload?file_name=" + name, api.tokens[user])
    assert r.status_code == status and phrase in r.json()["message"], r.text


def test_processing_logs_for_itf_and_team_only(api: Api) -> None:
    from datetime import UTC, datetime

    run_id = api.cat.start_run(
        dag_id="emm_emu_process", dag_run_id="r", task_id="t", map_index=0, try_number=1, instrument_id="emu",
        data_level="l1", work_unit="orbit-0090", runner="local", processor_name="p", processor_version="1",
        image=None, environment="production", meta_kernel=None, reason=None, started_at=datetime.now(UTC))
    key = "emm/logs/emu/l1/2021/08/job.log"
    api.client.put_object(Bucket=api.buckets["archive"], Key=key, Body=b"processor says hello\n")
    api.cat.finish_run(run_id, status="failed", ended_at=datetime.now(UTC), exit_status=1, message="boom",
                       log_uri=f"s3://{api.buckets['archive']}/{key}")
    mine = api.get("/processing-logs", api.tokens["emus-itf"])
    assert mine.status_code == 200
    [run] = [r for r in mine.json() if r["id"] == run_id]
    assert requests.get(run["log_url"], timeout=10).content == b"processor says hello\n"
    assert api.get("/processing-logs?instrument_id=exi", api.tokens["emus-itf"]).status_code == 404
    assert api.get("/processing-logs", api.tokens["public"]).status_code == 404
    assert any(r["id"] == run_id for r in api.get("/processing-logs", api.tokens["team"]).json())
