"""The book kernel against plain references: dict books, synthetic ground truth, real captures."""

from __future__ import annotations

import datetime as dt
import gzip
from decimal import Decimal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book import rebuild
from market_pipeline.core.book.fixed_point import decimal_array, grid_steps, to_steps
from market_pipeline.core.book.input_batches import as_snapshots, empty_snapshots
from market_pipeline.core.book.ladder import new_book, top_levels
from market_pipeline.core.book.rebuild import Grid, rebuild_day
from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_SCHEMA
from market_pipeline.vendors.binance.verify import verify_capture
from market_pipeline.vendors.synthetic.config import SyntheticSettings
from market_pipeline_tests.support.project import REAL_DATA_DIR

REAL = REAL_DATA_DIR
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"shared captures not found at {REAL}")

# One row: (is_bid, tick offset from 1,000,000, lots); lots 0 deletes (often a level we do not hold).
rows = st.lists(
    st.tuples(st.booleans(), st.integers(-3000, 3000), st.sampled_from([0, 0, 1, 2, 5, 1000])),
    min_size=1,
    max_size=300,
)


def reference_top(stream, depth, rows_per_message=1):
    """A dict book; after each message a crossed book loses the older side's crossing levels
    (the side of the message's last positive size wins), as `ladder.resolve_cross` does."""
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for start in range(0, len(stream), rows_per_message):
        bid_is_newer = True
        for is_bid, offset, lots in stream[start : start + rows_per_message]:
            tick = 1_000_000 + offset
            book = bids if is_bid else asks
            if lots == 0:
                book.pop(tick, None)
            else:
                book[tick] = lots
                bid_is_newer = is_bid
        if bids and asks and max(bids) >= min(asks):
            if bid_is_newer:
                best = max(bids)
                for tick in [t for t in asks if t <= best]:
                    del asks[tick]
            else:
                best = min(asks)
                for tick in [t for t in bids if t >= best]:
                    del bids[tick]
    top_b = sorted(bids.items(), reverse=True)[:depth]
    top_a = sorted(asks.items())[:depth]
    return top_b, top_a


def _no_snapshots(depth: int = 20) -> lr.Snapshots:
    """No snapshots, typed as the rebuild hands snapshots to the kernel."""
    return as_snapshots(empty_snapshots(depth))


def _as_read(deltas: lr.Deltas) -> lr.Deltas:
    """`deltas` typed as the rebuild hands them to the kernel: times and sequence numbers
    read-only (Arrow's buffers), so that the test runs the very specialization the rebuild
    compiles (and numba compiles no other one for the test)."""
    return deltas._replace(**{name: lr.read_only(getattr(deltas, name)) for name in ("recv", "orig", "seq")})


def _new_rows(capacity: int, depth: int) -> lr.Rows:
    """Output buffers of the kernel's one specialization: at least two rows (`lr.new_rows`)."""
    return lr.new_rows(max(capacity, 2), depth)


def _replay(deltas: lr.Deltas, book, depth: int, state=None, counters=None):
    """The production kernel over whole messages, a row after each; returns (rows, n_out, counters)."""
    n = len(deltas.recv)
    deltas = _as_read(deltas)
    rows = _new_rows(n, depth)
    state = lr.new_replay_state(0, True, 0, True) if state is None else state
    counters = lr.new_counters() if counters is None else counters
    replay = lr.LakeReplay(book, state, counters, lr.new_hourly(), rows, lr.new_agreement(0), lr.new_levels(20))
    i, k, n_out = lr.replay_lake_batch(
        deltas,
        _no_snapshots(),
        replay,
        depth,
        True,
        True,
    )
    assert (i, k) == (n, 0)
    return rows, n_out, counters


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
    book = new_book(window)
    bid, ask, state = book
    deltas = lr.Deltas(recv, recv, seq, is_bid, tick, lots, lr.no_snapshot_flags(n))
    out, n_out, counters = _replay(deltas, book, 20)
    assert n_out == len(np.unique(seq)) == counters[0]["messages"]
    bt, bl, at, al = (np.zeros(20, np.int64) for _ in range(4))
    top_levels(bid, ask, state, 20, bt, bl, at, al)
    # The row after the last message shows the same book.
    assert list(out.bid_ticks[n_out - 1]) == list(bt) and list(out.ask_lots[n_out - 1]) == list(al)
    # A small window drops levels far from the touch (counted); compare only when none was lost.
    if state[5] == 0 and state[6] == 0:
        ref_b, ref_a = reference_top(stream, 20, rows_per_message)
        assert [(int(t), int(q)) for t, q in zip(bt, bl, strict=True) if t >= 0] == ref_b
        assert [(int(t), int(q)) for t, q in zip(at, al, strict=True) if t >= 0] == ref_a
    else:
        assert window == 64  # a 2^14 window covers the whole ±3000 range: nothing may be dropped


