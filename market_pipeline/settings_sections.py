"""The nested groups of the pipeline settings (`PIPELINE_<GROUP>__<FIELD>`): checks, schedule, alerts,
metrics, books, bars, UI, CLI, sources and agreement. `settings.PipelineSettings` holds one of each."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import NoDecode

from market_pipeline.core.bars.intervals import BarInterval, parse_intervals
from market_pipeline.vendors.registry import get_vendor


def split_list(value: object) -> object:
    """A comma list or a JSON list given as text (an environment variable) as a list; others unchanged."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):  # a JSON list, as pydantic-settings would take it
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"starts like a JSON list but is not valid JSON ({exc.msg})") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class CheckSettings(BaseModel):
    """Asset-check thresholds (docs/configuration.md gives the reasoning for each default)."""

    model_config = ConfigDict(extra="forbid")

    clock_skew_p99_warn_ms: float = Field(500.0, gt=0)
    clock_skew_max_error_ms: float = Field(5000.0, gt=0)
    negative_skew_tolerance_ms: float = Field(1.0, ge=0)
    vendor_match_min_share: float = Field(0.99, ge=0, le=1)
    freshness_max_lag_hours: float = Field(30.0, gt=0)
    # Capture fidelity: both tops of book are sampled on this grid before the KS tests. The grid is
    # held whole while the books are rebuilt and the KS tests hold every sample: at 100 ms (864,000
    # grid times a day) that is about 120 MB, at 1 ms it would be 12 GB, hence the floor.
    fidelity_sample_interval_ms: int = Field(1000, ge=100)
    # Raw tables: share of exact duplicate rows above which duplicate_rows warns (0: any duplicate).
    duplicate_rows_max_share: float = Field(0.0, ge=0, le=1)
    # Raw tables: origin_time may lie this far outside the partition's UTC day before origin_time errs.
    origin_time_tolerance_minutes: float = Field(60.0, ge=0)
    # Books: share of a day's rebuilt rows written out of sync above which book_in_sync errs (blocking).
    max_unsynced_share: float = Field(0.01, ge=0, le=1)


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
    # urllib3 backoff factor: the first retry at once, then 2x, 4x, ... this, plus up to this much jitter.
    webhook_backoff_seconds: float = Field(1.0, ge=0)
    webserver_url: str = "http://127.0.0.1:3000"  # base of the run links in alerts
    sensor_interval_seconds: int = Field(30, ge=5)  # how often the failed-check alert sensor looks


class MetricsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    jsonl: bool = True  # OTLP-shaped JSON lines under $PIPELINE_DATA_DIR/metrics/
    export_interval_seconds: float = Field(60.0, gt=0)  # JSON lines are also written at each step's end
    prometheus_port: int | None = Field(None, ge=0, le=65535)  # off unless set; 0 picks a free port
    prometheus_host: str = "127.0.0.1"  # loopback only unless widened on purpose
    # Why /metrics listens beyond loopback (validate-env in prod refuses a wider host without one).
    prometheus_exposed_reason: str | None = None
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


class BarSettings(BaseModel):
    """The ohlcv_bars stage (docs/configuration.md, "Bars")."""

    model_config = ConfigDict(extra="forbid")

    # Bar lengths: minutes or hours that divide a day; a comma list (1m,5m,1h) or a JSON list.
    intervals: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["1m"])
    # Trades priced further than this outside the rebuilt touch (bps of the touch price) fail trades_within_touch.
    touch_tolerance_bps: float = Field(10.0, ge=0)

    @field_validator("intervals", mode="before")
    @classmethod
    def _split_intervals(cls, value: object) -> object:
        return split_list(value)

    @field_validator("intervals")
    @classmethod
    def _check_intervals(cls, value: list[str]) -> list[str]:
        return [interval.name for interval in parse_intervals(value)]  # canonical names, shortest first

    @property
    def bar_intervals(self) -> tuple[BarInterval, ...]:
        return parse_intervals(self.intervals)


class UiSettings(BaseModel):
    """Where `market-pipeline webserver` binds the Dagster UI, which has no authentication."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    # Why the UI listens beyond loopback (e.g. "in a container; the port is published on 127.0.0.1");
    # validate-env in prod refuses a wider host without one.
    exposed_reason: str | None = None


class CliSettings(BaseModel):
    """How `market-pipeline run` and `demo` behave around other runs of the instance."""

    model_config = ConfigDict(extra="forbid")

    # Give up (exit 9) after waiting this long for a concurrency-pool slot another run holds.
    run_wait_timeout_seconds: float = Field(3600.0, gt=0)


class SourcePair(BaseModel):
    """One instrument's sources (`PIPELINE_SOURCES`): the vendor whose books are published, and the
    one its days are cross-checked against (`source_agreement`), usually `capture`."""

    model_config = ConfigDict(extra="forbid")

    primary: str
    reference: str | None = None

    @field_validator("primary", "reference")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None:
            get_vendor(value)  # ValueError naming the known sources
        return value


SOURCES_EXAMPLE = """'{"BINANCE_FUTURES:BTC-USDT-PERP": {"primary": "tardis", "reference": "capture"}}'"""


class AgreementSettings(BaseModel):
    """The `source_agreement` asset and its checks (docs/configuration.md, "Primary and reference sources")."""

    model_config = ConfigDict(extra="forbid")

    top_levels: int = Field(5, ge=1, le=20)  # levels of each side compared between the two rebuilt books
    # Rows per read and per spilled hour part: what sets the comparison's memory.
    batch_rows: int = Field(200_000, ge=1_000)
    min_ticker_agreement_share: float = Field(0.999, ge=0, le=1)  # of the capture's bookTickers
    max_trades_missing: int = Field(0, ge=0)  # capture trades the vendor lacks
    max_messages_missing: int = Field(0, ge=0)  # capture messages (update ids) the vendor lacks
    blocking: bool = False  # whether a failed agreement check stops what depends on source_agreement
