"""Kernel naming convention and meta-kernel text."""

from __future__ import annotations

from datetime import date

import pytest

from emm_sdc.core import kernels


def test_time_bound_and_generic_names() -> None:
    k = kernels.parse_kernel_name("emm_spk_r_20210601_20210620_v02.bsp")
    assert (k.kernel_type, k.kernel_class, k.start, k.end, k.version) == ("spk", "r", date(2021, 6, 1),
                                                                         date(2021, 6, 20), 2)
    assert k.archive_key == "emm/spice/spk/emm_spk_r_20210601_20210620_v02.bsp" and k.is_hope
    g = kernels.parse_kernel_name("emm_lsk_naif0012_v01.tls")
    assert (g.kernel_type, g.kernel_class, g.descriptor, g.is_hope) == ("lsk", "n", "naif0012", False)
    assert g.file_name == "emm_lsk_naif0012_v01.tls"


@pytest.mark.parametrize(("name", "rule"), [
    ("emm_spk_x_20210601_20210620_v01.bsp", "kernel-class"),
    ("emm_spk_r_20210631_20210620_v01.bsp", "kernel-date"),
    ("emm_spk_r_20210620_20210601_v01.bsp", "kernel-window"),
    ("emm_ck_r_20210601_20210620_v01.bsp", "kernel-extension"),
    ("emm_lsk_naif0012_v01.bsp", "kernel-extension"),
    ("hope_trajectory.bsp", "kernel-structure"),
    ("emm_spk_r_20210601_v01.bsp", "kernel-structure"),
])
def test_bad_kernel_names(name: str, rule: str) -> None:
    with pytest.raises(kernels.InvalidKernelNameError) as err:
        kernels.parse_kernel_name(name)
    assert rule in {p.rule for p in err.value.problems}


def test_load_order_better_class_and_newer_version_last_superseded_dropped() -> None:
    names = ["emm_spk_f_20210601_20210605_v01.bsp", "emm_spk_r_20210601_20210620_v01.bsp",
             "emm_spk_r_20210601_20210620_v02.bsp", "emm_spk_p_20210501_20210801_v01.bsp",
             "emm_pck_mars_v01.tpc", "emm_lsk_naif0012_v01.tls", "emm_ck_r_20210601_20210620_v01.bc"]
    order = [k.file_name for k in kernels.load_order(kernels.parse_kernel_name(n) for n in names)]
    assert order == ["emm_lsk_naif0012_v01.tls", "emm_pck_mars_v01.tpc", "emm_spk_p_20210501_20210801_v01.bsp",
                     "emm_spk_r_20210601_20210620_v02.bsp", "emm_spk_f_20210601_20210605_v01.bsp",
                     "emm_ck_r_20210601_20210620_v01.bc"]


def test_meta_kernel_rebases_and_lists_entries() -> None:
    ks = [kernels.parse_kernel_name("emm_lsk_naif0012_v01.tls")]
    text = kernels.meta_kernel_text(3, ks, "/data/kernels")
    assert "PATH_VALUES  = ( '/data/kernels' )" in text and kernels.meta_kernel_name(3) == "emm_meta_v0003.tm"
    assert kernels.meta_kernel_entries(text) == ["lsk/emm_lsk_naif0012_v01.tls"]
    assert "( '/emm/spice' )" in kernels.rebase_meta_kernel(text, "/emm/spice")
    with pytest.raises(ValueError, match="not an SDC meta-kernel"):
        kernels.rebase_meta_kernel("KPL/MK", "/x")