@settings(deadline=None)  # the first example pays numba's cache load
@given(
    st.lists(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2), min_size=1, max_size=50)
)
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


def test_snapshot_levels_are_stepped_in_place_with_their_off_grid_rows(tmp_path):
    """A book batch's level columns go straight into the (rows, depth) matrices: the same steps as
    `to_steps` column by column, an absent level -1 ticks and 0 lots, and each off-grid value
    reported with its column, its row counted over the batches before, and its sequence number."""
    from market_pipeline.core.book.fixed_point import PrecisionCounter
    from market_pipeline.core.book.input_batches import snapshot_batches
    from market_pipeline.core.book.stage_timings import StageTimings

    depth, rows = 3, 5
    rng = np.random.default_rng(3)
    table: dict[str, object] = {
        "origin_time": np.arange(rows, dtype=np.int64),
        "received_time": np.arange(rows, dtype=np.int64) + 7,
        "sequence_number": np.arange(rows, dtype=np.int64) + 100,
    }
    for side, sign in (("bid", -1), ("ask", 1)):
        for level in range(depth):
            table[f"{side}_{level}_price"] = (10_000 + sign * (level + 1) + rng.integers(0, 3, rows)) / 100
            table[f"{side}_{level}_size"] = rng.integers(1, 9_999, rows) / 1_000
    table["ask_1_price"][3] = 100.015  # off the 0.01 grid: row 3, the second batch's first row
    table["bid_2_price"][1] = None
    table["bid_2_size"][1] = None
    pq.write_table(pa.table({k: pa.array(v) for k, v in table.items()}), tmp_path / "book.parquet")
    precision = PrecisionCounter()
    grid = Grid(Decimal("0.01"), Decimal("0.001"))
    batches = list(
        snapshot_batches(pq.ParquetFile(tmp_path / "book.parquet"), grid, precision, depth, StageTimings(), 3)
    )

    for key, side, name, step in (
        ("bt", "bid", "price", 0.01),
        ("bl", "bid", "size", 0.001),
        ("at", "ask", "price", 0.01),
        ("al", "ask", "size", 0.001),
    ):
        matrix = np.concatenate([b[key] for b in batches])
        for level in range(depth):
            values = np.array([np.nan if v is None else v for v in table[f"{side}_{level}_{name}"]], np.float64)
            expected = to_steps(values, step, np.empty(1, np.int64), 0)[0]
            if name == "size":
                expected[
                    to_steps(np.array(table[f"{side}_{level}_price"], np.float64), 0.01, np.empty(1, np.int64), 0)[0]
                    < 0
                ] = 0
            assert matrix[:, level].tolist() == expected.tolist(), (key, level)
    assert (
        np.concatenate([b["bt"] for b in batches])[1, 2] == -1 and np.concatenate([b["bl"] for b in batches])[1, 2] == 0
    )
    assert precision.count == 1
    assert precision.examples == [{"column": "book.ask_1_price", "row": 3, "sequence_number": 103, "value": 100.015}]


