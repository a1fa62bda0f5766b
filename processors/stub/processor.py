#!/usr/bin/env python3
"""Constant-time stub processor: honours the SDC processor contract for every instrument and level, fast.

For load tests and benchmarks (``bench/mars_year.py``, the Celery end-to-end test): it reads the job like
the reference processors (``emmref.contract``), then per input of the step's source level writes one small
product named as the reference processor would name it (FITS with the EMM product header and
CHECKSUM/DATASUM, or a PNG for quicklook levels), lists it in ``output_manifest.json`` and exits 0. Its run
time is constant (``EMM_STUB_SECONDS``, default 1 s of sleeping, plus interpreter start and an astropy
import), so a benchmark measures the SDC, not the science.

``EMM_STUB_HOLD_DIR`` (tests): the first job that starts writes ``<dir>/held-<pid>.json`` (its pid, target
level, work unit) and waits there until ``<dir>/release`` exists; later jobs, and this one once
released, go on at once. A test so pauses one processor at a known point, e.g. to kill the worker running it.

    EMM_INPUT_MANIFEST=... EMM_OUTPUT_DIR=... python processors/launch.py processors/stub/processor.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from emmref import contract
from emmref.contract import Job, Outputs, Processor, Step

#: Each instrument's levels: target -> source, as its reference processor (and its ITF YAML chain) has them.
CHAINS = {
    "exi": {"l1": "l0", "l2a": "l1", "l1ql": "l1"},
    "emu": {"l1": "l0", "l2a": "l1", "l2b": "l2a"},
    "emr": {"l1": "l0", "l2": "l1", "l2ql": "l2"},
}
QUICKLOOK = ("l1ql", "l2ql")
#: EXI products above L0 name a filter: the stub's one product per L0 file takes its mode's first filter.
EXI_FILTER = {"xos1": "f437", "xos2": "f220"}
DEFAULT_SECONDS = 1.0


def hold(job: Job) -> None:
    """``EMM_STUB_HOLD_DIR``: the first job waits at this point until the test releases it (module docstring)."""
    folder = os.environ.get("EMM_STUB_HOLD_DIR")
    if not folder:
        return
    where = Path(folder)
    release = where / "release"
    try:  # the first job only: O_EXCL makes exactly one of several concurrent jobs the held one
        fd = os.open(where / "first", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    os.close(fd)
    marker = where / f"held-{os.getpid()}.json"
    marker.write_text(json.dumps({"pid": os.getpid(), "level": job.target_level, "unit": job.work_unit}))
    contract.log(f"held at {marker} until {release} exists")
    while not release.exists():
        time.sleep(0.05)
    contract.log("released")


def make(job: Job, out: Outputs) -> None:
    """One product per input of the source level, after the constant wait."""
    from emmref import fitsio

    hold(job)
    time.sleep(float(os.environ.get("EMM_STUB_SECONDS") or DEFAULT_SECONDS))
    processor = PROCESSORS[job.instrument]
    for inp in job.inputs_at(CHAINS[job.instrument][job.target_level]):
        source = inp.name
        if job.instrument == "exi" and not source.descriptor:
            source = source.derive(descriptor=EXI_FILTER.get(source.mode or "", "f437"))
        if job.target_level in QUICKLOOK:
            from PIL import Image

            name = job.product_name(source, extension=".png")
            Image.new("L", (64, 64), color=128).save(out.path(name), format="PNG")
        else:
            from astropy.io import fits

            name = job.product_name(source)
            stamp = source.start.strftime("%Y-%m-%dT%H:%M:%S")
            header = fitsio.product_header(job, processor, name, date_obs=stamp, date_end=stamp,
                                           parents=[inp.file_name], extra={"STUB": (True, "constant-time stub")})
            fitsio.write(out.path(name), fits.PrimaryHDU(header=header))
        out.add(name, [inp.file_name])


#: The identity the ITF YAMLs expect (the reference processors' names and versions).
PROCESSORS = {inst: Processor(name=f"emm-{inst}-ref", version="1.0.0", instrument=inst) for inst in CHAINS}


def main() -> None:
    """Run the job of the environment with the processor of its instrument."""
    manifest = json.loads(Path(os.environ["EMM_INPUT_MANIFEST"]).read_text(encoding="utf-8"))
    inst = os.environ.get("EMM_INSTRUMENT") or manifest.get("instrument", "")
    if inst not in PROCESSORS:
        print(f"stub: error: unknown instrument {inst!r} (EMM_INSTRUMENT or the manifest's 'instrument')",
              file=sys.stderr)
        raise SystemExit(contract.EXIT_BAD_INPUT)
    steps = {target: Step(source, make, auxiliary_levels=("hk",) if source == "l0" else ())
             for target, source in CHAINS[inst].items()}
    contract.main(PROCESSORS[inst], steps)


if __name__ == "__main__":
    main()
