"""Reconciliation pieces without services: the site config section, ETag rules, the deep slice, inventory manifests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from emm_sdc.core import inventory, site_config
from emm_sdc.core import reconcile as rc

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_site_config_has_the_reconciliation_defaults() -> None:
    cfg = site_config.load_site_config(ROOT / "include" / "sdc.yaml").reconciliation
    assert cfg == site_config.ReconciliationConfig()
    assert (cfg.schedule, cfg.deep_verify_days, cfg.inventory) == ("0 3 * * *", 30, None)


def test_bad_reconciliation_settings_name_file_field_and_rule(tmp_path: Path) -> None:
    bad = tmp_path / "sdc.yaml"
    bad.write_text("reconciliation:\n  schedule: every day\n  deep_verify_days: 0\n  parallel_tasks: 2\n"
                   "  inventory: {bucket: Not_A_Bucket, prefix: /abs}\n  deep_verify: 3\n")
    with pytest.raises(site_config.SiteConfigError) as err:
        site_config.load_site_config(bad)
    text = str(err.value)
    assert text.startswith(f"invalid site config {bad}: 5 problem(s)")
    assert "reconciliation.schedule: must be a cron expression" in text
    assert "reconciliation.deep_verify_days: Input should be greater than or equal to 1" in text
    assert "reconciliation.inventory.bucket: must be an S3 bucket name" in text
    assert "reconciliation.inventory.prefix: must be a relative S3 prefix ending in '/'" in text
    assert "reconciliation.deep_verify: unknown field" in text


def test_etag_rules() -> None:
    data = b"archived bytes"
    md5 = hashlib.md5(data).hexdigest()
    assert rc.etag_matches(md5, len(data), md5) is True
    assert rc.etag_matches(hashlib.md5(b"other").hexdigest(), len(data), md5) is False
    one_part = hashlib.md5(bytes.fromhex(md5)).hexdigest() + "-1"  # S3's ETag of a one-part multipart upload
    assert rc.etag_matches(one_part, len(data), md5) is True
    assert rc.etag_matches(hashlib.md5(b"x").hexdigest() + "-1", len(data), md5) is False
    assert rc.etag_matches("0123456789abcdef0123456789abcdef-3", 3 << 30, md5) is None  # needs a re-read


def test_deep_slices_partition_the_key_space() -> None:
    keys = [f"emm/data/emr/l0/2021/03/k{i}" for i in range(5000)]
    slices = [(0.0, 0.25), (0.25, 0.25), (0.5, 0.25), (0.75, 0.25)]
    hits = [sum(rc.in_slice(k, s, f) for s, f in slices) for k in keys]
    assert set(hits) == {1}  # every key in exactly one slice
    assert all(rc.in_slice(k, 0.9, 0.2) == (rc.in_slice(k, 0.9, 0.1) or rc.in_slice(k, 0.0, 0.1)) for k in keys)
    assert not any(rc.in_slice(k, 0.3, 0.0) for k in keys) and all(rc.in_slice(k, 0.3, 1.0) for k in keys)


def test_areas_cover_what_the_sdc_writes() -> None:
    assert rc.area_of("emm/data/exi/l0/2021/02/f.bin").name == "data"
    assert rc.area_of("emm/quarantine/exi/abc/f.bin.reason.json").name == "quarantine"
    assert rc.area_of("emm/reports/reconciliation/2026/01/01/r/report.json").name == "reports"
    assert rc.area_of("emm/bundles/2026/01/01/x.tgz").transient
    assert rc.area_of("elsewhere/x").name == "other"
    assert rc.instrument_of("emm/logs/emr/l1/2021/02/j.log") == "emr" and rc.instrument_of("emm/spice/lsk/k") is None
    assert rc.severity("orphan", "data") == "error" and rc.severity("orphan", "logs") == "warning"
    assert set(rc.ACTIONS) == set(rc.KINDS)


def test_inventory_manifest_problems_are_named() -> None:
    where = "s3://inv/p/2026-01-01T00-00Z/manifest.json"
    with pytest.raises(inventory.InventoryError, match=f"{where}: fileFormat 'Parquet' is not supported"):
        inventory.parse_manifest(json.dumps({"fileFormat": "Parquet"}).encode(),
                                 manifest_key="p/2026-01-01T00-00Z/manifest.json", destination_bucket="inv")
    with pytest.raises(inventory.InventoryError, match=r"fileSchema lacks \['Size', 'ETag'\]"):
        inventory.parse_manifest(json.dumps({"fileFormat": "CSV", "fileSchema": "Bucket, Key", "files": []}).encode(),
                                 manifest_key="p/2026-01-01T00-00Z/manifest.json", destination_bucket="inv")
    m = inventory.parse_manifest(json.dumps({
        "sourceBucket": "arch", "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": [{"key": "p/data/a.csv.gz", "size": 1, "MD5checksum": ""}]}).encode(),
        manifest_key="p/2026-01-01T00-00Z/manifest.json", destination_bucket="inv")
    assert (m.source_bucket, m.files, m.created.isoformat()) == ("arch", ("p/data/a.csv.gz",),
                                                                 "2026-01-01T00:00:00+00:00")
    assert inventory.InventoryManifest.from_dict(m.to_dict()) == m


def test_scope_of_a_run_and_the_report_folder() -> None:
    scope = rc.check_scope(["exi", "exi"], ["emm/data/exi/l1/"])
    assert scope == rc.Scope(("exi",), ("emm/data/exi/l1/",)) and scope.scoped
    prefix = rc.report_prefix({"dag_run_id": "manual__2026-03-01T10:00:00+00:00",
                               "started_at": "2026-03-01T10:00:01+00:00"})
    assert prefix == "emm/reports/reconciliation/2026/03/01/manual__2026-03-01T10_00_00_00_00/"
