"""Settings of the Binance capture source (`PIPELINE_CAPTURE_DIR`) and of the live recorder
(`PIPELINE_CAPTURE_ENCRYPT`, `PIPELINE_CAPTURE__*`, used by `market-pipeline capture`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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


def capture_problems(settings) -> list[str]:
    if settings.capture_dir is None:
        return ["PIPELINE_SOURCE=capture needs PIPELINE_CAPTURE_DIR"]
    return []
