"""Tests for emm_dev.synthetic: valid deliveries and one anomaly per ingest rule."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from emm_dev import synthetic
from emm_sdc.core import checksums, naming, packets


def _framer(path: Path, instrument: str, level: str) -> packets.PacketFramer:
    framer = packets.PacketFramer(packets.allowed_apids(instrument, level))
    data = path.read_bytes()
    for i in range(0, len(data), 65536):  # arbitrary chunking, as the ingest streams it
        framer.feed(data[i : i + 65536])
    framer.finish()
    return framer


def _framing(path: Path, instrument: str, level: str) -> tuple[int, list[str]]:
    framer = _framer(path, instrument, level)
    return framer.packets, framer.problems


def _packet_times(data: bytes) -> list[float]:
    times, i = [], 0
    while i < len(data):
        (length,) = struct.unpack_from(">H", data, i + 4)
        header_at = i + packets.PRIMARY_HEADER_LEN
        coarse, fine, _ = struct.unpack_from(packets.SECONDARY_HEADER_FMT, data, header_at)
        times.append(coarse + fine / 65536)
        i += packets.PRIMARY_HEADER_LEN + length + 1
    return times


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> list[synthetic.Delivered]:
    return synthetic.generate(tmp_path_factory.mktemp("moc"), orbits=(11,), seed=0)


def _first(delivered: list[synthetic.Delivered], inst: str, level: str = "l0") -> synthetic.Delivered:
    return next(d for d in delivered if d.instrument == inst and d.level == level)


def test_orbit_model() -> None:
    assert synthetic.orbit_start(0) == synthetic.ORBIT_EPOCH == datetime(2021, 5, 23, tzinfo=UTC)
    assert synthetic.orbit_start(12) - synthetic.orbit_start(11) == synthetic.ORBIT_PERIOD
    assert timedelta(hours=54) < synthetic.ORBIT_PERIOD < timedelta(hours=56)
    assert synthetic.orbit_of(synthetic.orbit_start(11) + timedelta(hours=54, minutes=59)) == 11
    assert synthetic.orbit_of(synthetic.orbit_start(12)) == 12
    with pytest.raises(ValueError, match="orbit number"):
        synthetic.orbit_start(-1)


def test_inventory_per_orbit(delivered: list[synthetic.Delivered]) -> None:
    kinds = sorted((d.instrument, d.level, naming.parse(d.file_name).mode) for d in delivered)
    assert kinds == [
        ("emr", "hk", None), ("emr", "l0", None), ("emr", "l0", None),
        ("emu", "hk", None), ("emu", "l0", "os2"),
        ("exi", "hk", None), ("exi", "l0", "xos1"), ("exi", "l0", "xos2"),
    ]
    assert all(d.kind == "valid" for d in delivered)
    assert all(0 < d.size < 1_000_000 for d in delivered)


def test_names_parse_and_follow_the_raw_conventions(delivered: list[synthetic.Delivered]) -> None:
    for d in delivered:
        name = naming.parse(d.file_name)
        assert (name.instrument, name.level) == (d.instrument, d.level)
        assert (name.kernel, name.version, name.revision, name.extension) == ("n", 1, 0, ".bin")
        assert name.orbit == 11
        assert synthetic.orbit_start(11) <= name.start < synthetic.orbit_start(12)
        assert d.path.name == d.file_name and d.path.is_file()


def test_sequence_counts_are_continuous_per_apid_in_every_file(delivered: list[synthetic.Delivered]) -> None:
    for d in delivered:
        framer = _framer(d.path, d.instrument, d.level)
        report = framer.sequence.report()
        assert framer.problems == [] and not report.anomalies, (d.file_name, report.describe())
        assert all(a["first_count"] == 0 and a["last_count"] == a["packets"] - 1 for a in report.apids)
        if d.instrument == "exi" and d.level == "l0":
            assert len(report.apids) == 3  # three filters interleaved image by image, each counting its own


def test_sidecars_match_content(delivered: list[synthetic.Delivered]) -> None:
    for d in delivered:
        assert d.sidecar_path is not None and d.sidecar_path.name == d.file_name + ".md5"
        text = d.sidecar_path.read_text()
        assert text == f"{d.md5}  {d.file_name}\n"
        assert checksums.parse_sidecar(text, d.file_name) == checksums.md5_file(d.path) == d.md5
        assert d.declared_md5() == d.md5
        assert d.size == d.path.stat().st_size


def test_valid_files_pass_packet_framing(delivered: list[synthetic.Delivered]) -> None:
    expected_packets = {
        ("exi", "l0"): 3 * packets.EXI_IMAGE_SIZE,
        ("emu", "l0"): synthetic.EMU_INTEGRATIONS * packets.EMU_SPATIAL_ROWS,
        ("emr", "l0"): synthetic.EMR_SCANS * synthetic.EMR_DETECTORS,
    }
    for d in delivered:
        count, problems = _framing(d.path, d.instrument, d.level)
        assert problems == [], d.file_name
        if d.level == "l0":
            assert count == expected_packets[(d.instrument, d.level)]
        else:
            assert count > 600  # one packet per 5 minutes over the orbit


def test_packet_times_start_at_the_name_and_increase(delivered: list[synthetic.Delivered]) -> None:
    epoch = datetime.fromtimestamp(packets.EPOCH_UNIX, tz=UTC)
    assert epoch == datetime(2000, 1, 1, tzinfo=UTC)
    for d in delivered:
        times = _packet_times(d.path.read_bytes())
        assert np.all(np.diff(times) > 0), d.file_name
        assert epoch + timedelta(seconds=int(times[0])) == naming.parse(d.file_name).start


def test_exi_content_is_a_lit_disk(delivered: list[synthetic.Delivered]) -> None:
    data = _first(delivered, "exi").path.read_bytes()
    plen = packets.PACKET_TYPES[0x113].packet_len
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, plen)
    apids = (raw[:, 0].astype(int) << 8 | raw[:, 1]) & 0x7FF
    assert list(dict.fromkeys(apids)) == [packets.EXI_FILTER_APIDS[f] for f in ("f437", "f546", "f635")]
    first = raw[: packets.EXI_IMAGE_SIZE, packets.PRIMARY_HEADER_LEN + packets.SECONDARY_HEADER_LEN :]
    rows = first[:, :2].copy().view(">u2").ravel()
    assert list(rows) == list(range(packets.EXI_IMAGE_SIZE))
    image = first[:, 4:].copy().view(">u2").astype(float)
    assert image.shape == (256, 256)
    background = np.median(image[:8, :8])
    assert abs(background - synthetic.EXI_DARK_DN) < 10
    assert image.max() > background + 500  # the disk
    lit = image > background + 100
    assert 0.05 < lit.mean() < 0.6


def test_emu_spectra_show_the_emission_lines(delivered: list[synthetic.Delivered]) -> None:
    data = _first(delivered, "emu").path.read_bytes()
    plen = packets.PACKET_TYPES[0x120].packet_len
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, plen)[:, 18:]
    spectra = raw.copy().view(">u2").astype(float)
    assert spectra.shape == (synthetic.EMU_INTEGRATIONS * packets.EMU_SPATIAL_ROWS, packets.EMU_SPECTRAL_BINS)
    mean = spectra.mean(axis=0)
    wl = synthetic.emu_wavelengths()
    peak = {line: mean[np.argmin(abs(wl - line))] for line, _ in synthetic.EMU_LINES}
    continuum = np.median(mean)
    lya, o1304, o1356 = peak.values()
    assert lya > o1304 > o1356 > 2 * continuum
    assert wl[np.argmax(mean)] == pytest.approx(121.6, abs=0.3)


def test_emr_spectra_are_thermal_with_the_co2_band(delivered: list[synthetic.Delivered]) -> None:
    data = _first(delivered, "emr").path.read_bytes()
    plen = packets.PACKET_TYPES[0x130].packet_len
    dn = np.frombuffer(data, dtype=np.uint8).reshape(-1, plen)[:, 18:].copy().view(">u2").astype(float)
    assert dn.shape == (synthetic.EMR_SCANS * synthetic.EMR_DETECTORS, packets.EMR_SPECTRAL_BINS)
    nu = synthetic.emr_wavenumbers()
    radiance = (dn.mean(axis=0) - synthetic.EMR_DN_OFFSET) / synthetic.emr_gain(nu)
    bt = synthetic.PLANCK_C2 * nu / np.log1p(synthetic.PLANCK_C1 * nu**3 / radiance)
    band = bt[np.argmin(abs(nu - 667))]
    window = bt[(nu > 400) & (nu < 550)].mean()
    assert 200 < window < 280
    assert band < window - 20  # cold CO2 band core


def test_generate_is_deterministic(tmp_path: Path, delivered: list[synthetic.Delivered]) -> None:
    again = synthetic.generate(tmp_path / "a", orbits=(11,), seed=0)
    assert [(d.file_name, d.md5) for d in again] == [(d.file_name, d.md5) for d in delivered]
    other = synthetic.generate(tmp_path / "b", orbits=(11,), instruments=("emr",), seed=1)
    same_seed = {d.file_name: d.md5 for d in delivered}
    assert all(same_seed.get(d.file_name) != d.md5 for d in other)


def test_generate_rejects_unknown_instrument(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown instrument 'xyz'"):
        synthetic.generate(tmp_path, orbits=(1,), instruments=("xyz",))


# ----------------------------------------------------------------- anomalies: each caught by its own rule


def _rules_failed(d: synthetic.Delivered) -> set[str]:
    """Which ingest checks a delivery fails: name, sidecar, checksum, size, framing."""
    failed = set()
    name, _ = naming.problems_in(d.file_name)
    if name is None:
        failed.add("name")
    if d.sidecar_path is None or not d.sidecar_path.exists():
        failed.add("sidecar")
    elif d.declared_md5() != checksums.md5_file(d.path):
        failed.add("checksum")
    if d.path.stat().st_size == 0:
        failed.add("size")
    framer = _framer(d.path, d.instrument, d.level)
    if framer.problems:
        failed.add("framing")
    elif framer.sequence.report().anomalies:
        failed.add("sequence")
    return failed


@pytest.mark.parametrize("inst", ["exi", "emu", "emr"])
def test_each_anomaly_breaks_only_its_rule(
    tmp_path: Path, delivered: list[synthetic.Delivered], inst: str
) -> None:
    src = _first(delivered, inst)
    made = {
        "corrupt": synthetic.corrupt(tmp_path, src),
        "misnamed": synthetic.misnamed(tmp_path, src),
        "truncated": synthetic.truncated(tmp_path, src),
        "zero_byte": synthetic.zero_byte(tmp_path, src),
        "missing_sidecar": synthetic.missing_sidecar(tmp_path, src),
    }
    assert set(made) | {"conflicting"} == set(synthetic.ANOMALIES)
    assert _rules_failed(made["corrupt"]) == {"checksum"}
    assert _rules_failed(made["misnamed"]) == {"name"}
    assert _rules_failed(made["truncated"]) == {"framing"}
    assert _rules_failed(made["zero_byte"]) == {"size", "framing"}
    assert _rules_failed(made["missing_sidecar"]) == {"sidecar"}
    for kind, d in made.items():
        assert d.kind == kind and (d.instrument, d.level) == (src.instrument, src.level)
        assert d.path.parent == tmp_path and d.size == d.path.stat().st_size
        assert d.md5 == checksums.md5_file(d.path)
    # distinct names, so one batch can carry them all
    names = [d.file_name for d in made.values()]
    assert len({*names, src.file_name}) == len(names) + 1


@pytest.mark.parametrize("inst", ["exi", "emu", "emr"])
@pytest.mark.parametrize("level", ["l0", "hk"])
def test_sequence_breaks_fail_only_the_sequence_check(
    tmp_path: Path, delivered: list[synthetic.Delivered], inst: str, level: str
) -> None:
    src = _first(delivered, inst, level)
    expected = {"gap": {"gaps": 1, "missing": 2, "repeats": 0, "out_of_order": 0},
                "repeat": {"gaps": 0, "missing": 0, "repeats": 1, "out_of_order": 0},
                "out-of-order": {"gaps": 0, "missing": 0, "repeats": 0, "out_of_order": 1}}
    for kind in synthetic.SEQUENCE_BREAKS:
        bad = synthetic.sequence_break(tmp_path / kind, src, kind=kind)
        assert bad.kind == f"sequence-{kind}" and _rules_failed(bad) == {"sequence"}
        assert bad.file_name != src.file_name and bad.md5 == checksums.md5_file(bad.path)
        found = _framer(bad.path, inst, level).sequence.report().to_dict()
        assert {k: found[k] for k in expected[kind]} == expected[kind], kind
    with pytest.raises(ValueError, match="kind must be one of"):
        synthetic.sequence_break(tmp_path, src, kind="shuffle")


def test_anomaly_details(tmp_path: Path, delivered: list[synthetic.Delivered]) -> None:
    src = _first(delivered, "exi")
    bad = synthetic.corrupt(tmp_path, src)
    assert bad.declared_md5() != bad.md5 and bad.size == src.size
    # re-stamped: still a valid name whose timestamp is the first packet's time
    assert naming.parse(bad.file_name).start == naming.parse(src.file_name).start + timedelta(seconds=101)

    cut = synthetic.truncated(tmp_path, src)
    _, problems = _framing(cut.path, "exi", "l0")
    assert problems and problems[0].startswith("truncated")
    assert cut.declared_md5() == cut.md5 and 0 < cut.size < src.size

    empty = synthetic.zero_byte(tmp_path, src)
    assert empty.size == 0 and empty.declared_md5() == "d41d8cd98f00b204e9800998ecf8427e"
    bare = synthetic.zero_byte(tmp_path / "bare", src, with_sidecar=False)
    assert bare.sidecar_path is None

    lost = synthetic.missing_sidecar(tmp_path, src)
    assert lost.sidecar_path is None and not (tmp_path / (lost.file_name + ".md5")).exists()
    assert lost.declared_md5() is None


@pytest.mark.parametrize("rule", sorted(synthetic.MISNAME_RULES))
def test_misnamed_breaks_the_named_rule(
    tmp_path: Path, delivered: list[synthetic.Delivered], rule: str
) -> None:
    src = _first(delivered, "emu")
    bad = synthetic.misnamed(tmp_path, src, rule=rule)
    name, problems = naming.problems_in(bad.file_name)
    assert name is None
    assert synthetic.MISNAME_RULES[rule] in {p.rule for p in problems}
    assert bad.declared_md5() == bad.md5 == src.md5


def test_misnamed_rejects_unknown_rule(tmp_path: Path, delivered: list[synthetic.Delivered]) -> None:
    with pytest.raises(ValueError, match="rule must be one of"):
        synthetic.misnamed(tmp_path, delivered[0], rule="nope")


def test_conflicting_has_the_same_name_and_other_content(
    tmp_path: Path, delivered: list[synthetic.Delivered]
) -> None:
    src = _first(delivered, "emr")
    dup = synthetic.conflicting(tmp_path, src)
    assert dup.file_name == src.file_name and dup.kind == "conflicting"
    assert dup.md5 != src.md5 and dup.size == src.size
    assert _rules_failed(dup) == set()  # sound on its own: only the archive comparison catches it
    with pytest.raises(ValueError, match="overwrite its source"):
        synthetic.conflicting(src.path.parent, src)


def test_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synthetic.main([str(tmp_path / "out"), "--orbits", "3", "--instruments", "emr",
                           "--anomalies", str(tmp_path / "bad")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 + len(synthetic.ANOMALIES)
    assert len(list((tmp_path / "bad").glob("*.bin"))) == len(synthetic.ANOMALIES)
