"""The book kernel against plain references: dict books, synthetic ground truth, real captures."""

from __future__ import annotations

import datetime as dt
import gzip
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.vendors.binance.verify import verify_capture
from market_pipeline.core.book.fixed_point import decimal_array, to_steps
from market_pipeline.core.book.ladder import new_book, top_levels
from market_pipeline.core.book.rebuild import Grid, rebuild_day
from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_SCHEMA
from market_pipeline.settings import Instrument, InstrumentSpec, SyntheticSettings

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared captures not found at {REAL}")

# One row: (is_bid, tick offset from 1,000,000, lots); lots 0 deletes (often a level we do not hold).
rows = st.lists(
    st.tuples(st.booleans(), st.integers(-3000, 3000), st.sampled_from([0, 0, 1, 2, 5, 1000])),
    min_size=1, max_size=300,
)


def reference_top(stream, depth):
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for is_bid, offset, lots in stream:
        tick = 1_000_000 + offset
        book = bids if is_bid else asks
        if lots == 0:
            book.pop(tick, None)
        else:
            book[tick] = lots
    top_b = sorted(bids.items(), reverse=True)[:depth]
    top_a = sorted(asks.items())[:depth]
    return top_b, top_a


@settings(max_examples=300, deadline=None)
@given(rows, st.integers(1, 4), st.sampled_from([64, 1 << 14]))
def test_kernel_matches_dict_reference(stream, rows_per_message, window):
    """Random streams with deletes of absent levels and moves beyond a small window."""
    n = len(stream)
    is_bid = np.array([r[0] for r in stream], dtype=np.bool_)
    tick = np.array([1_000_000 + r[1] for r in stream], dtype=np.int64)
    lots = np.array([r[2] for r in stream], dtype=np.int64)
    seq = np.arange(n, dtype=np.int64) // rows_per_message
    recv = seq * 1000
    bid, ask, state = new_book(window)
    bests = np.zeros((n, 2), np.int64)
    lr.apply_deltas(recv, seq, is_bid, tick, lots, bid, ask, state, bests)
    bt, bl, at, al = (np.zeros(20, np.int64) for _ in range(4))
    top_levels(bid, ask, state, 20, bt, bl, at, al)
    # A small window drops levels far from the touch (counted); compare only when none was lost.
    if state[5] == 0 and state[6] == 0:
        ref_b, ref_a = reference_top(stream, 20)
        assert [(int(t), int(q)) for t, q in zip(bt, bl) if t >= 0] == ref_b
        assert [(int(t), int(q)) for t, q in zip(at, al) if t >= 0] == ref_a
    else:
        assert window == 64  # a 2^14 window covers the whole ±3000 range: nothing may be dropped


@settings(deadline=None)  # the first example pays numba's cache load
@given(st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2), min_size=1, max_size=50))
def test_fixed_point_round_trip_is_exact(prices):
    values = np.array([float(p) for p in prices])
    steps, off = to_steps(values, 0.01, np.empty(4, np.int64), 4)
    assert off == 0
    back = decimal_array(steps, Decimal("0.01")).to_pylist()  # tick 0.01: steps are the unscaled value
    assert back == prices


def test_off_grid_values_are_counted_with_their_rows():
    values = np.array([100.01, 100.015, 100.02 + 1e-12, 100.0037])
    report = np.empty(4, np.int64)
    steps, off = to_steps(values, 0.01, report, 4)
    assert off == 2 and list(report[:2]) == [1, 3]
    assert list(steps[[0, 2]]) == [10001, 10002]  # float noise is not an event


def test_crossed_book_is_resolved_newest_side_wins():
    # Message 1 builds bid 100 and ask 101; message 2 posts a bid at 102 (through the ask).
    recv = np.array([0, 0, 1], np.int64)
    seq = np.array([1, 1, 2], np.int64)
    is_bid = np.array([True, False, True])
    tick = np.array([100, 101, 102], np.int64)
    lot = np.array([5, 5, 3], np.int64)
    bid, ask, state = new_book(1024)
    counters = np.zeros(lr.N_COUNTERS, np.int64)
    hourly = np.zeros((24, lr.N_HOURLY), np.int64)
    rs = lr.new_replay_state(0, True, 0, True)
    out = (np.empty(8, np.int64), np.empty(8, np.int64), np.empty(8, np.int64), np.empty(8, np.bool_),
           np.empty(8, np.int8), *(np.empty((8, 2), np.int64) for _ in range(4)))
    empty2 = np.empty((0, 20), np.int64)
    diag = tuple(np.empty(0, t) for t in (np.bool_, np.int64, np.int64, np.int64, np.bool_, np.int64))
    work = tuple(np.empty(20, np.int64) for _ in range(4))
    i, k, n_out = lr.replay_lake_batch(
        recv, recv, seq, is_bid, tick, lot,
        np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64), empty2, empty2, empty2, empty2,
        bid, ask, state, rs, counters, hourly, out, diag, work, 2, True, True,
    )
    assert (i, n_out) == (3, 2)
    assert counters[lr.C_CROSSED] == 1 and counters[lr.C_CROSSED_LEVELS_REMOVED] == 1
    assert out[5][1, 0] == 102 and out[7][1, 0] == -1  # best bid 102, ask side emptied


