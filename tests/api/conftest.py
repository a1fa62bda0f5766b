"""A catalog of products, their archived objects, moto's Cognito and the API on a real HTTP server.

The world is shared by the module's tests: products of the three instruments
(levels, modes, orbits, versions, geometry), some released; Cognito users of
each group logged in the way the real clients do; the API served by uvicorn
on loopback (the same app Airflow's API server mounts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from emm_dev.embedded import DEMO_USERS
from emm_sdc.api.app import Backends, create_app
from emm_sdc.core import catalog, naming
from emm_sdc.core.catalog import Catalog, file_record
from tests.helpers import dissemination_world, served

#: (name, geometry (Ls, LST h, lat, lon, alt, sslat, sslon), released)
PRODUCTS = [
    ("emm_emr_l2_20210315t044030_0024_r_v00-01.fits", (17.4, 5.947, 10.0, 20.0, 16758.4, -5.0, 300.0), True),
    ("emm_emr_l2_20210315t044030_0024_r_v00-02.fits", (17.4, 5.947, 10.0, 20.0, 16758.4, -5.0, 300.0), True),
    ("emm_emr_l2_20210316t120000_0024_p_v00-01.fits", (17.9, 23.5, -40.0, 350.0, 30000.0, -5.1, 120.0), False),
    ("emm_emr_l1_20210224t095920_0013_r_v01-00.fits", (3.1, 12.0, 0.0, 180.0, 22500.0, -10.0, 10.0), True),
    ("emm_emr_l1_20210225t005800_0013_r_v01-00.fits", (3.5, 1.0, 5.0, 181.0, 34000.0, -10.0, 11.0), True),
    ("emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz", (10.0, 14.0, 20.0, 90.0, 20000.0, 0.0, 0.0),
     True),
    ("emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz", (10.0, 14.0, 20.0, 90.0, 20000.0, 0.0, 0.0),
     False),
    ("emm_emu_l2b_20210712t004428_0078_os4_9997_r_v01-06.fits.gz", (131.0, 8.0, -20.0, 45.0, 40000.0, 25.0, 200.0),
     True),
    ("emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz", (145.0, 9.0, 0.0, 0.0, 25000.0, 24.0, 100.0),
     False),
    ("emm_emu_l0_20210801t000000_0090_os2_n_v01-00.bin", (None,) * 7, False),
    # released, then remade: the public's latest is the released v01-00 until v01-01 is released
    ("emm_emr_l1_20210226t000000_0013_r_v01-00.fits", (300.0, 18.0, 60.0, 270.0, 50000.0, -20.0, 50.0), True),
    ("emm_emr_l1_20210226t000000_0013_r_v01-01.fits", (300.0, 18.0, 60.0, 270.0, 50000.0, -20.0, 50.0), False),
]


@dataclass
class Api:
    url: str
    cognito: dict[str, str]
    cat: Catalog
    client: Any
    buckets: dict[str, str]
    rows: dict[str, dict[str, Any]]
    data: dict[str, bytes]
    tokens: dict[str, str]

    def get(self, path_and_query: str, token: str | None = None, **kw: Any) -> requests.Response:
        """A GET the way the Python client sends it: the URL string as built, a raw Authorization header."""
        headers = {"Authorization": token} if token is not None else {}
        return requests.get(self.url + path_and_query, headers=headers, timeout=30, **kw)


def login(cognito: dict[str, str], user: str, password: str) -> requests.Response:
    """Cognito's InitiateAuth exactly as the published clients call it."""
    import json

    return requests.post(cognito["EMM_COGNITO_ENDPOINT"] + "/", timeout=10, headers={
        "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth",
        "Content-Type": "application/x-amz-json-1.1",
    }, data=json.dumps({"AuthFlow": "USER_PASSWORD_AUTH", "ClientId": cognito["EMM_COGNITO_CLIENT_ID"],
                        "AuthParameters": {"USERNAME": user, "PASSWORD": password}}))


def _geometry(values: tuple[Any, ...]) -> dict[str, Any]:
    keys = ("mars_ls", "spacecraft_lst", "spacecraft_lat", "spacecraft_lon", "spacecraft_alt", "subsolar_lat",
            "subsolar_lon")
    return dict(zip(keys, values, strict=True))


@pytest.fixture(scope="module")
def api(pg_server: Any, s3_server: Any) -> Iterator[Api]:
    with dissemination_world(pg_server, s3_server, "api") as w:
        cat, client, buckets, cognito = w["cat"], w["client"], w["buckets"], w["cognito"]
        rows: dict[str, dict[str, Any]] = {}
        data: dict[str, bytes] = {}
        for i, (name, geom, released) in enumerate(PRODUCTS):
            parsed = naming.parse(name)
            body = f"{name} #{i}\n".encode() * 50
            md5 = hashlib.md5(body).hexdigest()
            record = file_record(parsed, size=len(body), md5=md5, bucket=buckets["archive"], geometry=_geometry(geom))
            client.put_object(Bucket=buckets["archive"], Key=record["s3_key"], Body=body, Metadata={"md5": md5})
            cat.archive_delivery(record, inbox_key="inbox/" + name, dag_id="t", dag_run_id="t")
            if released:
                _release(w["conn"], name)
            rows[name] = cat.get_file(name)
            data[name] = body
        backends = Backends(lambda: pg_server.conninfo(w["db"]), s3_server.client)
        try:
            with served(create_app(backends)) as port:
                tokens = {u: login(cognito, u, pw).json()["AuthenticationResult"]["AccessToken"]
                          for u, (pw, _groups) in DEMO_USERS.items()}
                yield Api(f"http://127.0.0.1:{port}", cognito, cat, client, buckets, rows, data, tokens)
        finally:
            backends.close()


def _release(conn: Any, name: str) -> None:
    """Flag a file released, as the release DAG does (tests of the release itself are elsewhere)."""
    with catalog.transaction(conn) as cur:
        cur.execute("UPDATE science_files SET released = true WHERE file_name = %(n)s", {"n": name})
