"""Every DAG's Params: the Airflow 3 Trigger form submits them with their defaults, lists are edited as lists,
pick lists offer their values, each Param says what it is for; the code reading them treats empty as absent.

The form rules checked here are those of Airflow 3.3's ``FlexibleForm`` (ui/src/components/FlexibleForm):
a Param whose schema ``type`` does not include ``"null"`` is required, and a required Param whose value is
``null`` or ``""`` disables Trigger; an ``array`` is a one-value-per-line text box when its items are strings
(or have no ``type``), a multi-select when it has ``examples`` (or ``enum``), else a raw JSON editor.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import Param
from airflow.sdk.exceptions import AirflowFailException, ParamValidationError

from emm_sdc.core import naming
from emm_sdc.core.catalog import Catalog, file_record
from emm_sdc.core.config import load_instrument
from emm_sdc.pipeline.params import day_param, list_param, orbits_param
from emm_sdc.pipeline.process import select_inputs

ROOT = Path(__file__).resolve().parents[2]

#: Params that are required by design (no valid default): the form cannot trigger until they are filled.
#: Each must say so in its description; every other Param must submit with its default.
REQUIRED_BY_DESIGN = {
    ("emm_image_promote", "image"),  # which image to make production: there is no sensible default
    ("emm_release_withdraw", "reason"),  # a withdrawal is audited with its reason
    # A scheduled DAG needs a valid default, so it is "" (valid for the schema); the form still requires it
    # (a required string may not be empty) and plan() fails a run without it.
    *{(f"emm_{inst}_reprocess", "reason") for inst in ("exi", "emu", "emr")},
}


@pytest.fixture(scope="module")
def bag() -> DagBag:
    bag = DagBag(dag_folder=str(ROOT / "dags"), safe_mode=False)
    assert bag.import_errors == {}
    return bag


def _params(bag: DagBag) -> list[tuple[str, str, Param]]:
    return [(dag_id, name, dag.params.get_param(name)) for dag_id, dag in sorted(bag.dags.items())
            for name in dag.params]


def _types(param: Param) -> list[str]:
    t = param.schema.get("type", [])
    return [t] if isinstance(t, str) else list(t)


def _valid(param: Param, value: Any) -> bool:
    try:
        copy.copy(param).resolve(value)
    except ParamValidationError:
        return False
    return True


def _form_requires(param: Param) -> bool:
    """FlexibleForm's isRequired: a type is given and it does not allow null."""
    return bool(param.schema.get("type")) and "null" not in _types(param)


def test_every_param_has_a_description(bag: DagBag) -> None:
    missing = [f"{d}.{n}" for d, n, p in _params(bag) if not (p.description or "").strip()]
    assert missing == []


def test_every_form_submits_with_its_defaults(bag: DagBag) -> None:
    """Except the required-by-design Params, each default validates and is not an empty required value."""
    seen_required = set()
    for dag_id, name, param in _params(bag):
        blocks_form = _form_requires(param) and param.value in (None, "")
        if (dag_id, name) in REQUIRED_BY_DESIGN:
            seen_required.add((dag_id, name))
            assert blocks_form, f"{dag_id}.{name} is listed as required by design but the form does not require it"
            assert "required" in param.description.lower(), f"{dag_id}.{name}: the description must say required"
            continue
        assert not blocks_form, f"{dag_id}.{name}: required with an empty default: the form cannot trigger"
        assert _valid(param, param.value), f"{dag_id}.{name}: default {param.value!r} fails {param.schema}"
    assert seen_required == REQUIRED_BY_DESIGN  # the exceptions all exist (none left stale)
    for dag_id, dag in bag.dags.items():
        if not any((dag_id, n) in REQUIRED_BY_DESIGN for n in dag.params):
            dag.params.validate()  # the whole set, as Airflow checks a run's conf


def test_required_by_design_params_refuse_their_empty_default(bag: DagBag) -> None:
    for dag_id, name in sorted(REQUIRED_BY_DESIGN):
        param = bag.dags[dag_id].params.get_param(name)
        if dag_id.endswith("_reprocess"):
            assert param.resolve("why") == "why"  # the default "" validates; plan() refuses it (e2e tests)
            continue
        with pytest.raises(ParamValidationError):
            copy.copy(param).resolve()
        assert copy.copy(param).resolve("x") == "x"


def test_lists_are_edited_as_lists_and_may_be_cleared(bag: DagBag) -> None:
    lists = [(d, n, p) for d, n, p in _params(bag) if "array" in _types(p)]
    assert {("emm_exi_process", "files"), ("emm_exi_process", "orbits"), ("emm_exi_process", "levels"),
            ("emm_public_release", "instruments"), ("emm_release_withdraw", "file_names")} <= {
                (d, n) for d, n, _ in lists}
    for dag_id, name, param in lists:
        where = f"{dag_id}.{name}"
        assert "null" in _types(param), f"{where}: clearing the field sends null; the schema must allow it"
        for empty in (None, []):
            assert _valid(param, empty), f"{where} refuses {empty!r}"
        items = param.schema.get("items", {})
        pick = "examples" in param.schema or "enum" in param.schema
        assert pick or items.get("type") in (None, "string"), f"{where} would be a raw JSON editor"
        if "enum" in items:  # a pick list: a multi-select offering exactly the allowed values
            assert param.schema.get("examples") == items["enum"], f"{where}: examples must list the choices"
            assert copy.copy(param).resolve(items["enum"][:1]) == items["enum"][:1]
            with pytest.raises(ParamValidationError):
                copy.copy(param).resolve(["not-a-choice"])