def test_crossed_book_is_resolved_newest_side_wins():
    # Message 1 builds bid 100 and ask 101; message 2 posts a bid at 102 (through the ask).
    recv = np.array([0, 0, 1], np.int64)
    seq = np.array([1, 1, 2], np.int64)
    is_bid = np.array([True, False, True])
    tick = np.array([100, 101, 102], np.int64)
    lot = np.array([5, 5, 3], np.int64)
    out, n_out, counters = _replay(
        lr.Deltas(recv, recv, seq, is_bid, tick, lot, lr.no_snapshot_flags(3)), new_book(1024), 2
    )
    assert n_out == 2
    assert counters[0]["crossed_events"] == 1 and counters[0]["crossed_levels_removed"] == 1
    assert out.bid_ticks[1, 0] == 102 and out.ask_ticks[1, 0] == -1  # best bid 102, ask side emptied


def test_snapshot_messages_replace_the_whole_book():
    """`is_snapshot` rows (Tardis): the first snapshot message after a non-snapshot clears both
    sides; the snapshot messages that follow it add to the same snapshot; the book is in sync."""
    # seq: 1 builds bid 100/ask 105; 2 is a gap (seq 4); 4-5 a two-message snapshot; 6 an update;
    # 7 a new snapshot (after a non-snapshot: clears again).
    seq = np.array([1, 1, 4, 5, 5, 6, 7, 8], np.int64)
    recv = seq * 10
    is_bid = np.array([True, False, True, True, False, True, False, True])
    tick = np.array([100, 105, 101, 99, 103, 98, 110, 90], np.int64)
    lot = np.array([5, 5, 7, 2, 4, 3, 1, 1], np.int64)
    flags = np.array([False, False, True, True, True, False, True, False])
    # Message 4 is a snapshot message: seq 2..3 are missing before it (a gap, then the snapshot repairs it).
    state = lr.new_replay_state(0, True, 0, True)
    out, n_out, counters = _replay(lr.Deltas(recv, recv, seq, is_bid, tick, lot, flags), new_book(1024), 3, state=state)
    c = counters[0]
    assert n_out == 6 and c["sequence_gaps"] == 1 and c["fills"] == 1
    # After message 4 (snapshot start): only its row, the old bid 100 and ask 105 are gone.
    assert list(out.bid_ticks[1]) == [101, -1, -1] and list(out.ask_ticks[1]) == [-1, -1, -1]
    # Message 5 continues the snapshot: nothing cleared.
    assert list(out.bid_ticks[2]) == [101, 99, -1] and list(out.ask_ticks[2]) == [103, -1, -1]
    assert list(out.bid_ticks[3]) == [101, 99, 98]
    # Message 7 starts a new snapshot: everything before it is gone.
    assert list(out.bid_ticks[4]) == [-1, -1, -1] and list(out.ask_ticks[4]) == [110, -1, -1]
    assert list(out.bid_ticks[5]) == [90, -1, -1]
    assert out.synced[:n_out].all() and c["rows_written_unsynced"] == 0


def test_a_snapshot_message_first_clears_a_book_carried_over():
    """The day's first message is a snapshot: the book from the checkpoint is replaced, and the
    unsynced replay is in sync from then on."""
    book = new_book(1024)
    first = lr.Deltas(
        *(np.array([1], np.int64) for _ in range(3)),
        np.array([True]),
        np.array([100], np.int64),
        np.array([5], np.int64),
        np.array([False]),
    )
    _replay(first, book, 2)
    state = lr.new_replay_state(0, False, 0, False)
    snap = lr.Deltas(
        *(np.array([2], np.int64) for _ in range(3)),
        np.array([False]),
        np.array([120], np.int64),
        np.array([1], np.int64),
        np.array([True]),
    )
    out, n_out, _ = _replay(snap, book, 2, state=state)
    assert n_out == 1 and out.synced[0] and list(out.bid_ticks[0]) == [-1, -1] and out.ask_ticks[0, 0] == 120


