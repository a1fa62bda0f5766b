"""Last-good copies of the YAML configs (core/config_store.py) and ``./sdc check-config``."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from emm_dev import cli
from emm_sdc.core import config, config_store
from emm_sdc.core.settings import get_settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "itf_configs"
BAD = ROOT / "tests" / "fixtures" / "bad_configs"


@pytest.fixture
def configs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copies of the shipped ITF configs and site config; an empty last-good folder."""
    target = tmp_path / "include" / "itf_configs"
    target.mkdir(parents=True)
    for f in SHIPPED.glob("*.yaml"):
        shutil.copy(f, target / f.name)
    shutil.copy(ROOT / "include" / "sdc.yaml", tmp_path / "include" / "sdc.yaml")
    monkeypatch.setenv("EMM_CONFIG_DIR", str(target))
    monkeypatch.setenv("EMM_LAST_GOOD_DIR", str(tmp_path / "last-good"))
    get_settings.cache_clear()
    return target


def _set(path: Path, change: dict[str, object]) -> None:
    data = yaml.safe_load(path.read_text())
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(yaml.safe_dump(data))


def test_valid_config_is_kept_once_and_stands_in_when_broken(configs: Path) -> None:
    exi = config_store.instrument_file("exi")
    _set(exi.path, {"airflow.retries": 7})
    result = config_store.check(exi, keep=True)
    assert result.ok and result.kept
    copy = config_store.copy_path(exi)
    assert copy.read_text().splitlines()[1] == f"# source: {exi.path}"
    assert yaml.safe_load(copy.read_text()) == yaml.safe_load(exi.path.read_text())
    assert config_store.check(exi, keep=True).kept is False  # same content: not rewritten
    assert [p.name for p in copy.parent.iterdir()] == ["exi.yaml"]  # no temp file left behind

    shutil.copy(BAD / "bad_schedule.yaml", exi.path)  # retries: 2 there
    cfg, fallback = config_store.load_instrument_or_last_good("exi")
    assert fallback is not None and cfg.airflow.retries == 7
    assert [f for f, _ in fallback.error.problems] == ["ingest.schedule"]
    banner = fallback.banner(now=fallback.last_good.kept_at + timedelta(hours=5))
    assert banner.startswith("> **Running on the last-good config.**")
    assert f"`{exi.path}` is invalid (1 problem(s))" in banner and "kept 5 h ago" in banner
    assert "> - `ingest.schedule`: must be a cron expression" in banner
    # The broken file is never kept: the copy is unchanged.
    assert config_store.check(exi, keep=True).ok is False
    assert config_store.read_last_good(exi).config.airflow.retries == 7


def test_no_copy_means_the_error_says_so(configs: Path) -> None:
    shutil.copy(BAD / "bad_schedule.yaml", configs / "exi.yaml")
    with pytest.raises(config.ConfigError) as err:
        config_store.load_instrument_or_last_good("exi")
    text = str(err.value)
    assert str(configs / "exi.yaml") in text and "ingest.schedule: must be a cron expression" in text
    assert f"no last-good copy to fall back on (none kept in {get_settings().last_good_dir})" in text


@pytest.mark.parametrize("spoil", ["damaged", "other_source", "no_header", "schema_changed"])
def test_an_unusable_copy_never_stands_in(configs: Path, spoil: str) -> None:
    exi = config_store.instrument_file("exi")
    assert config_store.check(exi, keep=True).kept
    copy = config_store.copy_path(exi)
    text = copy.read_text()
    header, body = text.split("\n", 4)[:4], text.split("\n", 4)[4]
    if spoil == "damaged":
        copy.write_text(text.replace("retries: 2", "retries: 3"))
        why = "is damaged (its sha256 does not match)"
    elif spoil == "other_source":
        copy.write_text(text.replace(f"# source: {exi.path}", "# source: /elsewhere/exi.yaml"))
        why = "is a copy of another file (/elsewhere/exi.yaml)"
    elif spoil == "no_header":
        copy.write_text(body)
        why = "has no last-good header"
    else:  # a copy kept under an older schema that today's rules refuse: re-validated on use
        import hashlib

        body = body.replace("timeout_minutes: 30", "timeout_minutes: 0")
        assert "timeout_minutes: 0" in body
        header[3] = f"# sha256: {hashlib.sha256(body.encode()).hexdigest()}"
        copy.write_text("\n".join(header) + "\n" + body)
        why = "no longer validates: processing.runner.timeout_minutes"
    shutil.copy(BAD / "bad_schedule.yaml", exi.path)
    with pytest.raises(config_store.NoLastGoodError, match="no last-good copy to fall back on") as err:
        config_store.load_instrument_or_last_good("exi")
    assert why in str(err.value)


def test_only_live_configs_get_copies(configs: Path, tmp_path: Path) -> None:
    other = tmp_path / "draft" / "exi.yaml"
    other.parent.mkdir()
    shutil.copy(configs / "exi.yaml", other)
    with pytest.raises(ValueError, match="is not one of the configs the SDC runs on"):
        config_store.keep_last_good(config_store.file_for_path(other), other.read_text())
    assert not config_store.copy_path(config_store.instrument_file("exi")).exists()


