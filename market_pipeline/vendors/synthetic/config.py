"""Settings of the synthetic source (`PIPELINE_SYNTHETIC__*`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class FaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dropped_messages: int = Field(0, ge=0)
    clock_skew_episodes: int = Field(0, ge=0)
    off_grid_prices: int = Field(0, ge=0)
    float_noise_prices: int = Field(0, ge=0)
    duplicated_rows: int = Field(0, ge=0)
    out_of_order_rows: int = Field(0, ge=0)
    truncated_file: bool = False
    days: list[dt.date] = Field(default_factory=list)

    def applies_to(self, day: dt.date) -> bool:
        return not self.days or day in self.days


class SyntheticSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Literal["small", "realistic"] = "small"
    seed: int = 20240101
    # Multiplies the profile's message count; tests and quick looks use e.g. 0.02 (snapshots stay 100 ms).
    scale: float = Field(1.0, gt=0, le=4)
    faults: FaultSettings = Field(default_factory=FaultSettings)


class SyntheticConfig(BaseModel):
    """The pipeline settings' fields for this vendor."""

    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