@pytest.fixture(scope="module")
def synthetic_day(tmp_path_factory):
    from market_pipeline.vendors.synthetic.generate import generate_day

    root = tmp_path_factory.mktemp("synthetic")
    instrument = Instrument(
        exchange="BINANCE", symbol="BTC-USDT",
        spec=InstrumentSpec(tick_size=Decimal("0.01"), lot_size=Decimal("0.00001")),
    )
    faults = SyntheticSettings.model_validate({"faults": {"dropped_messages": 3, "off_grid_prices": 2}})
    day = dt.date(2024, 3, 1)
    return instrument, day, root, generate_day(instrument, day, faults, root, scale=0.05)


def test_rebuild_equals_synthetic_ground_truth_and_repairs_gaps(synthetic_day):
    instrument, day, root, generated = synthetic_day
    out = root / "books.parquet"
    result = rebuild_day(
        generated.files["book_delta_v2"], generated.files["book"], out, None, root / "ckpt.parquet",
        Grid(instrument.tick_size, instrument.lot_size), day, contiguous=True,
    )
    c = result.counters
    assert c["sequence_gaps"] == 3 and c["missing_sequence_numbers"] >= 3
    # Every detected gap is repaired: the sequence gaps, and stale deeper levels a dropped message
    # left behind that surface in the top 20 later (divergences from the vendor snapshot).
    assert c["fills"] == c["sequence_gaps"] + c["divergences"], c
    assert result.precision_events == 2
    books = pl.read_parquet(out).filter(pl.col("trigger") == "snapshot")
    truth = pl.read_parquet(generated.truth_book_path)
    assert books.height == truth.height == c["vendor_snapshots"]
    # Every snapshot row after repair equals the true book, to the last lot.
    for side in ("bid", "ask"):
        for i in range(20):
            for field in ("price", "size"):
                name = f"{side}_{i}_{field}"
                ours = books[name].cast(pl.Float64).fill_null(-1.0).to_numpy()
                want = truth[name].fill_null(-1.0).to_numpy()
                assert np.array_equal(ours, want), name
    assert books["synced"].all()
    # Exact decimals of the tick's and the lot's scale, stored as INT64 Parquet decimals.
    stored = pq.ParquetFile(out)
    assert stored.schema_arrow.field("bid_0_price").type == pa.decimal64(18, 2)
    assert stored.schema_arrow.field("ask_19_size").type == pa.decimal64(18, 5)
    assert stored.schema.column(stored.schema.names.index("bid_0_price")).physical_type == "INT64"


def _ns(day: dt.date, seconds: float) -> int:
    return int(dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp() + seconds) * 1_000_000_000


def test_interval_samples_continue_to_midnight_in_time_order(synthetic_day):
    """Deltas stop at noon; snapshots go on: samples and snapshot rows interleave up to midnight."""
    instrument, day, root, generated = synthetic_day
    noon = _ns(day, 12 * 3600)
    cut = root / "deltas_until_noon.parquet"
    pl.read_parquet(generated.files["book_delta_v2"]).filter(pl.col("received_time") < noon).write_parquet(cut)
    out = root / "books_until_noon.parquet"
    result = rebuild_day(
        cut, generated.files["book"], out, None, root / "ckpt_noon.parquet",
        Grid(instrument.tick_size, instrument.lot_size), day, contiguous=True, interval_ms=1000,
    )
    books = pl.read_parquet(out)
    interval = books.filter(pl.col("trigger") == "interval")
    assert interval["received_time"].to_list() == [_ns(day, n) for n in range(1, 86_401)]
    snapshots = pl.read_parquet(generated.files["book"])
    assert books.filter(pl.col("trigger") == "snapshot").height == snapshots.height
    assert result.counters["rows_written"] == books.height == 86_400 + snapshots.height
    # After the last message, rows come in receive-time order, and each sample shows the book
    # as the snapshot before it left it (the snapshots repair the frozen book).
    last_message = int(pl.read_parquet(cut)["received_time"].max())
    tail = books.with_row_index().filter(pl.col("received_time") > last_message)
    assert tail.height > 40_000 and tail["received_time"].is_sorted()
    levels = [c for c in books.columns if c.startswith(("bid_", "ask_"))]
    previous = tail.select(pl.col(levels).shift(1).name.suffix("_before"), "trigger", *levels)
    samples = previous.filter(pl.col("trigger") == "interval").slice(1)
    for name in levels:
        assert samples[name].equals(samples[f"{name}_before"]), name
    assert tail.filter(pl.col("trigger") == "snapshot")["synced"].all()


