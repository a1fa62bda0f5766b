"""Promotion rules on a real catalog: a candidate needs a passing check against today's production."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from emm_sdc.core import images
from emm_sdc.core.catalog import Catalog

_runs = itertools.count()


def check(cat: Catalog, image: str, production: str | None, status: str) -> int:
    cid = cat.query("start_staging_check", {"instrument_id": "exi", "candidate_image": image,
                                            "production_image": production, "dag_id": "d",
                                            "dag_run_id": f"r{next(_runs)}", "reference_inputs": "[]"})[0]["id"]
    cat.query("finish_staging_check", {"check_id": cid, "status": status, "summary": "", "report_uri": None})
    return cid


def test_promotion_rules(catalog_conn: Any) -> None:
    cat = Catalog(catalog_conn)
    assert images.production_image(cat, "exi") is None
    with pytest.raises(images.ImageNotPromoted, match=r"exi\.yaml: processing\.runner\.image 'a:1' has not been"):
        images.require_promoted(cat, "exi", "a:1", "exi.yaml")
    with pytest.raises(images.PromotionRefused, match="no passing staging check"):
        images.promote(cat, "exi", "a:1", promoted_by="t", reason=None)
    check(cat, "a:1", None, "failed")
    with pytest.raises(images.PromotionRefused, match="no passing staging check"):
        images.promote(cat, "exi", "a:1", promoted_by="t", reason=None)
    first = check(cat, "a:1", None, "passed")
    record = images.promote(cat, "exi", "a:1", promoted_by="t", reason="first")
    assert (record["previous_image"], record["staging_check_id"]) == (None, first)
    images.require_promoted(cat, "exi", "a:1", "exi.yaml")
    with pytest.raises(images.PromotionRefused, match="already the production image"):
        images.promote(cat, "exi", "a:1", promoted_by="t", reason=None)

    check(cat, "b:2", "a:1", "passed")
    check(cat, "c:3", "a:1", "passed")
    images.promote(cat, "exi", "b:2", promoted_by="t", reason=None)
    with pytest.raises(images.PromotionRefused, match="compared 'c:3' with 'a:1', but production is now 'b:2'"):
        images.promote(cat, "exi", "c:3", promoted_by="t", reason=None)
    with pytest.raises(images.ImageNotPromoted, match="is not the production image of exi \\('b:2'\\)"):
        images.require_promoted(cat, "exi", "a:1", "exi.yaml")
    assert images.production_image(cat, "emu") is None
