"""Pipeline settings: committed defaults in config.yaml, overridden by `.env`, then by the environment.

Every setting has an environment name `PIPELINE_<FIELD>` (nested ones `PIPELINE_<GROUP>__<FIELD>`).
The names are a contract with operators; docs/configuration.md lists them all.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings import (
    SettingsError as SourceParseError,
)

from market_pipeline.core.errors import ConfigurationError
from market_pipeline.core.instruments import Instrument, InstrumentSpec, check_instrument_key
from market_pipeline.core.security.crypto import MasterKeyError, parse_master_key
from market_pipeline.vendors.registry import get_vendor, vendor_configs

DEFAULT_CONFIG_FILE = Path(__file__).with_name("config.yaml")
CONFIG_FILE_ENV = "PIPELINE_CONFIG_FILE"


class CheckSettings(BaseModel):
    """Asset-check thresholds (docs/configuration.md gives the reasoning for each default)."""

    model_config = ConfigDict(extra="forbid")

    clock_skew_p99_warn_ms: float = Field(500.0, gt=0)
    clock_skew_max_error_ms: float = Field(5000.0, gt=0)
    negative_skew_tolerance_ms: float = Field(1.0, ge=0)
    vendor_match_min_share: float = Field(0.99, ge=0, le=1)
    freshness_max_lag_hours: float = Field(30.0, gt=0)
    # Capture fidelity: both tops of book are sampled on this grid before the KS tests.
    fidelity_sample_interval_ms: int = Field(1000, gt=0)
    # Raw tables: share of exact duplicate rows above which duplicate_rows warns (0: any duplicate).
    duplicate_rows_max_share: float = Field(0.0, ge=0, le=1)
    # Raw tables: origin_time may lie this far outside the partition's UTC day before origin_time errs.
    origin_time_tolerance_minutes: float = Field(60.0, ge=0)


class ScheduleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily_hour_utc: int = Field(2, ge=0, le=23)  # the daily schedule materializes yesterday at this hour
    source_sensor_interval_seconds: int = Field(300, ge=30)
    # Whether the daily schedule and the new-day sensor start running without a click in the UI
    # (Dagster's default status; once toggled in the UI, the instance remembers the choice).
    default_status: Literal["running", "stopped"] = "stopped"


class AlertSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    webhook_timeout_seconds: float = Field(5.0, gt=0)
    webhook_retries: int = Field(3, ge=0)
    # Wait before the first retry; doubles for each further one.
    webhook_backoff_seconds: float = Field(1.0, ge=0)
    webserver_url: str = "http://127.0.0.1:3000"  # base of the run links in alerts
    sensor_interval_seconds: int = Field(30, ge=5)  # how often the failed-check alert sensor looks


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jsonl: bool = True  # OTLP-shaped JSON lines under $PIPELINE_DATA_DIR/metrics/
    export_interval_seconds: float = Field(60.0, gt=0)  # JSON lines are also written at each step's end
    prometheus_port: int | None = Field(None, ge=0, le=65535)  # off unless set; 0 picks a free port
    prometheus_host: str = "127.0.0.1"  # loopback only unless widened on purpose
    pushgateway_url: str | None = None  # off unless set
    min_free_disk_gb: float = Field(5.0, ge=0)  # `market-pipeline health` needs attention below this

    @field_validator("pushgateway_url")
    @classmethod
    def _check_pushgateway_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")  # no echo: URLs can carry credentials
        return value


class BookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    depth: int = Field(20, ge=1, le=20)  # vendor snapshots carry 20 levels
    sample_interval_ms: int = Field(100, ge=0)


class CliSettings(BaseModel):
    """How `market-pipeline run` and `demo` behave around other runs of the instance."""

    model_config = ConfigDict(extra="forbid")

    # Give up (exit 9) after waiting this long for a concurrency-pool slot another run holds.
    run_wait_timeout_seconds: float = Field(3600.0, gt=0)


class PipelineSettings(*vendor_configs(), BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    data_dir: Path = Path("./data")
    source: str = "synthetic"  # a name in vendors.registry.VENDORS
    start_date: dt.date = dt.date(2024, 1, 1)
    instruments: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["BINANCE:BTC-USDT", "BINANCE_FUTURES:BTC-USDT-PERP"]
    )
    instrument_specs: dict[str, InstrumentSpec] = Field(default_factory=dict)
    default_instrument: InstrumentSpec = InstrumentSpec(tick_size=Decimal("0.01"), lot_size=Decimal("0.00001"))
    partition_tolerance_minutes: int = Field(60, ge=0)
    # Processes per step for the per-instrument-day loops (raw import, book rebuild); None: os.cpu_count(),
    # 1: serial in the step's own process.
    workers: int | None = Field(None, ge=1)
    # Days per run of a backfill (UI, sensors): None: the whole range in one run (BackfillPolicy.single_run()),
    # N: runs of at most N days (BackfillPolicy.multi_run(N)), which Dagster can run side by side.
    backfill_days_per_run: int | None = Field(None, ge=1)

    alert_webhook_url: str | None = None
    alert_webhook_token: SecretStr | None = None
    master_key: SecretStr | None = None
    # Parquet modular encryption of every file under lake/ with a key derived from master_key.
    lake_encryption: Literal["off", "on"] = "off"

    book: BookSettings = Field(default_factory=BookSettings)
    checks: CheckSettings = Field(default_factory=CheckSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    cli: CliSettings = Field(default_factory=CliSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config_file = Path(os.environ.get(CONFIG_FILE_ENV) or DEFAULT_CONFIG_FILE)
        if not config_file.is_file():
            raise SettingsError([f"{CONFIG_FILE_ENV}: config file not found: {config_file}"])
        # Earlier sources win: explicit arguments, then the environment, then .env, then the YAML.
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=config_file),
        )

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        get_vendor(value)  # ValueError naming the known sources
        return value

    @field_validator("instruments", mode="before")
    @classmethod
    def _split_instruments(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):  # a JSON list, as pydantic-settings would take it
                try:
                    return json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"starts like a JSON list but is not valid JSON ({exc.msg})") from None
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("instruments")
    @classmethod
    def _check_instruments(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one instrument is required, e.g. BINANCE:BTC-USDT")
        for item in value:
            check_instrument_key(item)
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate instruments in {value}")
        return value

    @field_validator("instrument_specs")
    @classmethod
    def _check_spec_keys(cls, value: dict[str, InstrumentSpec]) -> dict[str, InstrumentSpec]:
        for item in value:
            check_instrument_key(item)
        return value

    @field_validator("alert_webhook_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            # No echo of the value: URLs can carry credentials.
            raise ValueError("must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _check_lake_encryption_key(self) -> PipelineSettings:
        if self.lake_encryption == "on":
            try:
                parse_master_key(self.master_key.get_secret_value() if self.master_key else None)
            except MasterKeyError as exc:
                raise ValueError(f"PIPELINE_LAKE_ENCRYPTION=on needs a valid PIPELINE_MASTER_KEY: {exc}") from None
        return self

    @model_validator(mode="after")
    def _check_source_needs(self) -> PipelineSettings:
        problems = get_vendor(self.source).problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @cached_property
    def universe(self) -> tuple[Instrument, ...]:
        """The configured instruments with their tick and lot sizes."""
        result = []
        for item in self.instruments:
            exchange, _, symbol = item.partition(":")
            spec = self.instrument_specs.get(item, self.default_instrument)
            result.append(Instrument(exchange=exchange, symbol=symbol, spec=spec))
        return tuple(result)

    @property
    def lake_dir(self) -> Path:
        return self.data_dir / "lake"

    @property
    def warehouse_path(self) -> Path:
        return self.data_dir / "warehouse.duckdb"


class SettingsError(ConfigurationError):
    """Invalid configuration; `problems` names each bad setting by its environment variable."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


