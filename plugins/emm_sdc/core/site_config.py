"""Site config ``include/sdc.yaml``: settings of the SDC as a whole, owned by SDC operations.

Today it names the operators' contacts, who hear about every failed DAG run and
about quarantined SPICE kernels. Read with ``yaml.safe_load`` and validated as
strictly as the ITF configs; a mistake raises :class:`SiteConfigError` naming
the file, the field and the rule.

Where it is: ``$EMM_SITE_CONFIG`` (must exist), else ``sdc.yaml`` next to the
ITF config folder (``$EMM_CONFIG_DIR/../sdc.yaml``, by default
``include/sdc.yaml``); when that file is absent the defaults apply (nobody
but the log is told).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import ValidationError

from emm_sdc.core.config import ConfigError, Notifications, _Strict, config_dir, read_mapping, validation_problems

SITE_CONFIG_FILE = "sdc.yaml"


class SiteConfigError(ConfigError):
    """The site config is unreadable or breaks the schema (same shape as :class:`ConfigError`)."""

    kind = "site config"


class SiteConfig(_Strict):
    """The SDC's own settings."""

    #: SDC operations: told of every failed DAG run (with the ITF for instrument DAGs) and of
    #: quarantined SPICE kernels.
    operators: Notifications = Notifications()


def site_config_path() -> Path:
    """``$EMM_SITE_CONFIG``, else ``sdc.yaml`` in the folder that holds the ITF config folder."""
    env = os.environ.get("EMM_SITE_CONFIG")
    return Path(env) if env else config_dir().parent / SITE_CONFIG_FILE


def load_site_config(path: Path | str | None = None) -> SiteConfig:
    """Read and validate the site config; defaults when the file is absent and was not named explicitly."""
    explicit = path is not None or bool(os.environ.get("EMM_SITE_CONFIG"))
    where = Path(path) if path is not None else site_config_path()
    if not explicit and not where.exists():
        return SiteConfig()
    raw = read_mapping(where, SiteConfigError)
    try:
        return SiteConfig.model_validate(raw)
    except ValidationError as exc:
        raise SiteConfigError(where, validation_problems(exc)) from None


def operators() -> Notifications:
    """The operators' contacts from the site config."""
    return load_site_config().operators
