"""Housekeeping as an auxiliary input: the detector temperature during an observation.

An L1 job may receive the orbit's HK files beside its L0 files. A product lists
an HK file among its inputs only when that file has packets within
:data:`MARGIN_S` of the product's time range, and records their mean detector
temperature (channel 0, centikelvin) as ``DETTEMP`` in kelvin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from emmref import ccsds
from emmref.contract import BadInput, InputFile

MARGIN_S = 600.0
DETECTOR_CHANNEL = 0


@dataclass(frozen=True)
class Housekeeping:
    """Packets of one HK file."""

    file_name: str
    time: np.ndarray
    channels: np.ndarray


def load(inputs: Sequence[InputFile], instrument: str) -> list[Housekeeping]:
    """Decode every HK input (BadInput when one does not decode)."""
    result = []
    for inp in inputs:
        try:
            decoded = ccsds.read(inp.path, instrument, "hk", inp.file_name)
        except ccsds.DecodeError as exc:
            raise BadInput(str(exc)) from None
        pk = decoded[ccsds.HK_APIDS[instrument]]
        result.append(Housekeeping(inp.file_name, pk.time, pk.fields["CHANNELS"].astype(np.int16)))
    return result


def detector_temperature(hks: Sequence[Housekeeping], t0: float, t1: float) -> tuple[float | None, list[str]]:
    """Mean detector temperature (K) around ``[t0, t1]`` and the HK files it came from."""
    values, used = [], []
    for hk in hks:
        near = (hk.time >= t0 - MARGIN_S) & (hk.time <= t1 + MARGIN_S)
        if near.any():
            values.append(hk.channels[near, DETECTOR_CHANNEL].astype(np.float64) / 100.0)
            used.append(hk.file_name)
    if not values:
        return None, []
    return round(float(np.concatenate(values).mean()), 2), used
