"""The synthetic source: generates vendor-like days on demand, then serves them like a local lake.

Generated days are cached under the data directory and regenerated only when the generator's
settings for that day change, so the three raw tables of a day come from one consistent run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.lake.cache_lock import cache_lock, day_lock_path
from market_pipeline.core.lake.files import write_text_atomic
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.core.telemetry import progress
from market_pipeline.vendors.base import LAKE_TABLES
from market_pipeline.vendors.crypto_lake.local import LocalLakeSource
from market_pipeline.vendors.lake_shaped import LakeShapedBooks
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline.vendors.synthetic.generate import GENERATOR_VERSION, generate_day


def ground_truth_dir(root: Path, instrument: Instrument, day: dt.date) -> Path:
    return partition_dir(root / "_ground_truth", "synthetic", instrument.exchange, instrument.symbol, day)


def _fingerprint(settings: SyntheticSettings, instrument: Instrument, day: dt.date) -> str:
    faults = settings.faults.model_dump(mode="json") if settings.faults.applies_to(day) else None
    payload = {
        "generator_version": GENERATOR_VERSION,
        "seed": settings.seed,
        "profile": settings.profile,
        "scale": settings.scale,
        "snapshot_interval_ms": settings.snapshot_interval_ms,
        "faults": faults,
        "tick_size": str(instrument.tick_size),
        "lot_size": str(instrument.lot_size),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class SyntheticSource(LakeShapedBooks):
    name = "synthetic"
    tables = LAKE_TABLES

    def __init__(self, settings: SyntheticSettings, root: Path):
        self.settings = settings
        self.root = root
        self._lake = LocalLakeSource(root, name=self.name)

    def ensure_day(self, instrument: Instrument, day: dt.date) -> Path:
        """Generate the day unless an identical generation is cached; returns its ground-truth dir."""
        truth_dir = ground_truth_dir(self.root, instrument, day)
        stamp = truth_dir / "params.sha256"
        wanted = _fingerprint(self.settings, instrument, day)
        generating = f"generating the synthetic day {day} {instrument.key}"
        # Two raw assets of one run may ask for the same day from separate processes.
        with cache_lock(day_lock_path(self.root, instrument, day), generating):
            if not (stamp.is_file() and stamp.read_text() == wanted):
                with progress.task(generating):
                    generate_day(instrument, day, self.settings, self.root, scale=self.settings.scale)
                write_text_atomic(stamp, wanted)
        return truth_dir

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        self.ensure_day(instrument, day)
        return self._lake.fetch(table, instrument, day)

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        return self._lake.origin(table, instrument, day, path)

    def available_days(self, table: str, instrument: Instrument) -> None:
        return None  # any day can be generated: there are no new days to notice

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        # Messages carry sequence numbers that grow by exactly one, so a jump proves a gap.
        return "contiguous"
