"""EMM naming standard: real product names, every rule's message, derived fields."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from emm_sdc.core import naming

REAL_NAMES = [
    "emm_exi_l2a_20210224T095615_0011_xos1_f635_r_v03-01.fits",
    "emm_emu_l2b_20220331t212107_0191_os2_sw1of3_r_v01-04.fits.gz",
    "emm_emu_l2a_20221201t002750_0301_osr_38566_f_v04-00.fits.gz",
]


@pytest.mark.parametrize("name", REAL_NAMES)
def test_real_names_parse_and_round_trip(name: str) -> None:
    parsed = naming.parse(name)
    assert parsed.file_name == name
    assert naming.is_valid(name)


def test_fields_of_a_real_exi_name() -> None:
    p = naming.parse(REAL_NAMES[0])
    assert (p.instrument, p.level, p.orbit, p.mode, p.descriptor, p.kernel) == (
        "exi", "l2a", 11, "xos1", "f635", "r")
    assert p.start == datetime(2021, 2, 24, 9, 56, 15, tzinfo=UTC)
    assert (p.version, p.revision, p.absolute_version) == (3, 1, 301)
    assert p.file_root == "emm_exi_l2a_20210224T095615_0011_xos1_f635"
    assert p.archive_key == "emm/data/exi/l2a/xos1/2021/02/" + REAL_NAMES[0]
    assert p.product_type == "science"


def test_emus_special_mode_lowercase_t_and_digit_descriptor() -> None:
    p = naming.parse("emm_emu_l1_20220101t000000_0000_EMU035_12_p_v00-00.fits")
    assert (p.mode, p.descriptor, p.orbit, p.time_separator) == ("EMU035", "12", 0, "t")
    assert p.archive_key.startswith("emm/data/emu/l1/EMU035/2022/01/")


def test_emirs_has_no_mode_and_archive_key_skips_it() -> None:
    p = naming.parse("emm_emr_l2_20220105T120000_0123_f_v02-03.fits")
    assert p.mode is None and p.descriptor is None
    assert p.archive_key == "emm/data/emr/l2/2022/01/emm_emr_l2_20220105T120000_0123_f_v02-03.fits"


def test_sdc_defined_l0_hk_and_quicklook() -> None:
    l0 = naming.parse("emm_exi_l0_20210524T101500_0011_xos1_n_v01-00.bin")
    hk = naming.parse("emm_emr_hk_20210524T000000_0011_n_v01-00.bin")
    ql = naming.parse("emm_emr_l2ql_20210524T000000_0011_r_v01-00.png")
    assert l0.is_raw and hk.is_raw and not ql.is_raw
    assert (hk.product_type, ql.product_type, l0.product_type) == ("hk", "quicklook", "science")


def test_newest_version_has_largest_absolute_version() -> None:
    names = ["emm_emr_l2_20220105T120000_0123_f_v02-03.fits", "emm_emr_l2_20220105T120000_0123_r_v10-00.fits",
             "emm_emr_l2_20220105T120000_0123_p_v02-10.fits"]
    newest = max((naming.parse(n) for n in names), key=lambda p: p.absolute_version)
    assert newest.version == 10
    assert len({naming.parse(n).file_root for n in names}) == 1


def test_with_version_and_kernel_build_new_names() -> None:
    p = naming.parse(REAL_NAMES[0]).with_version(3, 2).with_kernel("f")
    assert p.file_name == "emm_exi_l2a_20210224T095615_0011_xos1_f635_f_v03-02.fits"
    with pytest.raises(ValueError, match="kernel class must be one of"):
        naming.parse(REAL_NAMES[0]).with_kernel("x")


# One bad name per rule, with the rule id and a phrase of its message.
BAD = [
    ("xmm_exi_l2a_20210224T095615_0011_xos1_f635_r_v03-01.fits", "mission-prefix", "mission code 'emm'"),
    ("emm_abc_l2a_20210224T095615_0011_xos1_f635_r_v03-01.fits", "instrument", "exi, emu, emr"),
    ("emm_exi_l2b_20210224T095615_0011_xos1_f635_r_v03-01.fits", "level", "EXI levels are"),
    ("emm_exi_l2a_20210224_095615_0011_xos1_f635_r_v03-01.fits", "timestamp", "joined by 'T'"),
    ("emm_exi_l2a_0011_r_v03-01.fits", "structure", "expected emm_<inst>"),
    ("emm_exi_l2a_20210224X095615_0011_xos1_f635_r_v03-01.fits", "timestamp", "YYYYMMDDThhmmss"),
    ("emm_exi_l2a_20210230T095615_0011_xos1_f635_r_v03-01.fits", "timestamp", "not a real calendar date"),
    ("emm_exi_l2a_20210224T095615_11_xos1_f635_r_v03-01.fits", "orbit", "4 digits, zero padded"),
    ("emm_exi_l2a_20210224T095615_0011_xos9_f635_r_v03-01.fits", "exi-mode", "xos1, xos2"),
    ("emm_exi_l2a_20210224T095615_0011_f635_r_v03-01.fits", "exi-mode", "EXI mode must be"),
    ("emm_exi_l2a_20210224T095615_0011_xos1_f999_r_v03-01.fits", "exi-filter", "f220, f260"),
    ("emm_exi_l2a_20210224T095615_0011_xos1_r_v03-01.fits", "exi-filter", "need a filter descriptor"),
    ("emm_exi_l0_20210224T095615_0011_xos1_f635_n_v01-00.bin", "exi-l0-filter", "every filter"),
    ("emm_emu_l2a_20210224T095615_0011_os9_r_v01-00.fits", "emu-mode", "EMUnnn"),
    ("emm_emu_l2a_20210224T095615_0011_r_v01-00.fits", "emu-mode", "need an observation mode"),
    ("emm_emu_l2a_20210224T095615_0011_os1_s-w_r_v01-00.fits", "emu-descriptor", "sw1of3"),
    ("emm_emr_l2_20210224T095615_0011_xos1_r_v01-00.fits", "no-mode", "EMIRS files carry no mode"),
    ("emm_exi_hk_20210224T095615_0011_xos1_n_v01-00.bin", "no-mode", "housekeeping files carry no mode"),
    ("emm_exi_l2a_20210224T095615_0011_xos1_f635_a_b_r_v03-01.fits", "field-count", "at most two fields"),
    ("emm_exi_l2a_20210224T095615_0011_xos1_f635_q_v03-01.fits", "kernel-class", "p (predicted)"),
    ("emm_exi_l0_20210224T095615_0011_xos1_r_v01-00.bin", "raw-kernel-class", "use no SPICE kernels"),
    ("emm_exi_l2a_20210224T095615_0011_xos1_f635_r_v3-1.fits", "version", "two digits each"),
    ("emm_exi_l2a_20210224T095615_0011_xos1_f635_r_v03-01.png", "extension", ".fits or .fits.gz"),
    ("emm_exi_l0_20210224T095615_0011_xos1_n_v01-00.fits", "extension", ".bin"),
    ("../emm_exi_l0_20210224T095615_0011_xos1_n_v01-00.bin", "safe-characters", "no path separators"),
    ("emm_exi_l0_2021 0224T095615_0011_xos1_n_v01-00.bin", "safe-characters", "only letters, digits"),
    (".hidden", "safe-characters", "start with a letter or digit"),
]


@pytest.mark.parametrize(("name", "rule", "phrase"), BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_each_rule_reports_its_convention(name: str, rule: str, phrase: str) -> None:
    with pytest.raises(naming.InvalidNameError) as err:
        naming.parse(name)
    rules = {p.rule for p in err.value.problems}
    assert rule in rules
    assert phrase in str(err.value)
    assert err.value.file_name == name


def test_all_problems_reported_together_with_fields_and_values() -> None:
    _, problems = naming.problems_in("emm_exi_l9_20211324T095615_011_xos1_q_v3-01.fits")
    by_rule = {p.rule: p for p in problems}
    assert set(by_rule) == {"level", "timestamp", "orbit", "kernel-class", "version"}
    assert by_rule["orbit"].field == "orbit" and by_rule["orbit"].value == "011"
    assert by_rule["timestamp"].value == "20211324T095615"


def test_safe_basename_strips_paths_and_odd_characters() -> None:
    assert naming.safe_basename("inbox/exi/../../etc/pass wd") == "pass_wd"
    assert naming.safe_basename("inbox/exi/.hidden") == "hidden"
    assert naming.safe_basename("inbox/exi/") == "unnamed"
    assert len(naming.safe_basename("x" * 1000)) == 200


def test_sidecar_name() -> None:
    assert naming.sidecar_name("a.bin") == "a.bin.md5"


def test_canonical_name_uses_the_instruments_separator() -> None:
    """'T' and 't' spellings are one file; its canonical name is the instrument's own spelling."""
    exi = naming.parse("emm_exi_l0_20210617t110239_0011_xos1_n_v01-00.bin")
    emu = naming.parse("emm_emu_l2a_20221201T002750_0301_osr_38566_f_v04-00.fits.gz")
    assert exi.canonical_name == "emm_exi_l0_20210617T110239_0011_xos1_n_v01-00.bin"
    assert emu.canonical_name == "emm_emu_l2a_20221201t002750_0301_osr_38566_f_v04-00.fits.gz"
    assert exi.file_name.endswith("t110239_0011_xos1_n_v01-00.bin")  # as delivered
    assert exi.canonical().archive_key.endswith("/emm_exi_l0_20210617T110239_0011_xos1_n_v01-00.bin")


def test_task_labels_fit_airflows_limit() -> None:
    name = "emm_exi_l0_" + "x" * 300 + "_end.bin"
    label = naming.task_label(name)
    assert len(label) == 250 and label.startswith("emm_exi_l0_") and label.endswith("_end.bin") and "…" in label
    assert naming.task_label("short.bin") == "short.bin"
