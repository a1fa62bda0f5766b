"""Site config ``include/sdc.yaml``: settings of the SDC as a whole, owned by SDC operations.

It names the operators' contacts, who hear about every failed DAG run and
about quarantined SPICE kernels, and the integrity reconciliation's settings
(``reconciliation:``: schedule, deep-verification period and rate, margins,
an optional S3 Inventory; docs/reconciliation.md). Read with ``yaml.safe_load`` and validated as
strictly as the ITF configs; a mistake raises :class:`SiteConfigError` naming
the file, the field and the rule.

Where it is: ``$EMM_SITE_CONFIG`` (must exist), else ``sdc.yaml`` next to the
ITF config folder (``$EMM_CONFIG_DIR/../sdc.yaml``, by default
``include/sdc.yaml``); when that file is absent the defaults apply (nobody
but the log is told).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from emm_sdc.core.config import (
    ConfigError,
    Notifications,
    _Strict,
    config_dir,
    read_mapping,
    schedule_field,
    validation_problems,
)

SITE_CONFIG_FILE = "sdc.yaml"


class SiteConfigError(ConfigError):
    """The site config is unreadable or breaks the schema (same shape as :class:`ConfigError`)."""

    kind = "site config"


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_INVENTORY_PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")
_SCHEDULE_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly"}
_Schedule = schedule_field(_SCHEDULE_PRESETS)


class InventorySource(_Strict):
    """An S3 Inventory of the archive bucket (CSV, daily): where its ``manifest.json`` files are published.

    ``prefix`` is ``<destination prefix>/<source bucket>/<configuration id>/``; the newest manifest under it
    younger than ``max_age_hours`` is used, else the run lists the bucket live.
    """

    bucket: str
    prefix: str = Field(min_length=1)
    max_age_hours: int = Field(default=36, ge=1, le=24 * 14)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET.match(v):
            raise ValueError("must be an S3 bucket name (3-63 lowercase letters, digits, '.', '-')")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.endswith("/") or v.startswith("/") or "//" in v or not _INVENTORY_PREFIX.match(v):
            raise ValueError("must be a relative S3 prefix ending in '/' (<destination prefix>/<bucket>/<config id>/)")
        return v


class ReconciliationConfig(_Strict):
    """``emm_integrity_reconcile``: when it runs, how hard it reads, what it tolerates."""

    #: Cron expression (UTC) or preset of the scheduled runs.
    schedule: _Schedule = "0 3 * * *"
    #: Every archived object is re-read and its MD5 recomputed at least once in this many days.
    deep_verify_days: int = Field(default=30, ge=1, le=3650)
    #: Total read rate of deep verification over all parallel tasks, MB/s (0 = unthrottled).
    deep_verify_mb_per_s: float = Field(default=50, ge=0, le=100_000)
    #: Prefixes compared at once (mapped tasks running in parallel); the read rate is shared among them.
    parallel_tasks: int = Field(default=4, ge=1, le=64)
    #: Objects and rows younger than this are not judged: writes still in flight.
    settle_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)
    #: An inbox file older than its ITF's sidecar grace plus this margin, still there, is a finding.
    stale_inbox_margin_minutes: int = Field(default=180, ge=0, le=30 * 24 * 60)
    #: Tell each ITF about the findings of its instrument (operators always hear about every finding).
    notify_itfs: bool = True
    #: An S3 Inventory to read instead of listing the bucket (for millions of objects); null = list live.
    inventory: InventorySource | None = None


class SiteConfig(_Strict):
    """The SDC's own settings."""

    #: SDC operations: told of every failed DAG run (with the ITF for instrument DAGs) and of
    #: quarantined SPICE kernels.
    operators: Notifications = Notifications()
    #: The integrity reconciliation (docs/reconciliation.md).
    reconciliation: ReconciliationConfig = ReconciliationConfig()


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


def running_site_config() -> SiteConfig:
    """The site config in effect: the file, or its last-good copy while the file is broken (so one typo does not
    stop every DAG file); its :class:`SiteConfigError` when it is broken and no usable copy exists."""
    try:
        return load_site_config()
    except SiteConfigError as err:
        from emm_sdc.core import config_store

        try:
            return config_store.read_last_good(config_store.ConfigFile(config_store.SITE, err.path)).config
        except config_store.LastGoodUnavailable:
            raise err from None


def operators() -> Notifications:
    """The operators' contacts from the site config (or its last-good copy while it is broken)."""
    return running_site_config().operators


def reconciliation() -> ReconciliationConfig:
    """The reconciliation settings from the site config (or its last-good copy while it is broken)."""
    return running_site_config().reconciliation
