"""The synthetic vendor source: exact, deterministic, replayable, and faulty only where it says."""

from __future__ import annotations

import bisect
import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from market_pipeline.core.instruments import Instrument, InstrumentSpec
from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_SCHEMA,
    TRADES_SCHEMA,
    book_level_columns,
)
from market_pipeline.vendors.synthetic.config import FaultSettings, SyntheticSettings
from market_pipeline.vendors.synthetic.faults import FAULT_NAMES
from market_pipeline.vendors.synthetic.generate import (
    GENERATOR_VERSION,
    TOPS_FILE,
    TOPS_SCHEMA,
    SyntheticDay,
    _Grid,
    generate_day,
)

DAY = dt.date(2024, 3, 1)
DAY_START = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * 10**9
DAY_END = DAY_START + 86_400 * 10**9
SCALE = 0.02  # ~7,000 messages: quick, yet every snapshot can be replayed
COARSE_MS = 60_000  # the snapshot cadence of the days whose snapshots are not what a test is about
TICK = Decimal("0.01")
LOT = Decimal("0.00001")
INSTRUMENT = Instrument(exchange="BINANCE", symbol="BTC-USDT", spec=InstrumentSpec(tick_size=TICK, lot_size=LOT))
ROW_FAULTS = FaultSettings(
    dropped_messages=3,
    clock_skew_episodes=4,
    off_grid_prices=4,
    float_noise_prices=5,
    duplicated_rows=3,
    out_of_order_rows=3,
)
# Faults limited to DAY: the next day is generated clean.
TRUNCATING = FaultSettings(truncated_file=True, dropped_messages=2, days=[DAY])
SCHEMAS = {"trades": TRADES_SCHEMA, "book": BOOK_SCHEMA, "book_delta_v2": BOOK_DELTA_SCHEMA}


def _generate(
    root: Path, faults: FaultSettings | None = None, day: dt.date = DAY, snapshot_interval_ms: int = 100
) -> SyntheticDay:
    settings = SyntheticSettings(
        profile="small", seed=7, faults=faults or FaultSettings(), snapshot_interval_ms=snapshot_interval_ms
    )
    return generate_day(INSTRUMENT, day, settings, root, scale=SCALE)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDay:
    return _generate(tmp_path_factory.mktemp("clean"))