def test_site_config_is_checked_and_kept(configs: Path) -> None:
    site = config_store.config_files()[-1]
    assert site.name == config_store.SITE and site.path == configs.parent / "sdc.yaml"
    assert config_store.check(site, keep=True).kept
    site.path.write_text("operators:\n  emails: [not-an-address]\n")
    result = config_store.check(site, keep=True)
    assert result.lines() == [f"{site.path}: operators.emails: not e-mail addresses: ['not-an-address'] "
                              "(got ['not-an-address'])"]
    # The check's notices still reach the operators of the last-good copy; with no copy, only the log.
    assert config_store.operators_or_last_good().emails == ["sdc-ops@example.org"]
    config_store.copy_path(site).unlink()
    assert config_store.operators_or_last_good().emails == []


def test_a_broken_site_config_runs_on_its_copy_and_every_dag_file_still_loads(configs: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from emm_sdc.core import site_config

    site = config_store.config_files()[-1]
    assert config_store.check(site, keep=True).kept
    site.path.write_text("operators:\n  emails: [not-an-address]\n")
    assert site_config.operators().emails == ["sdc-ops@example.org"]  # the copy's, not an import error
    bag = DagBag(dag_folder=str(ROOT / "dags"), safe_mode=False)
    assert bag.import_errors == {} and "emm_exi_ingest" in bag.dag_ids and "emm_config_check" in bag.dag_ids
    config_store.copy_path(site).unlink()
    with pytest.raises(site_config.SiteConfigError, match="not e-mail addresses"):  # no copy: the error itself
        site_config.operators()


def test_problems_are_notified_when_new_changed_or_a_day_old(configs: Path) -> None:
    exi = config_store.instrument_file("exi")
    shutil.copy(BAD / "bad_schedule.yaml", exi.path)
    err = config_store.check(exi, keep=True).error
    assert err is not None
    t0 = datetime(2026, 5, 1, tzinfo=UTC)
    assert config_store.problem_notice_due(exi, err, t0)
    config_store.record_problem_notice(exi, err, t0)
    assert not config_store.problem_notice_due(exi, err, t0 + timedelta(hours=23))
    assert config_store.problem_notice_due(exi, err, t0 + config_store.REMIND_AFTER)
    shutil.copy(BAD / "bad_email.yaml", exi.path)
    other = config_store.check(exi, keep=True).error
    assert other is not None and config_store.problem_notice_due(exi, other, t0 + timedelta(minutes=5))
    assert config_store.clear_problem(exi) and not config_store.clear_problem(exi)


# -- ./sdc check-config ---------------------------------------------------------------------------------------

def test_check_config_all_ok(configs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"{configs / 'exi.yaml'}: OK", f"{configs / 'emus.yaml'}: OK", f"{configs / 'emirs.yaml'}: OK",
                   f"{configs.parent / 'sdc.yaml'}: OK", "OK: 4 file(s) valid"]
    assert not get_settings().last_good_dir.exists()  # checking alone keeps nothing


def test_check_config_names_file_field_and_rule(configs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = [BAD / "bad_schedule.yaml", BAD / "bad_email.yaml", configs / "emus.yaml"]
    assert cli.main(["check-config", *map(str, bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{bad[0]}: ingest.schedule: must be a cron expression or one of")
    assert out[1] == f"{bad[1]}: notifications.emails: not e-mail addresses: ['exi-itf'] (got ['exi-itf'])"
    assert out[2:] == [f"{bad[2]}: OK", "FAILED: 2 problem(s) in 2 of 3 file(s)"]


def test_check_config_every_problem_and_unreadable(configs: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    _set(configs / "exi.yaml", {"ingest.inbox_prefix": "/abs", "airflow.retries": -1})
    missing = tmp_path / "nowhere" / "emirs.yaml"
    assert cli.main(["check-config", str(configs / "exi.yaml"), str(missing)]) == 1
    out = capsys.readouterr().out
    assert f"{configs / 'exi.yaml'}: ingest.inbox_prefix: must be a relative S3 prefix" in out
    assert f"{configs / 'exi.yaml'}: airflow.retries: Input should be greater than or equal to 0" in out
    assert f"{missing}: <file>: cannot be read: No such file or directory" in out
    assert out.splitlines()[-1] == "FAILED: 3 problem(s) in 2 of 2 file(s)"


def test_check_config_accept_keeps_valid_live_configs(configs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(BAD / "bad_schedule.yaml", configs / "exi.yaml")
    assert cli.main(["check-config", "--accept"]) == 1
    kept = sorted(p.name for p in get_settings().last_good_dir.iterdir())
    assert kept == ["emirs.yaml", "emus.yaml", "sdc.yaml"]  # not the broken exi.yaml
    assert "(kept as last-good copy)" in capsys.readouterr().out
    shutil.copy(SHIPPED / "exi.yaml", configs / "exi.yaml")
    assert cli.main(["check-config", "--accept", str(configs / "exi.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (f"OK: 1 file(s) valid; 1 kept as last-good copies in "
                                                        f"{get_settings().last_good_dir}")
