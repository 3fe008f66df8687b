"""`market-pipeline export hftbacktest` (issue 27): the files replay in hftbacktest itself, and its best
bid and ask at every sampled instant of our books (the synced interval rows) equal ours; the second
day starts from the first day's end-of-day book; the day that failed a blocking check is not written;
the batch size changes nothing."""

from __future__ import annotations

import json
import subprocess
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from market_pipeline.core.read.hftbacktest_export import export_day
from market_pipeline.core.read.partitions import Instrument
from market_pipeline.core.read.verdicts import NoRunHistory
from market_pipeline.lake import Lake
from market_pipeline_tests.support.cadence import TEST_CADENCE
from market_pipeline_tests.support.project import VENV_BIN, subprocess_env
from market_pipeline_tests.support.research_lake import RESEARCH_DAYS, RESEARCH_INSTRUMENT

pytestmark = pytest.mark.graph  # the research lake: `market-pipeline run` over three days

hftbacktest = pytest.importorskip("hftbacktest")  # the dev extra

GOOD, BAD = RESEARCH_DAYS[:2], RESEARCH_DAYS[2]


@pytest.fixture(scope="module")
def exported(research_lake, tmp_path_factory):
    out = tmp_path_factory.mktemp("hftbacktest")
    env = {name: value for name, value in subprocess_env().items() if not name.startswith("PIPELINE_")}
    env.update(
        DAGSTER_HOME=str(research_lake["home"]),
        PIPELINE_DATA_DIR=str(research_lake["data"]),
        PIPELINE_INSTRUMENTS=RESEARCH_INSTRUMENT,
        **TEST_CADENCE,
    )
    proc = subprocess.run(
        [
            str(VENV_BIN / "market-pipeline"),
            "export",
            "hftbacktest",
            "--instrument",
            RESEARCH_INSTRUMENT,
            "--start",
            GOOD[0].isoformat(),
            "--end",
            BAD.isoformat(),
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def _replay_best_quotes(path, tick: Decimal, lot: Decimal, instants: list[int]) -> list[tuple[int, int]]:
    """hftbacktest's best bid and ask (in ticks) at each instant, replaying the file."""
    from hftbacktest import BacktestAsset, HashMapMarketDepthBacktest

    asset = (
        BacktestAsset()
        .data([str(path)])
        .linear_asset(1.0)
        .constant_order_latency(0, 0)
        .risk_adverse_queue_model()
        .no_partial_fill_exchange()
        .trading_value_fee_model(0.0, 0.0)
        .tick_size(float(tick))
        .lot_size(float(lot))
        .last_trades_capacity(0)
    )
    hbt = HashMapMarketDepthBacktest([asset])
    hbt.elapse(0)  # starts the clock at the first event
    quotes = []
    for instant in instants:
        if instant > hbt.current_timestamp:
            hbt.elapse(instant - hbt.current_timestamp)
        depth = hbt.depth(0)
        quotes.append((round(depth.best_bid / float(tick)), round(depth.best_ask / float(tick))))
    hbt.close()
    return quotes


def test_the_failed_day_is_not_exported_and_says_why(exported):
    out, proc = exported
    manifest = json.loads((out / "BINANCE_BTC-USDT.json").read_text())
    assert manifest["files"] == [f"BINANCE_BTC-USDT_{day}.npz" for day in GOOD]
    assert manifest["tick_size"] == "0.01" and manifest["lot_size"] == "0.000001"
    assert f"{BAD}: no file" in proc.stderr and "raw_book_deltas price_precision" in proc.stderr
    assert not (out / f"BINANCE_BTC-USDT_{BAD}.npz").exists()


@pytest.mark.parametrize("day", GOOD)
def test_hftbacktest_best_bid_and_ask_equal_ours_at_every_sampled_instant(exported, research_lake, day):
    from hftbacktest.data.validation import validate_event_order

    out, _ = exported
    path = out / f"BINANCE_BTC-USDT_{day}.npz"
    events = np.load(path)["data"]
    validate_event_order(events)  # exchange and local events each in their own time order
    # Synthetic sequence numbers restart each day, so neither the rebuild nor the export continues from the
    # previous day's book here: both start from the day's first messages.
    ours = (
        Lake(research_lake["data"], NoRunHistory())  # the export test above judged the days
        .books(RESEARCH_INSTRUMENT, day, columns=["received_time", "trigger", "synced", "bid_0_price", "ask_0_price"])
        .filter(pl.col("trigger") == "interval", pl.col("synced"))
        .collect()
    )
    assert ours.height > 1000
    theirs = _replay_best_quotes(path, Decimal("0.01"), Decimal("0.000001"), ours["received_time"].to_list())
    expected = [(int(b * 100), int(a * 100)) for b, a in ours.select("bid_0_price", "ask_0_price").iter_rows()]
    assert theirs == expected


def test_the_batch_size_changes_nothing(exported, research_lake, tmp_path):
    out, _ = exported
    small = export_day(research_lake["data"] / "lake", Instrument("BINANCE", "BTC-USDT"), GOOD[1], tmp_path, 997)
    assert np.array_equal(np.load(small.path)["data"], np.load(out / f"BINANCE_BTC-USDT_{GOOD[1]}.npz")["data"])
