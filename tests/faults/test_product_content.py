"""Product verification before indexing (issue 15): what a processor wrote must be what its name says.

Each case ingests an EMIRS L0 for real, prepares and runs jobs with the SDC's own
``prepare_job`` and the local runner (the reference processor), spoils one
product the way a faulty processor or disk would, and collects with
``collect_job`` on moto's S3 server and PostgreSQL: the job is rejected with the
file and the rule, its run is failed with that message, and nothing is
indexed or archived. Valid products, plain and gzip'ed, still pass.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException
from astropy.io import fits

from emm_sdc.core.jobs import JobSpec
from emm_sdc.core.settings import project_root
from emm_sdc.lifecycle import collect_job, prepare_job
from emm_sdc.runners.local import run_local
from tests.faults import test_processing_faults as processing
from tests.faults.harness import World

#: The processing fault suite's fixtures: an EMIRS L0 ingested for real (sdc), its instrument config (cfg).
cfg, emr, sdc, worker = processing.cfg, processing.emr, processing.sdc, processing.worker
OUTPUT_MANIFEST = "output_manifest.json"


def run_step(actors: Any, cfg: Any, level: str, inputs: list[str]) -> JobSpec:
    """Prepare (real catalog and staging) and run one chain level with the reference processor."""
    cat, storage, _, _ = worker(actors)
    step = next(s for s in cfg.processing.chain if s.level == level)
    unit = {"unit": "orbit-0011", "inputs": inputs, "kernel_class": "n", "reprocess": False, "force": False,
            "reason": "product verification test"}
    spec = prepare_job(cat, storage, cfg, step, unit, dag_id="emm_emr_process", run_id=f"r-{level}",
                       task_id=f"unit.{level}.prepare", map_index=0, try_number=1)
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    run_local(spec, cfg.processing.runner.command, cwd=project_root(), memory_mb=2048, timeout_s=120)
    return spec


def product(spec: JobSpec, suffix: str) -> Path:
    [path] = [p for p in spec.output_dir.iterdir() if p.name.endswith(suffix)]
    return path


def rename_product(spec: JobSpec, path: Path, new_name: str) -> Path:
    """Rename a product and its output-manifest entry (as a processor writing .fits.gz would have named it)."""
    manifest_path = spec.output_dir / OUTPUT_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for entry in manifest["products"]:
        if entry["file_name"] == path.name:
            entry["file_name"] = new_name
    manifest_path.write_text(json.dumps(manifest))
    return path.rename(path.with_name(new_name))


# --- ways to spoil a FITS product --------------------------------------------------------------------------


def not_fits(path: Path, _spec: JobSpec) -> str:
    path.write_bytes(b"processing finished; see the log for the science data\n" * 200)
    return path.name


def datasum_broken(path: Path, _spec: JobSpec) -> str:
    """One data byte of the primary HDU changed after writing (the header, its DATASUM included, unchanged)."""
    with fits.open(path) as hdul:
        info = hdul.fileinfo(0)
        where = info["datLoc"] + info["datSpan"] // 2
    data = bytearray(path.read_bytes())
    data[where] ^= 0x5A
    path.write_bytes(bytes(data))
    return path.name


def checksum_missing(path: Path, _spec: JobSpec) -> str:
    """Rewritten without CHECKSUM/DATASUM in any HDU (otherwise a valid FITS file)."""
    with fits.open(path, memmap=False) as hdul:
        for hdu in hdul:
            del hdu.header["CHECKSUM"], hdu.header["DATASUM"]
        hdul.writeto(path, overwrite=True, checksum=False, output_verify="exception")
    return path.name


def gzip_cut(path: Path, spec: JobSpec) -> str:
    """gzip'ed and listed as .fits.gz, but the stream's last bytes (CRC and length) are missing."""
    gz = rename_product(spec, path, path.name + ".gz")
    gz.write_bytes(gzip.compress(gz.read_bytes(), mtime=0)[:-8])
    return gz.name


SPOILERS: dict[str, tuple[Callable[[Path, JobSpec], str], str, str]] = {
    # case: (how, rule, phrase of the finding)
    "not FITS at all": (not_fits, "fits-structure", "astropy cannot read it as FITS"),
    "DATASUM broken after writing": (datasum_broken, "fits-checksum", "HDU 0 (PRIMARY): DATASUM"),
    "no CHECKSUM/DATASUM": (checksum_missing, "fits-checksum", "has no CHECKSUM or DATASUM keyword"),
    "gzip stream cut short": (gzip_cut, "gzip", "the compressed stream is damaged or incomplete"),
}


def assert_rejected(world: World, actors: Any, spec: JobSpec, file_name: str, rule: str, phrase: str) -> None:
    """collect fails naming the file and the rule; the run says so; nothing of the job is archived or indexed."""
    cat, storage, _, _ = worker(actors)
    with pytest.raises(AirflowFailException) as caught:
        collect_job(cat, storage, spec)
    finding = f"{file_name}: {rule}: "
    assert finding in str(caught.value) and phrase in str(caught.value), str(caught.value)
    assert "outputs rejected, nothing indexed" in str(caught.value)
    [run] = world.rows("SELECT status, message FROM processing_runs WHERE id = %(id)s",
                       {"id": spec.processing_run_id})
    assert run["status"] == "failed" and finding in run["message"] and phrase in run["message"], run
    assert world.keys(world.archive, f"emm/data/emr/{spec.level}/") == []
    assert world.rows("SELECT file_name FROM science_files WHERE processing_run_id = %(id)s",
                      {"id": spec.processing_run_id}) == []
    world.check_products()


@pytest.mark.parametrize("case", list(SPOILERS))
def test_a_spoiled_fits_product_is_rejected_with_its_reason(world: World, actors: Any, cfg: Any,
                                                            sdc: dict[str, Any], case: str) -> None:
    spec = run_step(actors, cfg, "l1", [sdc["name"]])
    spoil, rule, phrase = SPOILERS[case]
    file_name = spoil(product(spec, ".fits"), spec)
    assert_rejected(world, actors, spec, file_name, rule, phrase)


def test_valid_fits_and_gzipped_fits_products_are_indexed(world: World, actors: Any, cfg: Any,
                                                          sdc: dict[str, Any]) -> None:
    """The reference processor's products (CHECKSUM/DATASUM in every HDU) pass, and so does a .fits.gz of one."""
    spec = run_step(actors, cfg, "l1", [sdc["name"]])
    path = product(spec, ".fits")
    with fits.open(path) as hdul:
        assert all(h.verify_checksum() == 1 and h.verify_datasum() == 1 for h in hdul)
    gz = rename_product(spec, path, path.name + ".gz")
    gz.write_bytes(gzip.compress(gz.read_bytes(), mtime=0))
    cat, storage, _, _ = worker(actors)
    assert collect_job(cat, storage, spec) == [gz.name]
    [row] = world.rows_named(gz.name)
    assert world.read(world.archive, row["s3_key"]) == gz.read_bytes()
    world.check_products()


def test_a_quicklook_that_does_not_decode_is_rejected(world: World, actors: Any, cfg: Any,
                                                      sdc: dict[str, Any]) -> None:
    """l1 and l2 (valid) are indexed; the l2ql PNG, cut in half, is not, and its run says why."""
    cat, storage, _, _ = worker(actors)
    l1 = collect_job(cat, storage, run_step(actors, cfg, "l1", [sdc["name"]]))
    l2 = collect_job(cat, storage, run_step(actors, cfg, "l2", l1))
    spec = run_step(actors, cfg, "l2ql", l2)
    png = product(spec, ".png")
    png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])
    assert_rejected(world, actors, spec, png.name, "png-decode", "Pillow cannot decode it as a PNG")
    assert [len(world.rows_named(n)) for n in l1 + l2] == [1] * len(l1 + l2)