def test_a_chain_break_unsyncs_the_book_until_a_snapshot_message():
    """`breaks_chain` (a capture's update-id chain, monotonic ids): the flagged message is a
    sequence gap in its hour and the book is out of sync from it until a snapshot message, which
    fills the gap; the same stream without the flags proves nothing (monotonic ids jump)."""
    hour = 3_600_000_000_000
    # Messages (seq): 10 (two rows), 13, 17 breaks the chain (hour 1), 20, 25 a snapshot
    # message that breaks it too (hour 2: a reconnect), 27.
    seq = np.array([10, 10, 13, 17, 20, 25, 25, 27], np.int64)
    recv = np.array([0, 0, 1, hour + 1, hour + 2, 2 * hour, 2 * hour, 2 * hour + 1], np.int64)
    is_bid = np.array([True, False, True, True, False, True, False, True])
    tick = np.array([100, 105, 101, 102, 104, 99, 103, 98], np.int64)
    lot = np.array([5, 5, 7, 2, 4, 3, 1, 1], np.int64)
    snapshot = np.array([False, False, False, False, False, True, True, False])
    breaks = np.array([False, False, False, True, False, True, False, False])
    replayed = {}
    for name, flags in (("chained", breaks), ("unchained", lr.NO_CHAIN)):
        deltas = _as_read(lr.Deltas(recv, recv, seq, is_bid, tick, lot, snapshot, flags))
        rows = _new_rows(6, 3)
        state, counters, hourly = lr.new_replay_state(0, False, 0, True), lr.new_counters(), lr.new_hourly()
        replay = lr.LakeReplay(new_book(1024), state, counters, hourly, rows, lr.new_agreement(0), lr.new_levels(20))
        assert lr.replay_lake_batch(deltas, _no_snapshots(), replay, 3, True, True) == (8, 0, 6)
        replayed[name] = (rows, counters[0], hourly)
    rows, c, hourly = replayed["chained"]
    assert rows.synced.tolist() == [True, True, False, False, True, True]
    assert (c["sequence_gaps"], c["fills"], c["rows_written_unsynced"], c["missing_sequence_numbers"]) == (2, 1, 2, 0)
    assert hourly["sequence_gaps"][:3].tolist() == [0, 1, 1] and hourly["fills"][:3].tolist() == [0, 0, 1]
    assert list(rows.bid_ticks[3]) == [102, 101, 100]  # unsynced, the message is still applied
    assert list(rows.bid_ticks[4]) == [99, -1, -1] and list(rows.ask_ticks[4]) == [103, -1, -1]
    rows, c, hourly = replayed["unchained"]
    assert rows.synced.all() and c["sequence_gaps"] == c["fills"] == hourly["sequence_gaps"].sum() == 0
    assert list(rows.bid_ticks[5]) == list(replayed["chained"][0].bid_ticks[5]) == [99, 98, -1]


SNAPSHOT_INTERVAL_MS = 500


@pytest.fixture(scope="module")
def synthetic_day(tmp_path_factory):
    from market_pipeline.vendors.synthetic.generate import generate_day

    root = tmp_path_factory.mktemp("synthetic")
    instrument = Instrument(
        exchange="BINANCE",
        symbol="BTC-USDT",
        spec=InstrumentSpec(tick_size=Decimal("0.01"), lot_size=Decimal("0.00001")),
    )
    # Vendor snapshots every 500 ms (172,800, a fifth of the production cadence's 864,000): still
    # seven snapshot batches of the rebuild and two agreement row groups, with the messages of the
    # day unchanged (they do not depend on the cadence).
    faults = SyntheticSettings.model_validate(
        {"faults": {"dropped_messages": 3, "off_grid_prices": 2}, "snapshot_interval_ms": SNAPSHOT_INTERVAL_MS}
    )
    day = dt.date(2024, 3, 1)
    return instrument, day, root, generate_day(instrument, day, faults, root, scale=0.05)


