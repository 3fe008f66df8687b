"""A bought Bybit day checked against a Bybit capture (issue 35 item 5): a synthetic Crypto Lake
Bybit day damaged on demand (dropped messages and trades) is the primary, its undamaged day
rendered as a Bybit capture (`bybit_capture`) the reference; `source_agreement` matches them by
Bybit's `seq` (the capture's `u` counts otherwise) and finds exactly the damage injected, by hour.

The smallest world that shows it: one instrument-day of BYBIT:BTC-USDT-PERP at scale 0.01, the
tests' cadence (a vendor snapshot, and so an `orderbook.1` quote of the capture, a minute), one
Dagster run of the raw, books and agreement assets.
"""

from __future__ import annotations

import datetime as dt

import pytest

from market_pipeline_tests.support.agreement_run import UNTOUCHED_BY_DROPS, counts_by_hour, hours, reference_agreement

pytestmark = pytest.mark.slow  # one Dagster run of one instrument-day against a capture

DAY = dt.date(2024, 3, 1)
KEY = "BYBIT:BTC-USDT-PERP"
FAULTS = {"dropped_messages": 3, "dropped_trades": 2}


@pytest.fixture(scope="module")
def bybit_agreement(tmp_path_factory):
    spec = {"tick_size": "0.1", "lot_size": "0.001"}
    return reference_agreement(tmp_path_factory.mktemp("bybit_agreement"), KEY, spec, "bybit_capture", FAULTS, DAY)


def test_the_bybit_capture_is_the_reference_matched_by_seq(bybit_agreement):
    run = bybit_agreement
    assert run.result.success
    (day,) = run.daily.rows(named=True)
    assert (day["instrument"], day["primary"], day["reference"], day["status"]) == (
        KEY,
        "synthetic",
        "bybit_capture",
        "update_id",
    )
    assert run.hourly.height == 24
    # Every message of the capture (its snapshot and its deltas) is a reference message.
    assert day["messages_reference"] == run.written.diffs + 1
    assert day["trades_reference"] == run.written.trades
    assert day["tickers"] == run.written.tickers > 0


def test_the_damage_is_found_exactly(bybit_agreement):
    run = bybit_agreement
    (day,) = run.daily.rows(named=True)
    dropped = run.faults["dropped_messages"]
    dropped_hours = counts_by_hour(DAY, [r["origin_time"] for r in dropped])
    assert day["messages_missing"] == len(dropped) == FAULTS["dropped_messages"]
    assert hours(run.hourly, "messages_missing") == dropped_hours
    assert day["messages_vendor"] == day["messages_reference"] - len(dropped)
    trades = run.faults["dropped_trades"]
    assert day["trades_missing"] == len(trades) == FAULTS["dropped_trades"]
    assert hours(run.hourly, "trades_missing") == counts_by_hour(DAY, [r["origin_time"] for r in trades])
    for column in UNTOUCHED_BY_DROPS:
        assert day[column] == 0, column
    # The vendor's book disagrees with the capture's orderbook.1 only in hours a message was dropped.
    assert set(hours(run.hourly, "tickers_differing")) <= set(dropped_hours)
    assert day["tickers_matched"] > 0 and day["book_instants"] > 0


def test_the_checks_fail_on_the_damage(bybit_agreement):
    verdicts = {
        e.check_name: e.passed
        for e in bybit_agreement.result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "source_agreement"
    }
    assert verdicts["messages_missing"] is False and verdicts["trades_missing"] is False
