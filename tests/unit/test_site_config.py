"""Site config (include/sdc.yaml): the shipped file is valid; defaults when absent; clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emm_sdc.core import config, site_config

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "sdc.yaml"


def test_shipped_site_config_names_the_operators() -> None:
    assert site_config.site_config_path() == SHIPPED
    ops = site_config.operators()
    assert ops.emails == ["sdc-ops@example.org"]
    assert ops.smtp_conn_id is None and ops.slack_conn_id is None


def test_absent_next_to_a_config_copy_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configs = tmp_path / "itf_configs"
    shutil.copytree(ROOT / "include" / "itf_configs", configs)
    monkeypatch.setenv("EMM_CONFIG_DIR", str(configs))
    assert site_config.site_config_path() == tmp_path / "sdc.yaml"
    assert site_config.operators().emails == []
    shutil.copy(SHIPPED, tmp_path / "sdc.yaml")
    assert site_config.operators().emails == ["sdc-ops@example.org"]


def test_explicit_path_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMM_SITE_CONFIG", str(tmp_path / "site.yaml"))
    with pytest.raises(site_config.SiteConfigError) as err:
        site_config.load_site_config()
    assert str(err.value).startswith(f"invalid site config {tmp_path / 'site.yaml'}: 1 problem(s)")
    assert "<file>: cannot be read: No such file" in str(err.value)
    (tmp_path / "site.yaml").write_text("operators:\n  emails: [ops@example.org]\n  slack_channel: '#ops'\n")
    assert site_config.operators().slack_channel == "#ops"


def test_bad_site_config_names_file_field_and_rule(tmp_path: Path) -> None:
    bad = tmp_path / "sdc.yaml"
    bad.write_text("operators:\n  emails: [sdc-ops@example.org, nobody]\n  smtp_conn_id: 'smtp server'\n"
                   "  slack_chanel: '#ops'\noperator: {}\n")
    with pytest.raises(site_config.SiteConfigError) as err:
        site_config.load_site_config(bad)
    assert isinstance(err.value, config.ConfigError)
    text = str(err.value)
    assert text.startswith(f"invalid site config {bad}: 4 problem(s)")
    assert "operators.emails: not e-mail addresses: ['nobody']" in text
    assert "operators.smtp_conn_id: an Airflow connection id uses letters, digits" in text
    assert "operators.slack_chanel: unknown field" in text
    assert "operator: unknown field" in text


@pytest.mark.parametrize(("content", "expect"), [
    ("operators: [a, b]\n", "operators: Input should be a valid dictionary"),
    ("- just a list\n", "<top level>: must be a mapping of settings"),
    ("operators: {emails: [a@b.org]\n", "line 2, column 1: not valid YAML"),
    ("operators: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
])
def test_unreadable_or_wrong_shape(tmp_path: Path, content: str, expect: str) -> None:
    bad = tmp_path / "sdc.yaml"
    bad.write_text(content)
    with pytest.raises(site_config.SiteConfigError) as err:
        site_config.load_site_config(bad)
    assert str(bad) in str(err.value) and expect in str(err.value), str(err.value)
