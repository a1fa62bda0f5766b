"""ITF YAML configs: schema, loader and one readable error for every broken rule.

Each instrument team owns one file in ``include/itf_configs/`` (``exi.yaml``,
``emus.yaml``, ``emirs.yaml``). The file is read with ``yaml.safe_load`` and
validated by the pydantic models below; all problems are reported at once,
each naming the file, the field path and the rule.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from croniter import croniter
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from emm_sdc.core import naming, settings

#: Config file name for each instrument code.
CONFIG_FILES = {"exi": "exi.yaml", "emu": "emus.yaml", "emr": "emirs.yaml"}
_PREFIX = re.compile(r"^[a-z0-9][a-z0-9/_-]*/$")
_CONN_ID = re.compile(r"^[A-Za-z0-9_.-]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SCHEDULE_PRESETS = {"@hourly", "@daily", "@weekly", "@once", "@continuous"}
_IMAGE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(@sha256:[0-9a-f]{64})?$")


def schedule_field(presets: set[str]) -> Any:
    """The type of a YAML schedule field: a cron expression (UTC) or one of ``presets``."""

    def check(v: str) -> str:
        if v not in presets and not croniter.is_valid(v):
            raise ValueError(f"must be a cron expression or one of {sorted(presets)}")
        return v

    return Annotated[str, AfterValidator(check)]


#: An ITF YAML's schedule: a cron expression (UTC) or one of Airflow's presets.
Schedule = schedule_field(_SCHEDULE_PRESETS)


class ConfigError(Exception):
    """An ITF config file is unreadable or breaks the schema.

    ``problems`` holds ``(field path, message)`` pairs; ``str()`` lists them all
    with the file name.
    """

    #: What kind of file this is, as the message names it.
    kind = "ITF config"

    def __init__(self, path: Path | str, problems: list[tuple[str, str]]):
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {fld}: {msg}" for fld, msg in problems)
        super().__init__(f"invalid {self.kind} {self.path}: {len(problems)} problem(s)\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FilePatterns(_Strict):
    science: list[str] = Field(min_length=1)
    housekeeping: list[str] = Field(default_factory=list)


#: ``ingest.packet_sequence`` choices: what becomes of an L0/HK file whose CCSDS sequence counts have gaps,
#: repeats or out-of-order packets (the counts are recorded in the catalog in every case).
PACKET_SEQUENCE_RULES: dict[str, str] = {
    "quarantine": "quarantine the file, reason packet-sequence",
    "warn": "archive it with a warning in the log, the catalog and the run report",
    "ignore": "archive it, the counts recorded in the catalog only",
}


class IngestConfig(_Strict):
    inbox_prefix: str
    schedule: Schedule = "*/10 * * * *"
    sidecar_grace_minutes: int = Field(default=60, ge=0, le=7 * 24 * 60)
    wait_minutes: int = Field(default=60, ge=1, le=24 * 60)
    file_patterns: FilePatterns
    packet_sequence: Literal["quarantine", "warn", "ignore"] = "warn"

    @field_validator("packet_sequence", mode="before")
    @classmethod
    def _sequence_rule(cls, v: Any) -> Any:
        if not isinstance(v, str) or v not in PACKET_SEQUENCE_RULES:
            raise ValueError("must be quarantine, warn or ignore: what becomes of a file whose CCSDS sequence counts "
                             "have gaps, repeats or out-of-order packets ("
                             + "; ".join(f"{k}: {why}" for k, why in PACKET_SEQUENCE_RULES.items()) + ")")
        return v

    @field_validator("inbox_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _PREFIX.match(v) or ".." in v or "//" in v:
            raise ValueError(
                "must be a relative S3 prefix of lowercase letters, digits, '-', '_' and '/', ending in '/'"
            )
        return v


class AlertSettings(_Strict):
    """When operators and the ITF are told that data is late (Airflow deadline alerts and the delivery watch).

    ``processed_within_minutes``: an ingest or processing run of this instrument still unfinished this
    long after it was queued (a delivery not fully processed). ``no_delivery_hours``: nothing delivered
    for this long (``null``: never alert, e.g. during solar conjunction).
    """

    processed_within_minutes: float = Field(default=30, gt=0, le=7 * 24 * 60)
    no_delivery_hours: float | None = Field(default=24, gt=0, le=90 * 24)


class ProcessorInfo(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._+-]*$")


class BatchSettings(_Strict):
    """AWS Batch: one job queue per lane; job definitions are registered per ITF and environment."""

    job_queues: dict[Literal["daily", "reprocessing"], str]
    job_role_arn: str | None = None
    poll_seconds: int = Field(default=30, ge=1, le=600)
    #: Extra, non-secret environment for the job definition (credentials come from the job role).
    environment: dict[str, str] = Field(default_factory=dict)

    @field_validator("environment")
    @classmethod
    def _no_contract_overrides(cls, v: dict[str, str]) -> dict[str, str]:
        clash = sorted(k for k in v if k.startswith("EMM_"))
        if clash:
            raise ValueError(f"EMM_* variables belong to the SDC's contract and cannot be set here: {clash}")
        return v

    @field_validator("job_queues")
    @classmethod
    def _lanes(cls, v: dict[str, str]) -> dict[str, str]:
        missing = {"daily", "reprocessing"} - set(v)
        if missing:
            raise ValueError(f"needs a job queue for each lane; missing {sorted(missing)}")
        return v


class RunnerConfig(_Strict):
    """How the ITF processor runs. ``kind`` picks the runner; the rest serves every kind.

    * ``local``: ``command`` as a subprocess on the worker (``python`` = the worker's interpreter).
    * ``docker``: ``image`` through the docker provider's DockerOperator.
    * ``batch``: ``image`` as an AWS Batch job (amazon provider's BatchOperator), inputs and
      outputs staged through S3.

    ``image`` is the production image and must have been promoted (see the staging check);
    ``staging_image`` is an optional candidate.
    """

    kind: Literal["local", "docker", "batch"]
    command: list[str] | None = Field(default=None, min_length=1)
    image: str | None = None
    staging_image: str | None = None
    cpus: float = Field(default=1, gt=0, le=64)
    memory_mb: int = Field(default=2048, ge=64, le=512 * 1024)
    timeout_minutes: int = Field(default=60, ge=1, le=24 * 60)
    batch: BatchSettings | None = None

    @field_validator("image", "staging_image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        tagged = v is not None and ("@" in v or ":" in v.rsplit("/", 1)[-1])
        if v is not None and not (_IMAGE.match(v) and tagged):
            raise ValueError("must be an image reference with an explicit tag or digest, e.g. "
                             "registry.example.org/emm-exi:1.2.0 (no implicit ':latest')")
        return v

    @model_validator(mode="after")
    def _kind_needs(self) -> RunnerConfig:
        problems = []
        if self.kind == "local" and not self.command:
            problems.append("processing.runner.command: the local runner needs a command")
        if self.kind in ("docker", "batch") and not self.image:
            problems.append(f"processing.runner.image: the {self.kind} runner needs a production image")
        if self.kind == "batch" and self.batch is None:
            problems.append("processing.runner.batch: the batch runner needs job_queues (daily, reprocessing)")
        if self.staging_image is not None and self.staging_image == self.image:
            problems.append("processing.runner.staging_image: the candidate must differ from the production image")
        if problems:
            raise ValueError("\n".join(problems))
        return self


class StagingConfig(_Strict):
    """Staging check of a candidate image: reference inputs and comparison tolerances."""

    reference_inputs: list[str] = Field(default_factory=list)
    tolerances: dict[str, float | int | list[str]] = Field(default_factory=dict)

    @field_validator("tolerances")
    @classmethod
    def _tolerances(cls, v: dict[str, Any]) -> dict[str, Any]:
        from emm_sdc.core.compare import Tolerances

        Tolerances.from_dict(v)  # raises ValueError naming the bad key
        return v


class ChainStep(_Strict):
    level: str
    inputs: list[str] = Field(min_length=1)
    uses_spice: bool = False
    parameters: dict[str, str | int | float | bool] = Field(default_factory=dict)
    #: Which calibration set the step's jobs get: ``latest``, a set number, or None = none (docs/calibration.md).
    calibration: Literal["latest"] | int | None = None

    @field_validator("calibration", mode="before")
    @classmethod
    def _calibration(cls, v: Any) -> Any:
        if v is None or v == "latest" or (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            return v
        raise ValueError("must be 'latest', a calibration set number (1, 2, ...), or null for none")


class ProcessingConfig(_Strict):
    group_by: Literal["orbit", "day", "file"] = "orbit"
    product_version: int = Field(default=1, ge=0, le=99)
    processor: ProcessorInfo
    runner: RunnerConfig
    chain: list[ChainStep] = Field(min_length=1)


class ReleaseConfig(_Strict):
    """What the quarterly public release takes of this instrument (docs/releases.md).

    ``levels``: product levels released (quicklooks through ``include_quicklook``); empty releases
    nothing. ``min_pred_rec``: the worst SPICE kernel class a released product may have been made
    with (``p`` < ``r`` < ``f``); products made without kernels (``n``) are not held to it.
    """

    levels: list[str] = Field(default_factory=list)
    min_pred_rec: Literal["p", "r", "f"] = "r"
    include_quicklook: bool = False


class LanePools(_Strict):
    """Airflow pool sizes of the two processing lanes (pools ``emm_<inst>_daily`` and ``emm_<inst>_reprocessing``).

    Every processing task of a lane takes one slot of its pool, so a reprocessing campaign can never use
    more than ``reprocessing`` worker slots, whatever its size, and daily work keeps ``daily`` for itself.
    """

    daily: int = Field(default=4, ge=1, le=1024)
    reprocessing: int = Field(default=1, ge=1, le=1024)


class AirflowSettings(_Strict):
    retries: int = Field(default=2, ge=0, le=10)
    retry_delay_minutes: int = Field(default=5, ge=0, le=24 * 60)
    max_active_tasks: int = Field(default=8, ge=1, le=256)
    max_active_runs: int = Field(default=1, ge=1, le=32)
    pools: LanePools = LanePools()
    #: Reprocessing: runs of ``emm_<inst>_reprocess`` (one per day of mission time) active at once.
    reprocess_max_active_runs: int = Field(default=2, ge=1, le=32)


class Notifications(_Strict):
    emails: list[str] = Field(default_factory=list)
    smtp_conn_id: str | None = None
    slack_conn_id: str | None = None
    slack_channel: str | None = None

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not _EMAIL.match(e)]
        if bad:
            raise ValueError(f"not e-mail addresses: {bad}")
        return v

    @field_validator("smtp_conn_id", "slack_conn_id")
    @classmethod
    def _conn(cls, v: str | None) -> str | None:
        if v is not None and not _CONN_ID.match(v):
            raise ValueError("an Airflow connection id uses letters, digits, '_', '.', '-'")
        return v


class ItfConfig(_Strict):
    """One instrument team's configuration."""

    instrument: Literal["exi", "emu", "emr"]
    owner: str = Field(min_length=1)
    ingest: IngestConfig
    processing: ProcessingConfig
    staging: StagingConfig = StagingConfig()
    release: ReleaseConfig = ReleaseConfig()
    airflow: AirflowSettings = AirflowSettings()
    notifications: Notifications = Notifications()
    alerts: AlertSettings = AlertSettings()

    @model_validator(mode="after")
    def _cross_checks(self) -> ItfConfig:
        inst = self.instrument
        levels = naming.LEVELS[inst]
        problems: list[str] = []
        for kind, patterns in (("science", self.ingest.file_patterns.science),
                               ("housekeeping", self.ingest.file_patterns.housekeeping)):
            for pat in patterns:
                if not pat.startswith(f"emm_{inst}_"):
                    problems.append(
                        f"ingest.file_patterns.{kind}: pattern {pat!r} must start with 'emm_{inst}_' "
                        f"(an ITF only receives its own instrument's files)"
                    )
        made: set[str] = set()
        for i, step in enumerate(self.processing.chain):
            where = f"processing.chain.{i}"
            if step.level not in levels or step.level in naming.RAW_LEVELS:
                made_levels = [lv for lv in levels if lv not in naming.RAW_LEVELS]
                problems.append(
                    f"{where}.level: {step.level!r} is not a product level of {inst} "
                    f"(one of {', '.join(made_levels)})"
                )
            if step.level in made:
                problems.append(f"{where}.level: {step.level!r} appears twice in the chain")
            for j, src in enumerate(step.inputs):
                if src != "l0" and src not in made:
                    problems.append(
                        f"{where}.inputs.{j}: {src!r} must be 'l0' or a level made by an earlier "
                        f"chain step (so far: {sorted(made) or 'none'})"
                    )
            made.add(step.level)
        problems += self._release_problems()
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _release_problems(self) -> list[str]:
        inst, rel = self.instrument, self.release
        quicklooks = [lv for lv in naming.LEVELS[inst] if lv.endswith("ql")]
        science = [lv for lv in naming.LEVELS[inst] if lv not in naming.RAW_LEVELS and lv not in quicklooks]
        problems: list[str] = []
        for i, level in enumerate(rel.levels):
            if level in quicklooks:
                problems.append(f"release.levels.{i}: {level!r} is a quicklook level; set release.include_quicklook "
                                "instead")
            elif level not in science:
                problems.append(f"release.levels.{i}: {level!r} is not a releasable level of {inst} "
                                f"(one of {', '.join(science)})")
            elif level in rel.levels[:i]:
                problems.append(f"release.levels.{i}: {level!r} appears twice")
        if rel.include_quicklook and not quicklooks:
            problems.append(f"release.include_quicklook: {inst} has no quicklook level")
        return problems

    def release_levels(self) -> list[str]:
        """The levels the public release takes of this instrument (science levels, then quicklooks)."""
        quicklooks = [lv for lv in naming.LEVELS[self.instrument] if lv.endswith("ql")]
        return list(self.release.levels) + (quicklooks if self.release.include_quicklook else [])

    def classify(self, file_name: str) -> str | None:
        """'science', 'housekeeping' or None for a delivered file name."""
        pats = self.ingest.file_patterns
        for kind, patterns in (("science", pats.science), ("housekeeping", pats.housekeeping)):
            if any(fnmatch.fnmatchcase(file_name, p) for p in patterns):
                return kind
        return None


def _format_loc(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<top level>"


def validation_problems(err: ValidationError) -> list[tuple[str, str]]:
    """``(field path, message)`` pairs of a pydantic error, worded for the people who edit the YAML."""
    out: list[tuple[str, str]] = []
    for e in err.errors(include_url=False):
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "value_error" and msg.startswith(("ingest.", "processing.", "release.")):
            # cross-field rules carry their own field paths
            for line in msg.splitlines():
                fld, _, rest = line.partition(": ")
                out.append((fld, rest))
            continue
        shown = e.get("input")
        got = "" if e["type"] == "missing" or isinstance(shown, dict) else f" (got {shown!r})"
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check spelling; the schema allows no extra keys)"
        out.append((_format_loc(e["loc"]), msg + got))
    return out


def read_mapping(path: Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """``yaml.safe_load`` one settings file; raise ``error`` when it is unreadable, not YAML or not a mapping."""
    return mapping_from_text(read_text(path, error), path, error)


def read_text(path: Path, error: type[ConfigError] = ConfigError) -> str:
    """One settings file's text; ``error`` naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(path, [("<file>", f"cannot be read: {getattr(exc, 'strerror', None) or exc}")]) from exc


def mapping_from_text(text: str, path: Path, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """``yaml.safe_load`` the text of ``path``; raise ``error`` when it is not YAML or not a mapping."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise error(path, [(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from exc
    if not isinstance(raw, dict):
        raise error(path, [("<top level>", "must be a mapping of settings")])
    return raw


def load_config(path: Path | str) -> ItfConfig:
    """Read and validate one ITF YAML file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    return config_from_text(read_text(path), path)


def config_from_text(text: str, path: Path | str) -> ItfConfig:
    """Validate the text of an ITF YAML (``path`` names it in errors and must be its instrument's file name)."""
    path = Path(path)
    raw = mapping_from_text(text, path)
    try:
        cfg = ItfConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, validation_problems(exc)) from None
    expected = CONFIG_FILES[cfg.instrument]
    if path.name != expected:
        raise ConfigError(path, [("instrument", f"{cfg.instrument!r} belongs in {expected}, not {path.name}")])
    return cfg


def config_dir() -> Path:
    """Where the ITF configs live: ``$EMM_CONFIG_DIR`` or the project's ``include/itf_configs``."""
    env = os.environ.get("EMM_CONFIG_DIR")
    return Path(env) if env else settings.project_root() / "include" / "itf_configs"


def load_instrument(instrument: str) -> ItfConfig:
    """Load the config of one instrument code (``exi``, ``emu``, ``emr``)."""
    if instrument not in CONFIG_FILES:
        raise ValueError(f"unknown instrument {instrument!r}; expected one of {sorted(CONFIG_FILES)}")
    return load_config(config_dir() / CONFIG_FILES[instrument])
