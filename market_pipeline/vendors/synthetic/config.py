"""Settings of the synthetic source (`PIPELINE_SYNTHETIC__*`)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from market_pipeline.vendors.synthetic.cadence import DAY_NS, check_snapshot_interval

ADDED_FAULTS = ("dropped_trades", "stale_snapshots")


class FaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dropped_messages: int = Field(0, ge=0)
    clock_skew_episodes: int = Field(0, ge=0)
    off_grid_prices: int = Field(0, ge=0)
    float_noise_prices: int = Field(0, ge=0)
    duplicated_rows: int = Field(0, ge=0)
    out_of_order_rows: int = Field(0, ge=0)
    truncated_file: bool = False
    # Damage a vendor copy is checked for against a capture of the same day (source_agreement).
    dropped_trades: int = Field(0, ge=0)  # trades left out of the trades table
    stale_snapshots: int = Field(0, ge=0)  # book snapshots showing the levels of the snapshot before
    days: list[dt.date] = Field(default_factory=list)

    def digest_json(self) -> str:
        """The settings as hashed into the fault picks. Faults added later are left out while off,
        so the days of earlier settings keep their picks (and their bytes)."""
        return self.model_dump_json(exclude={name for name in ADDED_FAULTS if not getattr(self, name)})

    def applies_to(self, day: dt.date) -> bool:
        return not self.days or day in self.days


class SyntheticSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Literal["small", "realistic"] = "small"
    seed: int = 20240101
    # Multiplies the profile's message count; tests and quick looks use e.g. 0.02.
    scale: float = Field(1.0, gt=0, le=4)
    # The vendor's book snapshot cadence, a multiple of 100 ms that divides the day. The messages do
    # not depend on it: a 1 s day's snapshots are every tenth of the 100 ms day's. Tests use coarse
    # cadences (a day at 100 ms has 864,000 snapshots whatever the scale).
    snapshot_interval_ms: int = 100
    faults: FaultSettings = Field(default_factory=FaultSettings)

    @field_validator("snapshot_interval_ms")
    @classmethod
    def _divides_the_day(cls, value: int) -> int:
        check_snapshot_interval(value * 1_000_000)
        return value

    @property
    def snapshots_per_day(self) -> int:
        return DAY_NS // (self.snapshot_interval_ms * 1_000_000)


class SyntheticConfig(BaseModel):
    """The pipeline settings' fields for this vendor."""

    synthetic: SyntheticSettings = Field(default_factory=SyntheticSettings)