@pytest.fixture(scope="module")
def faulted(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDay:
    return _generate(tmp_path_factory.mktemp("faulted"), ROW_FAULTS)


@pytest.fixture(scope="module")
def next_day(tmp_path_factory: pytest.TempPathFactory) -> SyntheticDay:
    return _generate(
        tmp_path_factory.mktemp("next"), TRUNCATING, day=DAY + dt.timedelta(days=1), snapshot_interval_ms=COARSE_MS
    )


@pytest.fixture(scope="module")
def frames(clean: SyntheticDay) -> dict[str, pl.DataFrame]:
    return {table: pl.read_parquet(path) for table, path in clean.files.items()}


def _manifest(day: SyntheticDay) -> dict:
    return json.loads(day.manifest_path.read_text())


def _exact_on_grid(values: np.ndarray, step: Decimal) -> bool:
    """Every value is the float nearest to a multiple of step (the generator's own rendering)."""
    sign, digits, exponent = step.as_tuple()
    p, q = int("".join(map(str, digits))), 10**-exponent
    n = np.rint(values * q / p).astype(np.int64)
    return bool(np.array_equal((n * p).astype(np.float64) / q, values))


def _dec(value: float) -> Decimal:
    return Decimal(repr(value))


# --- layout, schemas, determinism -------------------------------------------------------------


def test_files_land_in_vendor_layout(clean: SyntheticDay) -> None:
    for table, path in clean.files.items():
        assert path.relative_to(clean.root).as_posix() == (
            f"{table}/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01/part-0.snappy.parquet"
        )
        assert pq.ParquetFile(path).metadata.row_group(0).column(0).compression == "SNAPPY"
    truth_dir = "_ground_truth/synthetic/exchange=BINANCE/symbol=BTC-USDT/dt=2024-03-01"
    assert clean.manifest_path.relative_to(clean.root).as_posix() == f"{truth_dir}/manifest.json"
    assert clean.truth_book_path.relative_to(clean.root).as_posix() == f"{truth_dir}/truth_book.parquet"
    leftovers = [p for p in clean.root.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []


def test_schemas_match_the_lake(clean: SyntheticDay, frames: dict[str, pl.DataFrame]) -> None:
    for table, frame in frames.items():
        assert list(frame.schema.items()) == list(SCHEMAS[table].items())
    truth = pl.read_parquet(clean.truth_book_path)
    assert list(truth.schema.items()) == list(BOOK_SCHEMA.items())
    tops = pl.read_parquet(clean.truth_book_path.with_name(TOPS_FILE))
    assert list(tops.schema.items()) == list(TOPS_SCHEMA.items())


def test_same_inputs_give_identical_bytes(clean: SyntheticDay, tmp_path: Path) -> None:
    again = _generate(tmp_path)
    for table, path in clean.files.items():
        assert path.read_bytes() == again.files[table].read_bytes(), table
    assert clean.truth_book_path.read_bytes() == again.truth_book_path.read_bytes()
    tops = clean.truth_book_path.with_name(TOPS_FILE)
    assert tops.read_bytes() == again.truth_book_path.with_name(TOPS_FILE).read_bytes()
    assert clean.manifest_path.read_bytes() == again.manifest_path.read_bytes()
    assert clean.rows == again.rows


def test_another_day_is_another_market(frames: dict[str, pl.DataFrame], next_day: SyntheticDay) -> None:
    deltas = pl.read_parquet(next_day.files["book_delta_v2"])
    assert deltas["origin_time"].min() == DAY_END
    assert deltas["price"].head(5).to_list() != frames["book_delta_v2"]["price"].head(5).to_list()


def test_manifest(clean: SyntheticDay, frames: dict[str, pl.DataFrame]) -> None:
    manifest = _manifest(clean)
    assert manifest["generator_version"] == GENERATOR_VERSION == 3
    assert manifest["snapshot_interval_ms"] == 100
    assert (manifest["exchange"], manifest["symbol"], manifest["day"]) == ("BINANCE", "BTC-USDT", "2024-03-01")
    assert (manifest["seed"], manifest["profile"]) == (7, "small")
    assert (manifest["tick_size"], manifest["lot_size"]) == ("0.01", "0.00001")
    assert manifest["rows"] == clean.rows == {table: frame.height for table, frame in frames.items()}
    assert manifest["faults"] == {name: [] for name in FAULT_NAMES}
    seq = frames["book_delta_v2"]["sequence_number"]
    assert manifest["sequence_range"] == [seq.min(), seq.max()]
    assert all(type(v) is int for v in [*manifest["rows"].values(), *manifest["sequence_range"]])


# --- values -----------------------------------------------------------------------------------


def test_prices_and_sizes_on_the_grid(frames: dict[str, pl.DataFrame]) -> None:
    deltas, trades, book = frames["book_delta_v2"], frames["trades"], frames["book"]
    prices = [deltas["price"], trades["price"]]
    sizes = [deltas["size"].filter(deltas["size"] > 0), trades["quantity"]]
    for side in ("bid", "ask"):
        for level in range(20):
            prices.append(book[f"{side}_{level}_price"].drop_nulls())
            sizes.append(book[f"{side}_{level}_size"].drop_nulls())
    for series in prices:
        assert _exact_on_grid(series.to_numpy(), TICK)
        assert (series > 0).all()
    for series in sizes:
        assert _exact_on_grid(series.to_numpy(), LOT)
        assert (series > 0).all()
    sample = deltas.sample(2_000, seed=1)
    for price, size in sample.select("price", "size").iter_rows():
        assert _dec(price) % TICK == 0 and _dec(size) % LOT == 0


def test_times_within_the_day_and_received_after_origin(frames: dict[str, pl.DataFrame]) -> None:
    for frame in frames.values():
        for column in ("origin_time", "received_time"):
            assert frame[column].min() >= DAY_START and frame[column].max() < DAY_END
        assert (frame["received_time"] >= frame["origin_time"]).all()
        latency = (frame["received_time"] - frame["origin_time"]).median()
        assert 5e6 < latency < 50e6


def test_messages_are_contiguous_and_atomic(frames: dict[str, pl.DataFrame]) -> None:
    deltas = frames["book_delta_v2"]
    assert deltas.equals(deltas.sort("received_time", "sequence_number", maintain_order=True))
    steps = deltas["sequence_number"].diff().drop_nulls()
    assert set(steps.unique().to_list()) == {0, 1}
    per_message = deltas.group_by("sequence_number", maintain_order=True).agg(
        pl.col("origin_time").n_unique().alias("origins"),
        pl.col("received_time").n_unique().alias("receiveds"),
        pl.col("origin_time").first(),
        pl.len().alias("rows"),
        pl.struct("side_is_bid", "price").n_unique().alias("levels"),
    )
    assert (per_message["origins"] == 1).all() and (per_message["receiveds"] == 1).all()
    assert (per_message["levels"] == per_message["rows"]).all()  # a level appears once per message
    assert (per_message["origin_time"].diff().drop_nulls() > 0).all()
    assert per_message["origin_time"][0] == DAY_START  # the opening full-depth message
    assert per_message["rows"][0] > 2 * 200
    assert per_message["rows"][1:].max() <= 10
    # Messages cover the whole day, Poisson-like.
    assert per_message["origin_time"][1] - DAY_START < 120 * 10**9
    assert DAY_END - per_message["origin_time"][-1] < 120 * 10**9


def test_trades_look_like_trades(frames: dict[str, pl.DataFrame]) -> None:
    trades = frames["trades"]
    assert trades.height > 100
    assert set(trades["side"].unique().to_list()) == {"buy", "sell"}
    ids = trades["trade_id"].cast(pl.Int64)
    assert (ids.diff().drop_nulls() == 1).all()
    assert trades["origin_time"].is_sorted() and trades["received_time"].is_sorted()


def test_book_snapshots_every_100ms_uncrossed_and_equal_to_truth(
    clean: SyntheticDay, frames: dict[str, pl.DataFrame]
) -> None:
    book = frames["book"]
    assert book.height == SyntheticSettings().snapshots_per_day == 864_000
    assert (book["origin_time"] - DAY_START).to_list() == list(range(0, 86_400 * 10**9, 10**8))
    assert book["received_time"].is_sorted()
    assert (book["bid_0_price"] < book["ask_0_price"]).all()
    for level in range(19):
        assert (book[f"bid_{level}_price"] > book[f"bid_{level + 1}_price"]).all()
        assert (book[f"ask_{level}_price"] < book[f"ask_{level + 1}_price"]).all()
    assert book.equals(pl.read_parquet(clean.truth_book_path))


@pytest.mark.parametrize("interval_ms", [1_000, 60_000])
def test_a_coarser_cadence_is_every_nth_snapshot_of_the_same_market(
    interval_ms: int, frames: dict[str, pl.DataFrame], tmp_path: Path
) -> None:
    """The snapshot cadence draws nothing from the market's random stream: the messages and trades
    are the same bytes, and the snapshots (latencies included) are every nth of the 100 ms day's."""
    coarse = _generate(tmp_path, snapshot_interval_ms=interval_ms)
    for table in ("book_delta_v2", "trades"):
        assert pl.read_parquet(coarse.files[table]).equals(frames[table]), table
    every = interval_ms // 100
    assert pl.read_parquet(coarse.files["book"]).equals(frames["book"].gather_every(every))
    assert pl.read_parquet(coarse.truth_book_path).height == 86_400_000 // interval_ms
    assert _manifest(coarse)["snapshot_interval_ms"] == interval_ms


@pytest.mark.parametrize("interval_ms", [0, 50, 150, 7_000, 86_400_001])
def test_a_cadence_that_does_not_divide_the_day_is_refused(interval_ms: int) -> None:
    with pytest.raises(ValueError, match="not a multiple of 100 ms that divides the day"):
        SyntheticSettings(snapshot_interval_ms=interval_ms)


class _DictBook:
    """A plain Decimal-keyed book, independent of the generator's integer ladders."""

    def __init__(self) -> None:
        self.sides: dict[bool, dict[Decimal, Decimal]] = {True: {}, False: {}}
        self.keys: dict[bool, list[Decimal]] = {True: [], False: []}

    def set(self, is_bid: bool, price: Decimal, size: Decimal) -> None:
        side, keys = self.sides[is_bid], self.keys[is_bid]
        if size == 0:
            if price in side:
                del side[price]
                keys.pop(bisect.bisect_left(keys, price))
        else:
            if price not in side:
                bisect.insort(keys, price)
            side[price] = size

    def top(self, is_bid: bool, n: int = 20) -> list[tuple[Decimal, Decimal]]:
        keys = self.keys[is_bid]
        best = reversed(keys[-n:]) if is_bid else keys[:n]
        return [(price, self.sides[is_bid][price]) for price in best]


def test_dict_replay_reproduces_every_snapshot_top_and_trade(
    clean: SyntheticDay, frames: dict[str, pl.DataFrame]
) -> None:
    deltas, trades, book = frames["book_delta_v2"], frames["trades"], frames["book"]
    # The true top after every message (what a capture's bookTickers can show), in message order.
    tops = pl.read_parquet(clean.truth_book_path.with_name(TOPS_FILE))
    assert tops["sequence_number"].to_list() == deltas["sequence_number"].unique(maintain_order=True).to_list()
    top_after = iter(tops.iter_rows())
    # Snapshots between two messages are equal, so one per sequence number stands for all.
    levels = book_level_columns()
    distinct = book.select("sequence_number", *levels).unique(maintain_order=True)
    assert distinct["sequence_number"].is_unique().all()
    wanted = {row[0]: row[1:] for row in distinct.iter_rows()}
    # Each snapshot shows exactly the messages with origin_time <= its own.
    starts = deltas.group_by("sequence_number", maintain_order=True).agg(pl.col("origin_time").first())
    last = np.searchsorted(starts["origin_time"].to_numpy(), book["origin_time"].to_numpy(), side="right") - 1
    assert np.array_equal(starts["sequence_number"].to_numpy()[last], book["sequence_number"].to_numpy())

    trades_at = defaultdict(list)
    for origin, side, price, quantity in trades.select("origin_time", "side", "price", "quantity").iter_rows():
        trades_at[origin].append((side == "sell", _dec(price), _dec(quantity)))

    replay = _DictBook()
    checked = 0
    rows = deltas.select("origin_time", "sequence_number", "side_is_bid", "price", "size").iter_rows()
    message: list[tuple] = []
    for row in [*rows, None]:
        if message and (row is None or row[1] != message[0][1]):
            origin, seq = message[0][0], message[0][1]
            # A trade consumes resting liquidity, so its message updates the traded level.
            updated = {(r[2], _dec(r[3])) for r in message}
            for maker_is_bid, price, _ in trades_at.pop(origin, []):
                assert (maker_is_bid, price) in updated
            for _, _, is_bid, price, size in message:
                replay.set(is_bid, _dec(price), _dec(size))
            bids, asks = replay.top(True), replay.top(False)
            assert bids and asks and bids[0][0] < asks[0][0]
            top_seq, *top = next(top_after)
            assert (top_seq, [_dec(v) for v in top]) == (seq, [*bids[0], *asks[0]])
            if seq in wanted:
                expected = []
                for side in (bids, asks):
                    padded = [*side, *[(None, None)] * (20 - len(side))]
                    expected += [None if v is None else v for level in padded for v in level]
                got = [None if v is None else _dec(v) for v in wanted.pop(seq)]
                assert got == expected, seq
                checked += 1
            message = []
        if row is not None:
            message.append(row)
    assert wanted == {} and trades_at == {} and next(top_after, None) is None
    assert checked > 1_000


# --- faults -----------------------------------------------------------------------------------


def test_faulted_day_keeps_the_true_market(clean: SyntheticDay, faulted: SyntheticDay) -> None:
    assert faulted.truth_book_path.read_bytes() == clean.truth_book_path.read_bytes()
    assert faulted.files["trades"].read_bytes() == clean.files["trades"].read_bytes()
    manifest = _manifest(faulted)
    for name in FAULT_NAMES:
        assert len(manifest["faults"][name]) == getattr(ROW_FAULTS, name), name
    assert manifest["rows"]["book_delta_v2"] == pl.read_parquet(faulted.files["book_delta_v2"]).height


def _deltas(day: SyntheticDay) -> pl.DataFrame:
    return pl.read_parquet(day.files["book_delta_v2"]).with_row_index("row")


def test_dropped_messages_leave_sequence_gaps(clean: SyntheticDay, faulted: SyntheticDay) -> None:
    records = _manifest(faulted)["faults"]["dropped_messages"]
    dropped = {r["sequence_number"] for r in records}
    seqs = set(_deltas(faulted)["sequence_number"].to_list())
    clean_deltas = _deltas(clean)
    assert seqs == set(clean_deltas["sequence_number"].to_list()) - dropped
    for record in records:
        seq = record["sequence_number"]
        assert seq - 1 in seqs and seq + 1 in seqs
        assert record["rows"] == clean_deltas.filter(pl.col("sequence_number") == seq).height


def test_clock_skew_episodes(clean: SyntheticDay, faulted: SyntheticDay) -> None:
    episodes = _manifest(faulted)["faults"]["clock_skew_episodes"]
    skews = [e["skew_ns"] for e in episodes]
    assert all(2e9 <= s <= 5e9 for s in skews[0::2]) and all(-2e9 <= s <= -0.5e9 for s in skews[1::2])
    for table, key in (("book_delta_v2", "delta_rows"), ("book", "book_rows")):
        clean_frame = pl.read_parquet(clean.files[table])
        frame = pl.read_parquet(faulted.files[table])
        if table == "book_delta_v2":  # compare the same messages: keep the ones both files have
            frame = frame.unique(maintain_order=True)
            frame = frame.sort("sequence_number", maintain_order=True)
            clean_frame = clean_frame.join(
                frame.select("sequence_number").unique(), on="sequence_number", how="semi", maintain_order="left"
            )
        inside = pl.lit(False)
        for episode in episodes:
            hit = pl.col("origin_time").is_between(
                episode["start_origin_time"], episode["end_origin_time"], closed="left"
            )
            skewed = frame.filter(hit)
            assert skewed.height > 0
            assert (skewed["received_time"] - skewed["origin_time"] == episode["skew_ns"]).all()
            inside = inside | hit
            if table == "book":
                assert skewed.height == episode[key]
        outside = frame.filter(~inside)["received_time"]
        assert outside.equals(clean_frame.filter(~inside)["received_time"])


def test_off_grid_and_float_noise_prices(faulted: SyntheticDay) -> None:
    deltas = _deltas(faulted)
    faults = _manifest(faulted)["faults"]
    for record in faults["off_grid_prices"]:
        rows = deltas.filter(pl.col("sequence_number") == record["sequence_number"], pl.col("price") == record["price"])
        assert rows.height == 1
        assert (_dec(record["price"]) - _dec(record["true_price"])) / TICK == Decimal("0.37")
    for record in faults["float_noise_prices"]:
        rows = deltas.filter(pl.col("sequence_number") == record["sequence_number"], pl.col("price") == record["price"])
        assert rows.height == 1
        noisy, true = record["price"], record["true_price"]
        assert noisy != true and round(noisy / 0.01) == round(true / 0.01)
        expected = true
        for _ in range(abs(record["ulps"])):
            expected = float(np.nextafter(expected, np.inf if record["ulps"] > 0 else -np.inf))
        assert noisy == expected
    touched = [r["sequence_number"] for r in faults["off_grid_prices"] + faults["float_noise_prices"]]
    other = deltas.filter(~pl.col("sequence_number").is_in(touched))
    assert _exact_on_grid(other["price"].to_numpy(), TICK)


def test_duplicated_rows_are_adjacent(faulted: SyntheticDay) -> None:
    deltas = _deltas(faulted).drop("row")
    records = _manifest(faulted)["faults"]["duplicated_rows"]
    repeated = deltas.with_columns(same=pl.all_horizontal(pl.all() == pl.all().shift(1)))
    repeated = repeated.filter(pl.col("same").fill_null(False))
    assert sorted(repeated["sequence_number"].to_list()) == sorted(r["sequence_number"] for r in records)
    for record in records:
        row = repeated.filter(pl.col("sequence_number") == record["sequence_number"]).row(0, named=True)
        assert (row["price"], row["size"], row["side_is_bid"]) == (
            record["price"],
            record["size"],
            record["side_is_bid"],
        )


def test_out_of_order_messages_are_swapped(faulted: SyntheticDay) -> None:
    order = _deltas(faulted)["sequence_number"].unique(maintain_order=True).to_list()
    records = _manifest(faulted)["faults"]["out_of_order_rows"]
    backwards = [(a, b) for a, b in zip(order, order[1:], strict=False) if b < a]
    assert sorted(backwards) == sorted((second, first) for first, second in (r["sequence_numbers"] for r in records))


def test_truncated_file_is_unreadable(tmp_path: Path) -> None:
    day = _generate(tmp_path, TRUNCATING, snapshot_interval_ms=COARSE_MS)
    records = _manifest(day)["faults"]["truncated_file"]
    assert len(records) == 1
    path = day.files["book_delta_v2"]
    assert records[0]["path"] == path.relative_to(day.root).as_posix()
    assert path.stat().st_size == records[0]["truncated_bytes"] == records[0]["original_bytes"] // 2
    with pytest.raises(pa.ArrowInvalid):
        pq.read_table(path)
    assert (
        pq.read_table(day.files["book"]).num_rows == SyntheticSettings(snapshot_interval_ms=COARSE_MS).snapshots_per_day
    )


def test_faults_apply_only_on_their_days(next_day: SyntheticDay) -> None:
    assert _manifest(next_day)["faults"] == {name: [] for name in FAULT_NAMES}
    seqs = pl.read_parquet(next_day.files["book_delta_v2"])["sequence_number"].unique().sort()
    assert (seqs.diff().drop_nulls() == 1).all()


# --- other instruments and grids --------------------------------------------------------------


@given(
    n=st.integers(min_value=0, max_value=10**9),
    digits=st.integers(min_value=1, max_value=999),
    exponent=st.integers(min_value=-8, max_value=2),
)
def test_grid_floats_are_the_nearest_to_the_decimal(n: int, digits: int, exponent: int) -> None:
    step = Decimal(digits).scaleb(exponent)
    value = float(_Grid(step).to_float(np.array([n], dtype=np.int64))[0])
    assert value == float(Decimal(n) * step)
    assert round(value / float(step)) == n


def test_other_symbol_and_grid(tmp_path: Path) -> None:
    tick, lot = Decimal("0.001"), Decimal("0.01")
    sol = Instrument(
        exchange="BINANCE_FUTURES", symbol="SOL-USDT-PERP", spec=InstrumentSpec(tick_size=tick, lot_size=lot)
    )
    day = generate_day(sol, DAY, SyntheticSettings(seed=3, snapshot_interval_ms=COARSE_MS), tmp_path, scale=0.005)
    deltas = pl.read_parquet(day.files["book_delta_v2"])
    book = pl.read_parquet(day.files["book"])
    assert 80 < deltas["price"].median() < 120  # a generic symbol trades around 100
    assert _exact_on_grid(deltas["price"].to_numpy(), tick)
    assert _exact_on_grid(deltas["size"].filter(deltas["size"] > 0).to_numpy(), lot)
    assert _exact_on_grid(book["ask_19_price"].to_numpy(), tick)
    assert (book["bid_0_price"] < book["ask_0_price"]).all()
    assert _manifest(day)["tick_size"] == "0.001"


def test_generating_a_day_and_waiting_for_it_are_progress_tasks(tmp_path: Path):
    """The watcher is told when a step waits for the synthetic day to be generated, or for another
    process that generates it (the lock on the day); a cached day is no task."""
    import contextvars
    import fcntl
    import threading

    from market_pipeline.core.telemetry import progress
    from market_pipeline.vendors.synthetic.source import SyntheticSource

    source = SyntheticSource(
        SyntheticSettings(profile="small", seed=7, scale=SCALE, snapshot_interval_ms=COARSE_MS), tmp_path
    )
    lock_path = tmp_path / ".locks" / f"BINANCE_BTC-USDT_{DAY.isoformat()}.lock"
    lock_path.parent.mkdir(parents=True)
    seen: list[progress.Update] = []
    arrived = threading.Event()

    def sink(update: progress.Update) -> None:
        if not update.transient:  # a cold kernel cache also shows the simulator compiling
            seen.append(update)
            arrived.set()

    with progress.watching(sink):
        with open(lock_path, "w") as other_process:
            fcntl.flock(other_process, fcntl.LOCK_EX)  # another description of the file: it blocks
            # a step's thread: it reports to the watcher of the context it was started in
            worker = threading.Thread(target=contextvars.copy_context().run, args=(source.ensure_day, INSTRUMENT, DAY))
            worker.start()
            assert arrived.wait(30)
            assert [u.label for u in seen] == [
                f"waiting for another process generating the synthetic day {DAY} BINANCE:BTC-USDT"
            ]
        worker.join(120)
        labels = [(u.label, u.finished) for u in seen]
        assert labels == [
            (f"waiting for another process generating the synthetic day {DAY} BINANCE:BTC-USDT", False),
            (f"waiting for another process generating the synthetic day {DAY} BINANCE:BTC-USDT", True),
            (f"generating the synthetic day {DAY} BINANCE:BTC-USDT", False),
            (f"generating the synthetic day {DAY} BINANCE:BTC-USDT", True),
        ]
        seen.clear()
        source.ensure_day(INSTRUMENT, DAY)  # generated already
        assert seen == []
