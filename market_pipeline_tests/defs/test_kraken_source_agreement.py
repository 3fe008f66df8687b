"""A bought Kraken day checked against a Kraken capture (issue 35 item 5): a synthetic Crypto Lake
Kraken day damaged on demand (dropped messages and trades) is the primary, its undamaged day
rendered as a Kraken v2 capture at depth 10 (`kraken_capture`) the reference. Kraken numbers no
book message, so `source_agreement` matches them by exchange time (as a Tardis day): the dropped
trades are found exactly by trade id and hour, and the dropped messages by Kraken's exchange time
(µs) exactly where the capture has them (a depth-10 subscriber gets no message for an update
below its view), one way (the vendor's messages the capture lacks are not counted: null), and
nothing else differs.

The smallest world that shows it: one instrument-day of KRAKEN:BTC-USD at scale 0.01, the tests'
cadence (a vendor snapshot and a sampled book a minute), one Dagster run of the raw, books and
agreement assets.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json

import polars as pl
import pytest

from market_pipeline.core.lake.paths import PARTITION_FILE, raw_partition_dir
from market_pipeline_tests.support.agreement_run import counts_by_hour, hours, reference_agreement

pytestmark = pytest.mark.slow  # one Dagster run of one instrument-day against a capture

DAY = dt.date(2024, 3, 1)
KEY = "KRAKEN:BTC-USD"
FAULTS = {"dropped_messages": 3, "dropped_trades": 2}


@pytest.fixture(scope="module")
def kraken_agreement(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kraken_agreement")
    spec = {"tick_size": "0.1", "lot_size": "0.00000001"}
    run = reference_agreement(tmp, KEY, spec, "kraken_capture", FAULTS, DAY)
    return run.result, run.daily, run.hourly, run.faults, run.written, tmp, run.settings


def test_the_kraken_capture_is_the_reference_matched_by_exchange_time(kraken_agreement):
    result, daily, hourly, _, written, tmp, _ = kraken_agreement
    assert result.success
    # Every row of the capture's tables was imported: none set aside by the raw checks.
    assert not list((tmp / "data" / "lake").rglob("rejected_rows.parquet"))
    (day,) = daily.rows(named=True)
    assert (day["instrument"], day["primary"], day["reference"], day["status"]) == (
        KEY,
        "synthetic",
        "kraken_capture",
        "exchange_time",
    )
    assert day.get("note") is None
    assert hourly.height == 24
    assert day["trades_reference"] == written.trades > 0
    assert day["tickers"] == written.tickers == 0  # Kraken's capture has no top-of-book stream
    # The capture's update messages (not its snapshot) are the reference's messages.
    assert day["messages_reference"] == len(_update_instants(tmp))
    for column in ("messages_vendor", "messages_extra", "delayed_messages", "snapshots_compared"):
        assert day[column] is None, column  # not measurable by exchange time
    assert day["book_instants"] > 0


def _update_instants(tmp) -> list[int]:
    """The exchange times (ns, µs resolution) of the capture's `book` updates, from its files."""
    instants = []
    for path in sorted((tmp / "captures").glob("kraken_*.gz")):
        with gzip.open(path, "rt") as lines:
            for line in lines:
                message = json.loads(line.split(" ", 1)[1])
                if message.get("channel") == "book" and message["type"] == "update":
                    stamp = dt.datetime.fromisoformat(message["data"][0]["timestamp"])
                    instants.append(int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1_000)
    return instants


def test_the_damage_is_found_exactly(kraken_agreement):
    _, daily, hourly, faults, _, tmp, _ = kraken_agreement
    (day,) = daily.rows(named=True)
    # The dropped messages a depth-10 subscriber saw (the capture has a message at their instant)
    # and no other vendor message shares: exactly those are missing, in their hours.
    captured = set(_update_instants(tmp))
    lake = tmp / "data" / "lake"
    vendor = pl.read_parquet(raw_partition_dir(lake, "book_delta_v2", "KRAKEN", "BTC-USD", DAY) / PARTITION_FILE)
    vendor_instants = set((vendor["origin_time"] // 1_000 * 1_000).to_list())
    dropped = faults["dropped_messages"]
    seen = [r["origin_time"] for r in dropped if r["origin_time"] // 1_000 * 1_000 in captured]
    assert seen and not {t // 1_000 * 1_000 for t in seen} & vendor_instants  # the world shows it
    assert day["messages_missing"] == len(seen) == FAULTS["dropped_messages"]
    assert hours(hourly, "messages_missing") == counts_by_hour(DAY, seen)
    trades = faults["dropped_trades"]
    assert day["trades_missing"] == len(trades) == FAULTS["dropped_trades"]
    assert hours(hourly, "trades_missing") == counts_by_hour(DAY, [r["origin_time"] for r in trades])
    assert day["trades_vendor"] == day["trades_reference"] - len(trades)
    for column in ("trades_extra", "trades_price_differs", "trades_size_differs", "trades_side_differs"):
        assert day[column] == 0, column
    # The two rebuilt books differ only in hours a message was dropped from the vendor's day.
    dropped_hours = set(counts_by_hour(DAY, [r["origin_time"] for r in faults["dropped_messages"]]))
    assert set(hours(hourly, "book_instants_differing")) <= dropped_hours
    # In this world the vendor's next snapshot repairs its book before the next sample: the capture's
    # book (Kraken's view of depth 10, truncation written out) equals it at every common instant.
    assert day["book_instants_differing"] == 0
    assert day["book_instants_unsynced"] == 0


def test_the_checks_fail_on_the_damage(kraken_agreement):
    result, *_ = kraken_agreement
    verdicts = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key.to_user_string() == "source_agreement"
    }
    assert verdicts["trades_missing"] is False and verdicts["messages_missing"] is False


def test_a_vendor_whose_times_are_not_the_messages_is_not_counted_and_says_so(kraken_agreement, tmp_path):
    """A primary whose `origin_time` is not Kraken's message time (here the vendor's day moved by
    a second: no instant in common with the capture's messages): not 'every message missing' but
    the messages not counted (null), the note saying why, and the messages check warning with it."""
    import dataclasses

    from market_pipeline.core.lake.paths import reference_lake_dir
    from market_pipeline.core.quality.agreement import compare_day, day_summary
    from market_pipeline.defs.agreement.assets import agreement_inputs
    from market_pipeline.defs.agreement.checks import CHECKS
    from market_pipeline.defs.common.checks import WARN

    *_, settings = kraken_agreement
    (instrument,) = settings.universe
    inputs = agreement_inputs(
        settings, "kraken_capture", reference_lake_dir(settings.lake_dir, "kraken_capture"), instrument, DAY
    )
    moved = tmp_path / "vendor_deltas.parquet"
    pl.read_parquet(inputs.vendor_deltas).with_columns(pl.col("origin_time") + 1_000_000_000).write_parquet(moved)
    compared = compare_day(
        dataclasses.replace(inputs, vendor_deltas=moved),
        tmp_path / "scratch",
        settings.agreement.batch_rows,
        settings.agreement.top_levels,
    )
    assert compared.status == "exchange_time"
    assert "origin_time is not the exchange's message time" in compared.note
    for column in ("messages_reference", "messages_missing"):
        assert compared.hourly[column].null_count() == 24, column
    row = {"status": compared.status, "note": compared.note, **day_summary(compared.hourly)}
    (judge,) = [judge for name, _, judge in CHECKS if name == "messages_missing"]
    finding = judge(settings, row)
    assert finding.severity == WARN and compared.note in finding.summary
