"""The API driven exactly the way the published EMM clients drive it (emm_api.py, the MATLAB port).

Login through Cognito's InitiateAuth, the access token sent raw (no ``Bearer``),
query strings built by concatenation (raw ``:`` and ``,``; MATLAB's ``?&``), the
download URL read as text and fetched with no auth header, the bulk ``.tgz``.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from datetime import UTC
from typing import Any

import requests

from emm_sdc.api.records import FIELDS
from tests.api.conftest import Api, login


def query_string(**kw: Any) -> str:
    """emm_api.py's query building: ``kw + "=" + str(value)`` joined with '&', then ``latest=``."""
    latest = kw.pop("latest", "true")
    parts = [k + "=" + str(v) for k, v in kw.items()]
    return "&".join([*parts, "latest=" + latest])


def test_python_client_workflow(api: Api) -> None:
    token = login(api.cognito, "team", "Team-pass-2021").json()["AuthenticationResult"]["AccessToken"]
    r = api.get("/science-files-metadata?" + query_string(instrument_id="emr", data_level="l1,l2",
                                                          start_date="2021-02-24", end_date="2021-03-17"), token)
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"]
    records = r.json()
    assert isinstance(records, list)
    names = [x["file_name"] for x in records]
    # latest=true: v00-02 replaces v00-01; newest timetag first
    assert names == ["emm_emr_l2_20210316t120000_0024_p_v00-01.fits", "emm_emr_l2_20210315t044030_0024_r_v00-02.fits",
                     "emm_emr_l1_20210226t000000_0013_r_v01-01.fits", "emm_emr_l1_20210225t005800_0013_r_v01-00.fits",
                     "emm_emr_l1_20210224t095920_0013_r_v01-00.fits"]
    rec = records[1]
    assert tuple(rec) == FIELDS and len(FIELDS) == 25
    row = api.rows[rec["file_name"]]
    assert rec == {
        "id": row["id"], "file_name": row["file_name"],
        "directory_path": f"s3://{api.buckets['archive']}/emm/data/emr/l2/2021/03",
        "file_size": row["file_size"], "mod_date": str(row["mod_date"].astimezone(UTC)),
        "instrument_id": "emr", "data_level": "l2", "timetag": "2021-03-15 04:40:30+00:00", "descriptor": "",
        "mode": "", "orbit_number": 24, "pred_rec": "r", "version": 0, "revision": 2,
        "file_root": "emm_emr_l2_20210315t044030_0024_r.fits", "absolute_version": 2,
        "md5checksum": row["md5checksum"], "released": True, "mars_ls": 17.4, "spacecraft_lst": "05:56:49",
        "subsolar_lat": -5.0, "subsolar_lon": 300.0, "spacecraft_lat": 10.0, "spacecraft_lon": 20.0,
        "spacecraft_alt": 16758.4,
    }
    types = {"id": int, "file_size": int, "orbit_number": int, "version": int, "revision": int,
             "absolute_version": int, "released": bool, "mars_ls": float, "spacecraft_alt": float}
    for rec in records:
        for key, typ in types.items():
            assert type(rec[key]) is typ, (key, rec[key])
        assert isinstance(rec["timetag"], str) and rec["timetag"].endswith("+00:00")

    # single download: the body is the bare URL; the client fetches it without any header
    d = api.get("/science-files-download?file_name=" + rec["file_name"], token)
    assert d.status_code == 200 and d.headers["content-type"].startswith("text/plain")
    assert d.text.startswith("http") and '"' not in d.text
    got = requests.get(d.content.decode("utf-8"), timeout=30)
    assert got.status_code == 200 and hashlib.md5(got.content).hexdigest() == rec["md5checksum"]

    # bulk: the same filters on the download endpoint give one .tgz in the archive layout
    b = api.get("/science-files-download?" + query_string(instrument_id="emr", data_level="l2"), token)
    assert b.status_code == 200
    tgz = requests.get(b.text, timeout=30).content
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    assert sorted(members) == sorted(api.rows[n]["s3_key"] for n in (
        "emm_emr_l2_20210316t120000_0024_p_v00-01.fits", "emm_emr_l2_20210315t044030_0024_r_v00-02.fits"))
    for key, body in members.items():
        name = key.rsplit("/", 1)[-1]
        assert key.startswith("emm/data/emr/l2/2021/03/") and body == api.data[name]


def test_matlab_client_style(api: Api) -> None:
    """MATLAB starts the query with '&' and sends numbers through num2str; raw ':' in times."""
    r = api.get("/science-files-metadata?&instrument_id=emr&data_level=l1&start_sc_alt=22000&end_sc_alt=35000"
                "&start_sc_lst=00:00:00&end_sc_lst=23:59:59&latest=true", api.tokens["team"])
    assert r.status_code == 200
    assert sorted(x["file_name"] for x in r.json()) == ["emm_emr_l1_20210224t095920_0013_r_v01-00.fits",
                                                        "emm_emr_l1_20210225t005800_0013_r_v01-00.fits"]
    d = api.get("/science-files-download?&file_name=emm_emr_l1_20210224t095920_0013_r_v01-00.fits",
                api.tokens["team"])
    assert d.status_code == 200 and requests.get(d.text, timeout=30).content == api.data[
        "emm_emr_l1_20210224t095920_0013_r_v01-00.fits"]


def test_bearer_prefix_also_accepted(api: Api) -> None:
    r = api.get("/science-files-metadata?instrument_id=exi", "Bearer " + api.tokens["team"])
    assert r.status_code == 200 and len(r.json()) == 2


def test_no_match_is_an_empty_list_and_bulk_no_match_is_404(api: Api) -> None:
    r = api.get("/science-files-metadata?orbit_num=9999", api.tokens["team"])
    assert (r.status_code, r.json()) == (200, [])
    b = api.get("/science-files-download?orbit_num=9999", api.tokens["team"])
    assert b.status_code == 404 and b.json() == {"message": "No files were found matching the search parameters."}
