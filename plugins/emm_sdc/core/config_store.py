"""Last-good copies of the SDC's YAML configs, so that a broken YAML never stops an instrument.

When an ITF YAML (``include/itf_configs/<file>``) or the site config (``include/sdc.yaml``) validates,
the ``emm_config_check`` DAG (or ``./sdc check-config --accept``) keeps a copy of it in
``EMM_LAST_GOOD_DIR`` (:func:`keep_last_good`: temp file + ``os.replace``, only validated content, only
when the content changed). When the YAML later fails validation, the DAG files build that instrument's
DAGs from the copy (:func:`load_instrument_or_last_good`, which only *reads* YAML at parse time) and mark
them (tag ``config-fallback``, a banner in ``doc_md``); the check DAG fails and tells the ITF and the
operators until the YAML is fixed.

A copy is the validated YAML text under a four-line comment header::

    # EMM SDC last-good copy (kept by emm_config_check / ./sdc check-config --accept; do not edit)
    # source: /abs/path/include/itf_configs/exi.yaml
    # kept_at: 2026-05-01T10:00:00+00:00
    # sha256: <hex digest of the text below the header>

so ``diff <copy> <live file>`` shows what changed. A copy stands in only for the file it was taken from
(same absolute path), only when its digest matches, and only when it still validates against today's
schema. With no usable copy (a fresh install whose YAML is broken) the error stays what it always was:
an import error on the instrument's DAG file, saying that no last-good copy exists.

Plain Python (no Airflow imports).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from emm_sdc.core import settings
from emm_sdc.core.config import (
    CONFIG_FILES,
    ConfigError,
    ItfConfig,
    Notifications,
    config_dir,
    config_from_text,
    mapping_from_text,
    read_text,
    validation_problems,
)

log = logging.getLogger(__name__)

#: The name of the site config among the checked configs (ITF configs are named by instrument code).
SITE = "site"
#: Tag put on every DAG built from a last-good copy.
FALLBACK_TAG = "config-fallback"
#: A broken YAML is notified when its problems first appear or change, and again after this long.
REMIND_AFTER = timedelta(hours=24)
#: Problems a banner or a message lists at most.
MAX_SHOWN = 10
_HEADER = re.compile(
    r"\A# EMM SDC last-good copy[^\n]*\n# source: (?P<source>[^\n]+)\n# kept_at: (?P<kept_at>[^\n]+)\n"
    r"# sha256: (?P<sha>[0-9a-f]{64})\n")


class NoLastGoodError(ConfigError):
    """The live YAML is broken and no usable last-good copy exists: the message says both."""

    def __init__(self, error: ConfigError, why: str):
        self.error = error
        self.why = why
        self.kind = error.kind
        super().__init__(error.path, error.problems)
        self.args = (f"{error}\nno last-good copy to fall back on ({why}); this config's DAGs stay off until the "
                     "file validates",)


class LastGoodUnavailable(Exception):
    """No usable last-good copy; ``str()`` says why (none kept, another file's, damaged, no longer valid)."""


@dataclass(frozen=True)
class ConfigFile:
    """One checked YAML: an ITF config (``name`` = instrument code) or the site config (``name`` = ``site``)."""

    name: str
    path: Path

    @property
    def copy_name(self) -> str:
        return CONFIG_FILES.get(self.name) or ("sdc.yaml" if self.name == SITE else self.path.name)

    @property
    def label(self) -> str:
        if self.name == SITE:
            return "site config"
        return f"{self.name} ITF config" if self.name in CONFIG_FILES else "ITF config"


def config_files() -> list[ConfigFile]:
    """Every YAML the SDC runs on: the three ITF configs, then the site config."""
    from emm_sdc.core.site_config import site_config_path

    return [*(instrument_file(inst) for inst in CONFIG_FILES), ConfigFile(SITE, site_config_path())]


def file_for_path(path: Path | str) -> ConfigFile:
    """A YAML named on the command line: the live config it is (so it may be kept), else judged by its name
    (``sdc.yaml`` = a site config, anything else an ITF config, whose name must be its instrument's file)."""
    path = Path(path)
    for cf in config_files():
        if os.path.abspath(cf.path) == os.path.abspath(path):
            return cf
    by_name = {v: k for k, v in CONFIG_FILES.items()}
    return ConfigFile(SITE if path.name == "sdc.yaml" else by_name.get(path.name, "itf"), path)


def is_live(cf: ConfigFile) -> bool:
    """Whether ``cf`` is one of the files the SDC runs on (only those get last-good copies)."""
    return any(os.path.abspath(c.path) == os.path.abspath(cf.path) and c.name == cf.name for c in config_files())


def instrument_file(instrument: str) -> ConfigFile:
    if instrument not in CONFIG_FILES:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {sorted(CONFIG_FILES)}")
    return ConfigFile(instrument, config_dir() / CONFIG_FILES[instrument])


def validate_text(cf: ConfigFile, text: str) -> Any:
    """The validated config (:class:`ItfConfig` or ``SiteConfig``) of ``text``; :class:`ConfigError` otherwise."""
    if cf.name != SITE:
        return config_from_text(text, cf.path)  # the file name must be the instrument's
    from emm_sdc.core.site_config import SiteConfig, SiteConfigError

    raw = mapping_from_text(text, cf.path, SiteConfigError)
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise SiteConfigError(cf.path, validation_problems(exc)) from None


def _reword(err: ConfigError, cf: ConfigFile) -> ConfigError:
    """``err`` naming the live file (validation of a copy names the copy's path)."""
    if err.path == cf.path:
        return err
    return type(err)(cf.path, err.problems)


def last_good_dir() -> Path:
    return settings.get_settings().last_good_dir


def copy_path(cf: ConfigFile) -> Path:
    return last_good_dir() / cf.copy_name


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # read by the DAG processor, which may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class LastGood:
    """A usable last-good copy: where it is, what it copied, when, and the config it validates to."""

    path: Path
    source: Path
    kept_at: datetime
    sha256: str
    config: Any = field(repr=False)

    def age(self, now: datetime | None = None) -> str:
        """Coarse age (hours, then days), so a DAG's banner changes rarely."""
        secs = ((now or datetime.now(UTC)) - self.kept_at).total_seconds()
        if secs < 3600:
            return "less than an hour"
        if secs < 48 * 3600:
            return f"{int(secs // 3600)} h"
        return f"{int(secs // 86400)} days"


def read_last_good(cf: ConfigFile) -> LastGood:
    """The usable last-good copy of ``cf`` (reads one YAML file); :class:`LastGoodUnavailable` saying why not."""
    path = copy_path(cf)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LastGoodUnavailable(f"none kept in {path.parent}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LastGoodUnavailable(f"{path} cannot be read: {exc}") from None
    m = _HEADER.match(text)
    if m is None:
        raise LastGoodUnavailable(f"{path} has no last-good header (not written by the SDC)")
    body = text[m.end():]
    if _digest(body) != m["sha"]:
        raise LastGoodUnavailable(f"{path} is damaged (its sha256 does not match)")
    if os.path.abspath(m["source"]) != os.path.abspath(cf.path):
        raise LastGoodUnavailable(f"{path} is a copy of another file ({m['source']})")
    try:
        kept_at = datetime.fromisoformat(m["kept_at"])
    except ValueError:
        raise LastGoodUnavailable(f"{path} has an unreadable kept_at ({m['kept_at']!r})") from None
    try:
        cfg = validate_text(cf, body)
    except ConfigError as err:
        shown = "; ".join(f"{f}: {msg}" for f, msg in err.problems[:3])
        raise LastGoodUnavailable(f"{path} no longer validates: {shown}") from None
    return LastGood(path, cf.path, kept_at, m["sha"], cfg)


def keep_last_good(cf: ConfigFile, text: str, *, now: datetime | None = None) -> bool:
    """Keep ``text`` as the last-good copy of ``cf``: validated here, written atomically, only when it changed.

    Returns whether a copy was written. Raises :class:`ConfigError` (nothing written) when ``text`` is invalid,
    ``ValueError`` when ``cf`` is not a file the SDC runs on.
    """
    if not is_live(cf):
        raise ValueError(f"{cf.path} is not one of the configs the SDC runs on ({config_dir()}, the site config): "
                         "it gets no last-good copy")
    try:
        validate_text(cf, text)
    except ConfigError as err:
        raise _reword(err, cf) from None
    path = copy_path(cf)
    digest = _digest(text)
    try:
        current = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        current = ""
    m = _HEADER.match(current)
    if m and m["sha"] == digest and os.path.abspath(m["source"]) == os.path.abspath(cf.path):
        return False
    kept_at = (now or datetime.now(UTC)).replace(microsecond=0)
    header = (f"# EMM SDC last-good copy (kept by emm_config_check / ./sdc check-config --accept; do not edit)\n"
              f"# source: {os.path.abspath(cf.path)}\n# kept_at: {kept_at.isoformat()}\n# sha256: {digest}\n")
    _atomic_write(path, header + text)
    log.info("kept %s as the last-good copy of %s", path, cf.path)
    return True


@dataclass(frozen=True)
class Fallback:
    """A config in use from its last-good copy because the live file is broken."""

    error: ConfigError
    last_good: LastGood

    def banner(self, now: datetime | None = None) -> str:
        """Markdown put at the top of each fallback DAG's ``doc_md``."""
        lg = self.last_good
        problems = [f"> - `{fld}`: {msg}" for fld, msg in self.error.problems[:MAX_SHOWN]]
        if len(self.error.problems) > MAX_SHOWN:
            problems.append(f"> - ... and {len(self.error.problems) - MAX_SHOWN} more")
        return "\n".join([
            f"> **Running on the last-good config.** `{self.error.path}` is invalid "
            f"({len(self.error.problems)} problem(s)), so this DAG is built from its last valid copy, kept "
            f"{lg.age(now)} ago ({lg.kept_at:%Y-%m-%d %H:%M} UTC): `{lg.path}`. Changes made to the YAML since "
            "then are not in effect.",
            ">",
            *problems,
            ">",
            f"> Fix the YAML (`./sdc check-config {self.error.path}` lists the problems). The `emm_config_check` "
            "DAG fails and notifies until it validates; then this banner and the `config-fallback` tag go away.",
        ])


def load_instrument_or_last_good(instrument: str) -> tuple[ItfConfig, Fallback | None]:
    """An instrument's config from its YAML, or from the YAML's last-good copy when the YAML is broken.

    Reads YAML only (safe at DAG-parse time). Raises :class:`NoLastGoodError` (a :class:`ConfigError`)
    when the YAML is broken and no usable copy exists.
    """
    cf = instrument_file(instrument)
    try:
        return config_from_text(read_text(cf.path), cf.path), None
    except ConfigError as err:
        try:
            copy = read_last_good(cf)
        except LastGoodUnavailable as why:
            raise NoLastGoodError(err, str(why)) from None
        log.warning("%s is invalid; using its last-good copy %s kept %s:\n%s", cf.path, copy.path,
                    copy.kept_at.isoformat(), err)
        return copy.config, Fallback(err, copy)


def running_config(instrument: str) -> ItfConfig:
    """The config an instrument runs on now: its YAML, or the last-good copy while the YAML is broken.

    For code that reads a config while tasks run (release rules, notifications, lanes): a broken YAML
    then affects nothing the DAGs built from the copy would not.
    """
    return load_instrument_or_last_good(instrument)[0]


def operators_or_last_good() -> Notifications:
    """The operators' contacts from the site config, or from its last-good copy when it is broken (else none:
    only the log is told)."""
    from emm_sdc.core.site_config import operators

    try:
        return operators()  # the file, or its last-good copy while the file is broken
    except ConfigError as err:
        log.warning("operators are not told: %s (and no usable last-good copy)", err)
        return Notifications()


@dataclass(frozen=True)
class CheckResult:
    """One YAML checked: its problems (none = valid) and whether a last-good copy was (re)written."""

    file: ConfigFile
    error: ConfigError | None = None
    kept: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    def lines(self) -> list[str]:
        """One line per problem, ``file: field: rule`` (or one OK line)."""
        if self.error is None:
            return [f"{self.file.path}: OK" + (" (kept as last-good copy)" if self.kept else "")]
        return [f"{self.file.path}: {fld}: {msg}" for fld, msg in self.error.problems]


def check(cf: ConfigFile, *, keep: bool) -> CheckResult:
    """Validate one YAML; with ``keep``, keep it as the last-good copy when it validates."""
    from emm_sdc.core.site_config import SiteConfigError

    if cf.name == SITE and not cf.path.exists() and not os.environ.get("EMM_SITE_CONFIG"):
        return CheckResult(cf)  # no site config: the defaults apply (nobody but the log is told)
    try:
        text = read_text(cf.path, SiteConfigError if cf.name == SITE else ConfigError)
        validate_text(cf, text)
    except ConfigError as err:
        return CheckResult(cf, _reword(err, cf))
    return CheckResult(cf, kept=keep_last_good(cf, text) if keep else False)


def seed_last_good() -> list[CheckResult]:
    """Check every config and keep a copy of each valid one (start of standalone/demo, deploys, ``--accept``)."""
    return [check(cf, keep=True) for cf in config_files()]


# -- notification state: tell people when problems appear or change, again after REMIND_AFTER, and when fixed --

def _state_path(cf: ConfigFile) -> Path:
    return last_good_dir() / f"{cf.copy_name}.problem.json"


def problem_notice_due(cf: ConfigFile, error: ConfigError, now: datetime | None = None) -> bool:
    """Whether the problems of ``cf`` should be notified now (new, changed, or last told REMIND_AFTER ago)."""
    now = now or datetime.now(UTC)
    try:
        state = json.loads(_state_path(cf).read_text(encoding="utf-8"))
        told = datetime.fromisoformat(state["notified_at"])
        same = state["digest"] == _digest(str(error))
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return not same or now - told >= REMIND_AFTER


def record_problem_notice(cf: ConfigFile, error: ConfigError, now: datetime | None = None) -> None:
    _atomic_write(_state_path(cf), json.dumps({"digest": _digest(str(error)), "source": str(cf.path),
                                               "notified_at": (now or datetime.now(UTC)).isoformat()}))


def clear_problem(cf: ConfigFile) -> bool:
    """Forget a notified problem of ``cf``; True when there was one (so "fixed" can be told)."""
    path = _state_path(cf)
    if not path.exists():
        return False
    path.unlink(missing_ok=True)
    return True