@pytest.mark.slow  # a synthetic day of 172,800 vendor snapshots
def test_rebuild_equals_synthetic_ground_truth_and_repairs_gaps(synthetic_day):
    instrument, day, root, generated = synthetic_day
    out = root / "books.parquet"
    result = rebuild_day(
        generated.files["book_delta_v2"],
        generated.files["book"],
        out,
        None,
        root / "ckpt.parquet",
        Grid(instrument.tick_size, instrument.lot_size),
        day,
        contiguous=True,
        agreement_path=root / "agreement.parquet",
    )
    c = result.counters
    assert c["sequence_gaps"] == 3 and c["missing_sequence_numbers"] >= 3
    # One agreement row per vendor snapshot, in snapshot order, gathered into full row groups
    # (not one per kernel round); the mismatches are the divergences and the post-gap fills.
    assert c["vendor_snapshots"] == 86_400_000 // SNAPSHOT_INTERVAL_MS > 2 * rebuild.SNAPSHOT_BATCH_ROWS
    agreement = pq.ParquetFile(root / "agreement.parquet")
    assert agreement.metadata.num_rows == c["vendor_snapshots"]
    groups = [agreement.metadata.row_group(g).num_rows for g in range(agreement.metadata.num_row_groups)]
    assert len(groups) > 1 and min(groups[:-1]) >= rebuild.AGREEMENT_ROW_GROUP_ROWS, groups
    rows = agreement.read().to_pydict()
    assert rows["received_time"] == sorted(rows["received_time"])
    assert rows["matched"].count(False) == c["vendor_snapshots"] - c["vendor_snapshots_matched"] > 0
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
    return int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp() + seconds) * 1_000_000_000