def test_enums_are_pick_lists_offering_their_values(bag: DagBag) -> None:
    enums = [(d, n, p) for d, n, p in _params(bag) if "enum" in p.schema]
    assert {("emm_image_promote", "instrument"), ("emm_exi_reprocess", "from_level")} <= {(d, n) for d, n, _ in enums}
    for dag_id, name, param in enums:
        values = param.schema["enum"]
        assert [v for v in values if v is not None], f"{dag_id}.{name} offers nothing"
        assert param.value in values, f"{dag_id}.{name}: default {param.value!r} is not one of {values}"
        assert "array" not in _types(param), f"{dag_id}.{name}: an array takes its choices from examples/items"
    levels = bag.dags["emm_exi_process"].params.get_param("levels")
    assert levels.schema["examples"] == [s.level for s in load_instrument("exi").processing.chain]
    release_levels = bag.dags["emm_public_release"].params.get_param("levels")
    assert "l0" not in release_levels.schema["examples"] and "l1" in release_levels.schema["examples"]


def test_orbits_are_text_lines_or_integers(bag: DagBag) -> None:
    orbits = bag.dags["emm_exi_process"].params.get_param("orbits")
    assert copy.copy(orbits).resolve(["12", " 13 ", ""]) == ["12", " 13 ", ""]  # as the form sends them
    assert copy.copy(orbits).resolve([12, 13]) == [12, 13]  # as a CLI or REST conf may
    for bad in (["12a"], ["-1"], [1.5]):
        with pytest.raises(ParamValidationError):
            copy.copy(orbits).resolve(bad)


def test_a_cleared_form_validates(bag: DagBag) -> None:
    """What the form sends when every optional field of emm_exi_process is cleared: all nulls."""
    params = copy.deepcopy(bag.dags["emm_exi_process"].params)
    cleared = {n: None for n in params}
    params.update(cleared)
    assert params.validate() == cleared


def test_param_readers_treat_empty_as_absent_and_name_bad_values() -> None:
    assert list_param({"files": None}, "files") == []
    assert list_param({}, "files") == []
    assert list_param({"files": [" a.bin ", "", "  ", "b.bin"]}, "files") == ["a.bin", "b.bin"]
    assert orbits_param({"orbits": ["12", "", " 7 ", 9]}) == [12, 7, 9]
    assert day_param({"start_date": None}, "start_date") is None
    assert str(day_param({"start_date": "2021-06-17"}, "start_date")) == "2021-06-17"
    with pytest.raises(AirflowFailException, match=r"param orbits: '12x' is not an orbit number"):
        orbits_param({"orbits": ["12x"]})
    with pytest.raises(AirflowFailException, match=r"param files: expected a list"):
        list_param({"files": "a.bin"}, "files")
    with pytest.raises(AirflowFailException, match=r"param start_date: '17/06/2021' is not a date"):
        day_param({"start_date": "17/06/2021"}, "start_date")


L0 = {11: "emm_emr_l0_20210617T082144_0011_n_v01-00.bin", 12: "emm_emr_l0_20210618T010000_0012_n_v01-00.bin",
      13: "emm_emr_l0_20210619T010000_0013_n_v01-00.bin"}
HK = "emm_emr_hk_20210617T082144_0011_n_v01-00.bin"


def _index(cat: Catalog, name: str, bucket: str = "b") -> None:
    cat.archive_delivery(file_record(naming.parse(name), size=10, md5="0" * 32, bucket=bucket), inbox_key=name,
                         dag_id="d", dag_run_id="r")


def test_the_default_form_processes_everything_pending(bag: DagBag, catalog_conn: Any) -> None:
    """The DAG's own defaults (and a cleared form) select every archived science L0 without an L1; filters work."""
    cat = Catalog(catalog_conn)
    for name in [*L0.values(), HK]:
        _index(cat, name)
    run_id = cat.start_run(
        dag_id="d", dag_run_id="r", task_id="t", map_index=0, try_number=1, instrument_id="emr", data_level="l1",
        work_unit="orbit-0011", runner="local", processor_name="p", processor_version="1", image=None,
        environment="production", meta_kernel=None, reason=None, started_at=datetime.now(UTC))
    l1 = file_record(naming.parse("emm_emr_l1_20210617t082144_0011_n_v01-00.fits"), size=10, md5="1" * 32,
                     bucket="b")
    cat.index_products(run_id, [(l1, [L0[11]])], ended_at=datetime.now(UTC), log_uri=None)
    cfg = load_instrument("emr")
    dag = bag.dags["emm_emr_process"]
    defaults = {name: dag.params[name] for name in dag.params}

    def picked(params: dict[str, Any]) -> list[str]:
        return [r["file_name"] for r in select_inputs(cat, cfg, params, [])]

    pending = [L0[12], L0[13]]  # orbit 11 has its L1; HK is not science
    assert picked(defaults) == pending
    assert picked({name: None for name in defaults}) == pending  # every field cleared
    assert picked({**defaults, "files": [], "orbits": [""], "levels": []}) == pending
    assert picked({**defaults, "orbits": ["11", "", "13"]}) == [L0[11], L0[13]]  # explicit: processed or not
    assert picked({**defaults, "files": [f" {L0[12]} ", ""]}) == [L0[12]]
    assert picked({**defaults, "start_date": "2021-06-18"}) == [L0[12]]
    assert picked({**defaults, "start_date": "2021-06-17", "end_date": "2021-06-18"}) == [L0[11], L0[12]]
    with pytest.raises(AirflowFailException, match="param end_date needs start_date"):
        picked({**defaults, "end_date": "2021-06-18"})
    with pytest.raises(AirflowFailException, match=r"param orbits: 'eleven'"):
        picked({**defaults, "orbits": ["eleven"]})