def _env_name(loc: tuple[object, ...]) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    if not parts:
        return "configuration"
    head, *rest = parts
    return "PIPELINE_" + "__".join([head.upper(), *[p.upper() for p in rest]])


def _describe_source_error(exc: Exception) -> str:
    text = str(exc)
    start = text.find('field "')
    if start >= 0:
        field_name = text[start + 7 : text.find('"', start + 7)]
        return f"{_env_name((field_name,))}: cannot parse the value ({text})"
    return f"configuration: {text}"


def load_settings(**overrides: object) -> PipelineSettings:
    """Load and validate settings; raises SettingsError naming every bad setting."""
    try:
        return PipelineSettings(**overrides)
    except SourceParseError as exc:
        # pydantic-settings could not decode a value (e.g. malformed JSON in a nested variable).
        raise SettingsError([_describe_source_error(exc)]) from None
    except ValidationError as exc:
        problems = []
        for error in exc.errors(include_url=False):
            if not error["loc"] and error["type"] == "value_error":
                # A whole-settings check (a vendor's required setting): its message names the
                # variables itself, e.g. "PIPELINE_SOURCE=tardis needs PIPELINE_TARDIS_DIR".
                problems.extend(str(error["ctx"]["error"]).split("; "))
                continue
            name = _env_name(error["loc"])
            # Never echo the rejected value: it may be a secret.
            problems.append(f"{name}: {error['msg']}")
        raise SettingsError(problems) from None
