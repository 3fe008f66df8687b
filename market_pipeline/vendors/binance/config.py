"""Settings of the Binance capture source (`PIPELINE_CAPTURE_DIR`) and recorder (`PIPELINE_CAPTURE_ENCRYPT`)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel


class BinanceCaptureConfig(BaseModel):
    """The pipeline settings' fields for this vendor."""

    capture_dir: Path | None = None
    # `market-pipeline capture` encrypts its files with PIPELINE_MASTER_KEY, as with --encrypt.
    capture_encrypt: bool = False


def capture_problems(settings) -> list[str]:
    if settings.capture_dir is None:
        return ["PIPELINE_SOURCE=capture needs PIPELINE_CAPTURE_DIR"]
    return []
