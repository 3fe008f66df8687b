"""Tardis.dev CSV files for tests: the real samples beside the repository, and the files of one
synthetic day for the default universe (module fixture `synthetic_tardis`)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.vendors.tardis.config import tardis_names
from market_pipeline_tests.support.cadence import TEST_SNAPSHOT_INTERVAL_MS
from market_pipeline_tests.support.project import REAL_DATA_DIR

REAL = REAL_DATA_DIR / "tardis"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"Tardis samples not found at {REAL}")

DAY = dt.date(2024, 3, 1)
SPOT = Instrument(
    exchange="BINANCE", symbol="BTC-USDT", spec=InstrumentSpec(tick_size=Decimal("0.01"), lot_size=Decimal("0.00001"))
)
SCALE = "0.02"


@pytest.fixture(scope="module")
def synthetic_tardis(tmp_path_factory) -> dict[str, object]:
    """Tardis files of one synthetic day for the default universe, and the truth paths."""
    import os

    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.synthetic.tardis_format import generate_tardis_day

    # The committed defaults (this module fixture runs outside the hermetic per-test environment).
    root = tmp_path_factory.mktemp("synthetic_tardis")
    saved, cwd = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PIPELINE_")}, os.getcwd()
    os.chdir(root)  # no stray .env
    try:
        settings = load_settings()
    finally:
        os.chdir(cwd)
        os.environ.update(saved)
    synthetic = settings.synthetic.model_copy(
        update={"scale": float(SCALE), "snapshot_interval_ms": TEST_SNAPSHOT_INTERVAL_MS}
    )
    days = {}
    for instrument in settings.universe:
        exchange_id, symbol = tardis_names(
            instrument.exchange, instrument.symbol, settings.tardis_exchanges, settings.tardis_symbols
        )
        days[instrument.key] = (
            instrument,
            generate_tardis_day(instrument, DAY, synthetic, root / "work", root / "tardis", exchange_id, symbol),
        )
    return {"dir": root / "tardis", "days": days}
