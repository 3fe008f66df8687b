"""A synthetic day as a vendor copy and as a golden-sample capture of the same market.

The vendor copy is the synthetic lake with the configured faults (drop messages or trades, delay a
span by a clock-skew episode, stale snapshots); the capture is rendered from the same day generated
without faults (the market does not depend on the faults: only their picks do), so the two differ
by exactly the damage the vendor day's manifest records. `source_agreement` is tested on this.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from market_pipeline.core.instruments import Instrument
from market_pipeline.vendors.synthetic.bybit_capture_writer import BybitLines
from market_pipeline.vendors.synthetic.capture_writer import BinanceLines, CaptureDay, write_capture_day
from market_pipeline.vendors.synthetic.config import FaultSettings, SyntheticSettings
from market_pipeline.vendors.synthetic.generate import generate_day
from market_pipeline.vendors.synthetic.kraken_capture_writer import KrakenLines
from market_pipeline.vendors.synthetic.okx_capture_writer import OkxLines

# The exchange whose capture format renders an instrument, by its lake exchange (Binance's otherwise).
RENDERERS: dict[str, type[BinanceLines]] = {"OKX": OkxLines, "BYBIT": BybitLines, "KRAKEN": KrakenLines}


def write_reference_capture(
    settings: SyntheticSettings, instrument: Instrument, day: dt.date, work_root: Path, capture_dir: Path
) -> CaptureDay:
    """Generate the undamaged day under `work_root` and write it as a capture of its exchange (OKX's
    for OKX instruments, Bybit's for Bybit's, Kraken's for Kraken's, Binance's otherwise) in
    `capture_dir`."""
    clean = settings.model_copy(update={"faults": FaultSettings()})
    generate_day(instrument, day, clean, work_root, scale=settings.scale)
    renderer = RENDERERS.get(instrument.exchange, BinanceLines)
    return write_capture_day(work_root, instrument, day, capture_dir, renderer=renderer)
