"""Settings of the Binance capture source (`PIPELINE_CAPTURE_DIR`) and of the live recorder
(`PIPELINE_CAPTURE_ENCRYPT`, `PIPELINE_CAPTURE__*`, used by `market-pipeline capture`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from market_pipeline.vendors.base import Vendor, directory_problem


class LiveCaptureSettings(BaseModel):
    """How `market-pipeline capture` holds its connections to Binance."""

    model_config = ConfigDict(extra="forbid")

    # TLS 1.3 is the requirement; 1.2 only for an endpoint (a proxy, a mirror) that lacks 1.3.
    tls_min_version: Literal["1.3", "1.2"] = "1.3"
    # A connection that delivers no message for this long is closed and replaced (a silent feed
    # that still answers pings would otherwise stall the capture until its end).
    read_idle_timeout_seconds: float = Field(10.0, gt=0)
    ping_interval_seconds: float = Field(20.0, gt=0)  # keepalive pings sent by the recorder
    ping_timeout_seconds: float = Field(20.0, gt=0)  # no pong within this: the connection is dead
    open_timeout_seconds: float = Field(10.0, gt=0)  # TCP, TLS and the WebSocket handshake together


class BinanceCaptureConfig(BaseModel):
    """The pipeline settings' fields for this vendor."""

    capture_dir: Path | None = None
    # `market-pipeline capture` encrypts its files with PIPELINE_MASTER_KEY, as with --encrypt.
    capture_encrypt: bool = False
    capture: LiveCaptureSettings = Field(default_factory=LiveCaptureSettings)


def capture_vendor(name: str, description: str, build: Callable[[Any], Any], **fields) -> Vendor:
    """The registry entry of a source over the captures of PIPELINE_CAPTURE_DIR (Binance's `capture`,
    `okx_capture`, `kraken_capture`): the recorder's capture settings, the directory required and
    checked, described by its path; `fields` the vendor's own (`update_ids`, `ticker_time_ns`, ...)."""

    def problems(settings) -> list[str]:
        return [] if settings.capture_dir is not None else [f"PIPELINE_SOURCE={name} needs PIPELINE_CAPTURE_DIR"]

    return Vendor(
        name=name,
        description=description,
        build=build,
        config=BinanceCaptureConfig,  # the recorder's settings: PIPELINE_CAPTURE_DIR is shared by every exchange's
        problems=problems,
        environment=lambda settings: directory_problem("PIPELINE_CAPTURE_DIR", settings.capture_dir),
        describe=lambda settings: str(settings.capture_dir.resolve()) if settings.capture_dir else "?",
        **fields,
    )
