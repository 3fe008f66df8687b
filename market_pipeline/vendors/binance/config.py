"""Settings of the Binance capture source (`PIPELINE_CAPTURE_DIR`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class BinanceCaptureConfig(BaseModel):
    """The pipeline settings' fields for this vendor."""

    capture_dir: Path | None = None


def capture_problems(settings) -> list[str]:
    if settings.capture_dir is None:
        return ["PIPELINE_SOURCE=capture needs PIPELINE_CAPTURE_DIR"]
    return []