def test_steps_scale_to_exact_decimals_and_samples_run_to_midnight(tmp_path):
    """A tick of 0.05 and a lot of 2 (unscaled = steps x 5 and x 2); no vendor snapshots at all."""
    day = dt.date(2024, 3, 1)
    deltas = tmp_path / "deltas.parquet"
    pl.DataFrame(
        {
            "origin_time": [_ns(day, 1790)] * 2 + [_ns(day, 5390)],
            "received_time": [_ns(day, 1800)] * 2 + [_ns(day, 5400)],
            "sequence_number": [1, 1, 2],
            "side_is_bid": [True, False, True],
            "price": [100.05, 100.10, 100.00],
            "size": [2.0, 4.0, 6.0],
        },
        schema=BOOK_DELTA_SCHEMA,
    ).write_parquet(deltas)
    book = tmp_path / "book.parquet"
    pl.DataFrame(schema=BOOK_SCHEMA).write_parquet(book)
    out = tmp_path / "books.parquet"
    rebuild_day(deltas, book, out, None, tmp_path / "ckpt.parquet", Grid(Decimal("0.05"), Decimal("2")),
                day, contiguous=True, depth=2, interval_ms=3_600_000)
    table = pq.read_table(out)
    assert table.schema.field("bid_0_price").type == pa.decimal64(18, 2)
    assert table.schema.field("bid_0_size").type == pa.decimal64(18, 0)
    rows = table.to_pylist()
    assert [r["received_time"] for r in rows] == [_ns(day, 3600 * h) for h in range(1, 25)]
    first, *later = rows
    assert (first["bid_0_price"], first["bid_0_size"], first["bid_1_price"], first["bid_1_size"]) == (
        Decimal("100.05"), Decimal("2"), None, None)
    assert (first["ask_0_price"], first["ask_0_size"]) == (Decimal("100.10"), Decimal("4"))
    for row in later:  # the last message came at 01:30; the book stays as it left it until midnight
        assert (row["bid_1_price"], row["bid_1_size"], row["ask_1_price"]) == (Decimal("100.00"), Decimal("6"), None)
        assert (row["sequence_number"], row["origin_time"], row["synced"]) == (2, _ns(day, 5390), False)


@needs_real
@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["binance_usdm_btcusdt_20240808.gz"], (6551, 4, 6547, 0, 629, 0, 21313)),
        (["binance_spot_btcusdt_20240808.gz", "binance_spot_btcusdt_20240809.gz"],
         (6495, 2, 6493, 0, 1072, 0, 19904)),
    ],
)
def test_real_captures_reproduce_reference_figures(files, expected):
    r = verify_capture([REAL / f for f in files])
    got = tuple(r[k] for k in ("diffs", "skipped_before_sync", "applied", "gaps", "ticker_checks",
                               "ticker_mismatches", "trades"))
    assert got == expected
    assert r["resyncs"] == 0 and r["in_sync_at_end"]


@needs_real
def test_one_removed_diff_is_exactly_one_gap(tmp_path):
    source = REAL / "binance_usdm_btcusdt_20240808.gz"
    lines = gzip.open(source, "rt").read().splitlines(keepends=True)
    diff_lines = [i for i, line in enumerate(lines) if "@depth" in line]
    del lines[diff_lines[len(diff_lines) // 2]]
    copy = tmp_path / "binance_usdm_btcusdt_20240808.gz"
    with gzip.open(copy, "wt") as fh:
        fh.writelines(lines)
    r = verify_capture([copy])
    assert r["gaps"] == 1 and r["diffs"] == 6550
    assert r["ticker_mismatches"] == 0  # nothing is checked while out of sync
