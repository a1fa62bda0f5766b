"""What the web page shows around a file: versions, lineage, the processing run, quicklooks."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from emm_sdc.core import naming
from emm_sdc.core.catalog import file_record
from tests.api.conftest import Api

L0 = "emm_emu_l0_20210801t000000_0090_os2_n_v01-00.bin"
L1 = "emm_emu_l1_20210801t000000_0090_os2_n_v01-00.fits"


@pytest.fixture(scope="module")
def made(api: Api) -> dict[str, Any]:
    """An L1 product made from the EMUS L0 by a processing run, with lineage (as collect indexes it)."""
    run_id = api.cat.start_run(
        dag_id="emm_emu_process", dag_run_id="manual__1", task_id="unit.l1.prepare", map_index=0, try_number=1,
        instrument_id="emu", data_level="l1", work_unit="orbit-0090", runner="docker", processor_name="emm-emu-ref",
        processor_version="1.0.0", image="localhost/emm-emu-ref:1.0.0", environment="production",
        meta_kernel="emm_meta_v0002.tm", reason="test", started_at=datetime.now(UTC))
    body = b"an EMUS l1 product\n" * 100
    md5 = hashlib.md5(body).hexdigest()
    record = file_record(naming.parse(L1), size=len(body), md5=md5, bucket=api.buckets["archive"])
    api.client.put_object(Bucket=api.buckets["archive"], Key=record["s3_key"], Body=body, Metadata={"md5": md5})
    api.cat.index_products(run_id, [(record, [L0])], ended_at=datetime.now(UTC), log_uri=None)
    return {"run_id": run_id}


def test_details_of_a_product(api: Api, made: dict[str, Any]) -> None:
    r = api.get("/science-file-details?file_name=" + L1, api.tokens["team"])
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["record"]["file_name"] == L1 and len(d["record"]) == 25
    assert d["inputs"] == [L0] and d["outputs"] == []
    assert d["versions"] == [{"file_name": L1, "version": 1, "revision": 0, "absolute_version": 100,
                              "pred_rec": "n", "released": False, "latest": True}]
    run = d["processing_run"]
    assert (run["id"], run["image"], run["meta_kernel"], run["kernel_class"], run["status"]) == (
        made["run_id"], "localhost/emm-emu-ref:1.0.0", "emm_meta_v0002.tm", "n", "success")
    l0 = api.get("/science-file-details?file_name=" + L0, api.tokens["team"]).json()
    assert l0["outputs"] == [L1] and l0["processing_run"] is None


def test_versions_mark_the_latest_and_follow_visibility(api: Api) -> None:
    name = "emm_emr_l1_20210226t000000_0013_r_v01-00.fits"
    team = api.get("/science-file-details?file_name=" + name, api.tokens["team"]).json()
    assert [(v["file_name"][-11:], v["latest"]) for v in team["versions"]] == [
        ("v01-01.fits", True), ("v01-00.fits", False)]
    public = api.get("/science-file-details?file_name=" + name, api.tokens["public"]).json()
    assert [(v["file_name"][-11:], v["latest"]) for v in public["versions"]] == [("v01-00.fits", True)]


def test_details_of_a_hidden_file_is_404(api: Api, made: dict[str, Any]) -> None:
    r = api.get("/science-file-details?file_name=" + L1, api.tokens["public"])
    assert r.status_code == 404
    assert api.get("/science-file-details?file_name=" + L1 + "&orbit_num=1", api.tokens["team"]).status_code == 400


def test_quicklook_urls_for_thumbnails(api: Api) -> None:
    from io import BytesIO

    from PIL import Image

    ql = "emm_emu_l2a_20210801t000000_0090_os2_sw1of3_f_v02-00.fits.gz"
    png_name = "emm_exi_l1ql_20210301T064846_0014_xos5_f437_n_v03-02.png"
    buf = BytesIO()
    Image.new("L", (8, 8), 128).save(buf, format="PNG")
    body = buf.getvalue()
    md5 = hashlib.md5(body).hexdigest()
    record = file_record(naming.parse(png_name), size=len(body), md5=md5, bucket=api.buckets["archive"])
    api.client.put_object(Bucket=api.buckets["archive"], Key=record["s3_key"], Body=body, Metadata={"md5": md5})
    api.cat.archive_delivery(record, inbox_key="x", dag_id="t", dag_run_id="t")
    f437 = "emm_exi_l2a_20210301T064846_0014_xos5_f437_r_v03-02.fits.gz"
    f635 = "emm_exi_l2a_20210301T064846_0014_xos5_f635_r_v03-02.fits.gz"
    r = api.get(f"/quicklook-urls?file_names={f437},{f635},{ql},{png_name}", api.tokens["team"])
    assert r.status_code == 200
    urls = r.json()
    assert set(urls) == {f437, png_name}  # the f635 product has no quicklook of its filter; the PNG is its own
    assert requests.get(urls[f437], timeout=10).content == body
    assert api.get("/quicklook-urls?file_names=", api.tokens["team"]).status_code == 400
    assert api.get("/quicklook-urls?file_names=../x", api.tokens["team"]).status_code == 400
    assert api.get(f"/quicklook-urls?file_names={f437}", api.tokens["public"]).json() == {}  # quicklook unreleased