@pytest.mark.slow  # a synthetic day of 172,800 vendor snapshots
def test_interval_samples_continue_to_midnight_in_time_order(synthetic_day):
    """Deltas stop at noon; snapshots go on: samples and snapshot rows interleave up to midnight."""
    instrument, day, root, generated = synthetic_day
    noon = _ns(day, 12 * 3600)
    cut = root / "deltas_until_noon.parquet"
    pl.read_parquet(generated.files["book_delta_v2"]).filter(pl.col("received_time") < noon).write_parquet(cut)
    out = root / "books_until_noon.parquet"
    result = rebuild_day(
        cut,
        generated.files["book"],
        out,
        None,
        root / "ckpt_noon.parquet",
        Grid(instrument.tick_size, instrument.lot_size),
        day,
        contiguous=True,
        interval_ms=1000,
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
    rebuild_day(
        deltas,
        book,
        out,
        None,
        tmp_path / "ckpt.parquet",
        Grid(Decimal("0.05"), Decimal("2")),
        day,
        contiguous=True,
        depth=2,
        interval_ms=3_600_000,
    )
    table = pq.read_table(out)
    assert table.schema.field("bid_0_price").type == pa.decimal64(18, 2)
    assert table.schema.field("bid_0_size").type == pa.decimal64(18, 0)
    rows = table.to_pylist()
    assert [r["received_time"] for r in rows] == [_ns(day, 3600 * h) for h in range(1, 25)]
    first, *later = rows
    assert (first["bid_0_price"], first["bid_0_size"], first["bid_1_price"], first["bid_1_size"]) == (
        Decimal("100.05"),
        Decimal("2"),
        None,
        None,
    )
    assert (first["ask_0_price"], first["ask_0_size"]) == (Decimal("100.10"), Decimal("4"))
    for row in later:  # the last message came at 01:30; the book stays as it left it until midnight
        assert (row["bid_1_price"], row["bid_1_size"], row["ask_1_price"]) == (Decimal("100.00"), Decimal("6"), None)
        assert (row["sequence_number"], row["origin_time"], row["synced"]) == (2, _ns(day, 5390), False)


def test_rebuild_reads_the_optional_is_snapshot_column(tmp_path):
    """A `book_delta_v2` file with `is_snapshot`: the snapshot message replaces the book; without
    the column the same rows only add to it."""
    day = dt.date(2024, 3, 1)
    frame = pl.DataFrame(
        {
            "origin_time": [_ns(day, 1)] * 2 + [_ns(day, 2)],
            "received_time": [_ns(day, 1)] * 2 + [_ns(day, 2)],
            "sequence_number": [1, 1, 2],
            "side_is_bid": [True, False, True],
            "price": [100.0, 101.0, 99.0],
            "size": [1.0, 1.0, 2.0],
            "is_snapshot": [False, False, True],
        },
        schema={**BOOK_DELTA_SCHEMA, "is_snapshot": pl.Boolean()},
    )
    book = tmp_path / "book.parquet"
    pl.DataFrame(schema=BOOK_SCHEMA).write_parquet(book)
    tops = {}
    for name, deltas in (("flagged", frame), ("plain", frame.drop("is_snapshot"))):
        path = tmp_path / f"{name}.parquet"
        deltas.write_parquet(path)
        out = tmp_path / f"books_{name}.parquet"
        rebuild_day(
            path,
            book,
            out,
            None,
            tmp_path / f"ckpt_{name}.parquet",
            Grid(Decimal("0.01"), Decimal("1")),
            day,
            contiguous=True,
            depth=2,
            interval_ms=0,
        )
        tops[name] = pl.read_parquet(out).row(-1, named=True)
    assert (tops["flagged"]["bid_0_price"], tops["flagged"]["bid_1_price"], tops["flagged"]["ask_0_price"]) == (
        Decimal("99.00"),
        None,
        None,
    )
    assert (tops["plain"]["bid_0_price"], tops["plain"]["bid_1_price"], tops["plain"]["ask_0_price"]) == (
        Decimal("100.00"),
        Decimal("99.00"),
        Decimal("101.00"),
    )


@pytest.mark.parametrize("message_rows", [0, 1, 63, 64, 65, 191, 192, 1_000, 4_999, 5_000])
def test_a_message_ends_where_its_time_or_number_first_changes(message_rows):
    """`message_end` looks in doubling windows: the same answer as a comparison of the whole batch,
    at and around the windows' edges (64, 192 rows), for a batch all of one message, and when only
    the time or only the number changes."""
    from market_pipeline.core.book.input_batches import message_end

    rows = 5_000
    for changed in ("recv", "seq", "both"):
        recv, seq = np.full(rows, 7, np.int64), np.full(rows, 3, np.int64)
        if changed in ("recv", "both"):
            recv[message_rows:] = 8
        if changed in ("seq", "both"):
            seq[message_rows:] = 4
        recv[message_rows + 7 :] = 7  # the message's values again later: not part of it
        seq[message_rows + 7 :] = 3
        assert message_end({"recv": recv, "seq": seq}, 7, 3) == min(message_rows, rows)


def test_books_do_not_depend_on_the_batch_sizes(tmp_path, monkeypatch):
    """Messages cut by the delta batches' ends (a cut message's rows are joined to the next batch
    without copying the rest of it), longer than a batch, vendor snapshots read a few at a
    time, and output batches of a few rows written by a writer thread that lags behind the
    kernel (so that every output buffer set is in flight in turn): the same rows, counters and
    agreement as one batch of each."""
    import time

    from polars.testing import assert_frame_equal

    from market_pipeline.core.book.book_writer import BackgroundWriter

    write_now = BackgroundWriter._write

    def write_late(self, build):
        time.sleep(0.002)  # the kernel runs ahead: a buffer set it got back too early would be overwritten
        write_now(self, build)

    day = dt.date(2024, 3, 1)
    rng = np.random.default_rng(7)
    sizes = rng.integers(1, 10, 120)  # rows per message
    message = np.repeat(np.arange(len(sizes)), sizes)
    n = len(message)
    is_bid = rng.random(n) < 0.5
    pl.DataFrame(
        {
            "origin_time": [_ns(day, 10 + m) for m in message],
            "received_time": [_ns(day, 10 + m) for m in message],
            "sequence_number": message + 1,
            "side_is_bid": is_bid,
            "price": np.where(is_bid, 99.0, 101.0) + np.where(is_bid, -1, 1) * rng.integers(0, 8, n) * 0.5,
            "size": rng.choice([0.0, 1.0, 2.5], n),
        },
        schema=BOOK_DELTA_SCHEMA,
    ).write_parquet(tmp_path / "deltas.parquet")
    levels = {}
    for side, best, step in (("bid", 99.0, -0.5), ("ask", 101.0, 0.5)):
        for i in range(20):
            levels[f"{side}_{i}_price"] = [best + step * i] * 12
            levels[f"{side}_{i}_size"] = [1.0] * 12
    seqs = np.arange(5, len(sizes), 10)[:12]
    pl.DataFrame(
        {"origin_time": [_ns(day, 10 + s) for s in seqs], "received_time": [_ns(day, 10 + s) for s in seqs]}
        | {"sequence_number": seqs}
        | levels,
        schema=BOOK_SCHEMA,
    ).write_parquet(tmp_path / "book.parquet")
    results = []
    default = (rebuild.DELTA_BATCH_ROWS, rebuild.SNAPSHOT_BATCH_ROWS, rebuild.OUTPUT_BATCH_ROWS)
    for delta_rows, snapshot_rows, output_rows in (default, (1, 1, 3), (4, 3, 4), (7, 2, 5)):
        monkeypatch.setattr(rebuild, "DELTA_BATCH_ROWS", delta_rows)
        monkeypatch.setattr(rebuild, "SNAPSHOT_BATCH_ROWS", snapshot_rows)
        monkeypatch.setattr(rebuild, "OUTPUT_BATCH_ROWS", output_rows)
        monkeypatch.setattr(BackgroundWriter, "_write", write_now if output_rows == default[2] else write_late)
        out = tmp_path / f"{delta_rows}"
        result = rebuild_day(
            tmp_path / "deltas.parquet",
            tmp_path / "book.parquet",
            out / "books.parquet",
            None,
            out / "ckpt.parquet",
            Grid(Decimal("0.5"), Decimal("0.5")),
            day,
            contiguous=True,
            depth=5,
            interval_ms=0,
            agreement_path=out / "agreement.parquet",
        )
        files = [pl.read_parquet(out / name) for name in ("books.parquet", "agreement.parquet", "ckpt.parquet")]
        results.append((result.counters, result.rows_in, files))
    (counters, rows_in, files), *others = results
    assert rows_in == n and counters["vendor_snapshots"] == len(seqs)
    assert counters["rows_written"] == len(sizes) + len(seqs)  # a row after every message and snapshot
    for other_counters, other_rows_in, other_files in others:
        assert (other_counters, other_rows_in) == (counters, rows_in)
        for frame, other in zip(files, other_files, strict=True):
            assert_frame_equal(other, frame, check_exact=True)


@needs_real
@pytest.mark.parametrize(
    ("files", "expected"),
    [
        (["binance_usdm_btcusdt_20240808.gz"], (6551, 4, 6547, 0, 629, 0, 21313)),
        (["binance_spot_btcusdt_20240808.gz", "binance_spot_btcusdt_20240809.gz"], (6495, 2, 6493, 0, 1072, 0, 19904)),
    ],
)
def test_real_captures_reproduce_reference_figures(files, expected):
    r = verify_capture([REAL / f for f in files])
    got = tuple(
        r[k]
        for k in ("diffs", "skipped_before_sync", "applied", "gaps", "ticker_checks", "ticker_mismatches", "trades")
    )
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


def test_grid_steps_undo_decimal_array_exactly_and_refuse_what_is_off_grid():
    """The readers of the books (metrics) take decimal columns back to whole steps in integers."""
    unscaled = np.array([5_800_382, 0, 5, -10], np.int64)  # tick 0.05 as decimal(18, 2): x5
    array = decimal_array(unscaled * 5, Decimal("0.05"), np.array([True, False, True, True]))
    np.testing.assert_array_equal(grid_steps(array, Decimal("0.05")), [5_800_382, 0, 5, -10])
    np.testing.assert_array_equal(grid_steps(array, Decimal("0.01")), [29_001_910, 0, 25, -50])  # scale's own step
    off_grid = decimal_array(np.array([7], np.int64), Decimal("0.01"))  # 0.07 on a 0.05 grid
    assert grid_steps(off_grid, Decimal("0.05")) is None
    assert grid_steps(pa.array([0.05]), Decimal("0.05")) is None  # floats: the caller rounds
