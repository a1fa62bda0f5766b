"""ITF config schema: the shipped configs are valid; every rule has a fixture and a clear message."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from emm_sdc.core import config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "itf_configs"
BAD = sorted((ROOT / "tests" / "fixtures" / "bad_configs").glob("*.yaml"))


@pytest.mark.parametrize("inst", ["exi", "emu", "emr"])
def test_shipped_configs_are_valid(inst: str) -> None:
    cfg = config.load_instrument(inst)
    assert cfg.instrument == inst
    assert cfg.processing.chain[0].inputs == ["l0"]
    assert cfg.classify(f"emm_{inst}_l0_20210524T101500_0011_n_v01-00.bin") == "science"
    assert cfg.classify(f"emm_{inst}_hk_20210524T101500_0011_n_v01-00.bin") == "housekeeping"
    assert cfg.classify(f"emm_{inst}_l1_20210524T101500_0011_n_v01-00.fits") is None


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_each_bad_fixture_names_file_field_and_rule(path: Path) -> None:
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(config.ConfigError) as err:
        config.load_config(path)
    text = str(err.value)
    assert str(path) in text
    assert expect in text, text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    data = yaml.safe_load((SHIPPED / "exi.yaml").read_text())
    data["ingest"]["inbox_prefix"] = "/abs"
    data["processing"]["runner"]["memory_mb"] = 1
    data["processing"]["chain"][1]["level"] = "l3"
    data["airflow"]["retries"] = -1
    bad = tmp_path / "exi.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(config.ConfigError) as err:
        config.load_config(bad)
    fields = [f for f, _ in err.value.problems]
    assert fields == ["ingest.inbox_prefix", "processing.runner.memory_mb", "airflow.retries"]
    # Cross-field rules run once the fields themselves are valid.
    data = yaml.safe_load((SHIPPED / "exi.yaml").read_text())
    data["processing"]["chain"][1]["level"] = "l3"
    data["processing"]["chain"][2]["inputs"] = ["l2b"]
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(config.ConfigError) as err:
        config.load_config(bad)
    assert [f for f, _ in err.value.problems] == ["processing.chain.1.level", "processing.chain.2.inputs.0"]


def test_config_in_the_wrong_file(tmp_path: Path) -> None:
    shutil.copy(SHIPPED / "emus.yaml", tmp_path / "exi.yaml")
    with pytest.raises(config.ConfigError, match=r"'emu' belongs in emus\.yaml, not exi\.yaml"):
        config.load_config(tmp_path / "exi.yaml")


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot be read"):
        config.load_config(tmp_path / "exi.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    evil = tmp_path / "exi.yaml"
    evil.write_text("instrument: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(config.ConfigError, match="not valid YAML"):
        config.load_config(evil)


def test_unknown_instrument_code() -> None:
    with pytest.raises(ValueError, match="unknown instrument 'hrsc'"):
        config.load_instrument("hrsc")


def test_config_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SHIPPED / "exi.yaml", tmp_path / "exi.yaml")
    monkeypatch.setenv("EMM_CONFIG_DIR", str(tmp_path))
    assert config.config_dir() == tmp_path
    assert config.load_instrument("exi").owner == "exi-itf"


def test_release_rules_name_the_level_and_the_rule(tmp_path: Path) -> None:
    data = yaml.safe_load((SHIPPED / "emus.yaml").read_text())
    data["release"] = {"levels": ["l1", "l1", "l0"], "min_pred_rec": "r", "include_quicklook": True}
    bad = tmp_path / "emus.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(config.ConfigError) as err:
        config.load_config(bad)
    assert err.value.problems == [
        ("release.levels.1", "'l1' appears twice"),
        ("release.levels.2", "'l0' is not a releasable level of emu (one of l1, l2a, l2b, l3)"),
        ("release.include_quicklook", "emu has no quicklook level"),
    ]
    data = yaml.safe_load((SHIPPED / "exi.yaml").read_text())
    data["release"]["levels"] = ["l1ql"]
    data["release"]["min_pred_rec"] = "n"
    bad = tmp_path / "exi.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(config.ConfigError) as err:
        config.load_config(bad)
    assert [f for f, _ in err.value.problems] == ["release.min_pred_rec"]
    data["release"]["min_pred_rec"] = "p"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(config.ConfigError, match=r"release\.levels\.0: 'l1ql' is a quicklook level; set "
                                                 r"release\.include_quicklook instead"):
        config.load_config(bad)


def test_release_section_is_optional_and_releases_nothing(tmp_path: Path) -> None:
    data = yaml.safe_load((SHIPPED / "exi.yaml").read_text())
    del data["release"]
    (tmp_path / "exi.yaml").write_text(yaml.safe_dump(data))
    cfg = config.load_config(tmp_path / "exi.yaml")
    assert cfg.release_levels() == []
    assert config.load_instrument("exi").release_levels() == ["l1", "l2a", "l1ql"]


def test_packet_sequence_rule_defaults_to_warn_and_takes_the_three_rules(tmp_path: Path) -> None:
    data = yaml.safe_load((SHIPPED / "exi.yaml").read_text())
    path = tmp_path / "exi.yaml"
    for rule in ("quarantine", "warn", "ignore"):
        data["ingest"]["packet_sequence"] = rule
        path.write_text(yaml.safe_dump(data))
        assert config.load_config(path).ingest.packet_sequence == rule
    del data["ingest"]["packet_sequence"]
    path.write_text(yaml.safe_dump(data))
    assert config.load_config(path).ingest.packet_sequence == "warn"
    for wrong in ("Quarantine", True, ["warn"]):
        data["ingest"]["packet_sequence"] = wrong
        path.write_text(yaml.safe_dump(data))
        with pytest.raises(config.ConfigError) as err:
            config.load_config(path)
        [(fld, msg)] = err.value.problems
        assert fld == "ingest.packet_sequence" and msg.startswith("must be quarantine, warn or ignore")
        assert msg.endswith(f"(got {wrong!r})")
