"""Embedded services in one process: a new state dir starts with empty buckets (moto's state is per process)."""

from __future__ import annotations

from pathlib import Path

from emm_dev.cli import Services


def test_a_new_state_dir_does_not_inherit_an_earlier_services_archive(tmp_path: Path) -> None:
    first = Services(tmp_path / "one", fresh=True, inbox_events=False)
    try:
        first.client.put_object(Bucket="emm-sdc-archive", Key="emm/data/x.fits", Body=b"first run's bytes")
        first.client.put_object(Bucket="emm-sdc-inbox", Key="inbox/exi/y.bin", Body=b"left in the inbox")
    finally:
        first.close()
    second = Services(tmp_path / "two", fresh=True, inbox_events=False)
    try:
        for bucket in ("emm-sdc-archive", "emm-sdc-inbox"):
            left = second.client.list_object_versions(Bucket=bucket)
            assert not left.get("Versions") and not left.get("DeleteMarkers"), bucket
    finally:
        second.close()
