"""One synthetic vendor day: simulate the market, inject the configured faults, write the lake.

The day streams to disk in hourly blocks (ParquetWriter row groups) so that a realistic day of
~34 M delta rows never sits in memory at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake.files import atomic_path, write_text_atomic
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.core.lake.schemas import (
    BOOK_DELTA_SCHEMA,
    BOOK_SCHEMA,
    TRADES_SCHEMA,
)
from market_pipeline.vendors.synthetic.config import FaultSettings, SyntheticSettings
from market_pipeline.vendors.synthetic.faults import DeltaRows, FaultInjector
from market_pipeline.vendors.synthetic.market_layout import LEVELS, Block, MarketParams, Snapshots, Tops, Trades
from market_pipeline.vendors.synthetic.simulator import simulate

# 2: snapshot latencies from their own stream (the messages no longer depend on the cadence).
# 3: the true top of book after every message (`TOPS_FILE`).
GENERATOR_VERSION = 3
PART_FILE = "part-0.snappy.parquet"
GROUND_TRUTH_DIR = "_ground_truth"
TRUTH_BOOK_FILE = "truth_book.parquet"  # the true book at each vendor snapshot (`BOOK_SCHEMA`)
TOPS_FILE = "truth_tops.parquet"  # the true best bid and ask after every message (`TOPS_SCHEMA`)
TOPS_SCHEMA: dict[str, pl.DataType] = {
    "sequence_number": pl.Int64(),
    **{f"{side}_0_{value}": pl.Float64() for side in ("bid", "ask") for value in ("price", "size")},
}

_PROFILE_DELTA_ROWS = {"small": 1_000_000, "realistic": 34_000_000}
# Delta rows per message that the kernel's event mix produces (measured); it turns the
# profile's row target into a message rate.
_ROWS_PER_MESSAGE = 2.79
_NOMINAL_PRICE = {"BTC": 60_000.0, "ETH": 3_000.0}
_OTHER_PRICE = 100.0
_MIN_MID_TICKS = 10_000  # the book spans ~2,000 ticks a side; a coarser grid would not hold it
_LEVEL_NOTIONAL = 25_000.0  # median resting size, in quote currency
_TRADE_NOTIONAL = 2_000.0  # median taker size, in quote currency

_LEVELS = ("bid_tick", "bid_size", "ask_tick", "ask_size")  # a block's snapshot levels
_ARROW_TYPES = {pl.Int64(): pa.int64(), pl.Float64(): pa.float64(), pl.Boolean(): pa.bool_(), pl.String(): pa.string()}


@dataclass(frozen=True)
class SyntheticDay:
    root: Path
    files: dict[str, Path]
    manifest_path: Path
    truth_book_path: Path
    rows: dict[str, int]


class _Grid:
    """Exact integer <-> float mapping for a decimal step p/q with q a power of ten.

    (n * p) / q is one correctly rounded division of two exact integers, so the float is the
    nearest one to the decimal value and round(float / step) gives n back.
    """

    def __init__(self, step: Decimal):
        _, digits, exponent = step.normalize().as_tuple()
        p = int("".join(map(str, digits)))
        self.p = p * 10**exponent if exponent > 0 else p
        self.q = 10**-exponent if exponent < 0 else 1
        self.step = step

    def to_float(self, n: np.ndarray) -> np.ndarray:
        return (n * self.p).astype(np.float64) / float(self.q)

    def check(self, largest: int, what: str) -> None:
        if largest * self.p >= 2**53 or self.q > 10**22:
            raise ValueError(f"{what} on a grid of {self.step} exceeds exact float64 range")


def _arrow_schema(schema: dict[str, pl.DataType]) -> pa.Schema:
    return pa.schema([(name, _ARROW_TYPES[dtype]) for name, dtype in schema.items()])


def _digest(*fields: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, fields)).encode()).digest()


def _unit(digest: bytes, k: int) -> float:
    """The k-th 64-bit word of a digest as a uniform in [0, 1)."""
    return int.from_bytes(digest[8 * k : 8 * k + 8], "big") / 2**64


def _market_params(instrument: Instrument, digest: bytes, messages_per_day: float) -> MarketParams:
    symbol = instrument.symbol.upper()
    nominal = next((price for prefix, price in _NOMINAL_PRICE.items() if symbol.startswith(prefix)), _OTHER_PRICE)
    price = Decimal(nominal * (0.9 + 0.2 * _unit(digest, 0)))
    mid_ticks = max(int(price / instrument.tick_size), _MIN_MID_TICKS)
    mid_price = float(mid_ticks * instrument.tick_size)
    lot = float(instrument.lot_size)
    levels = 300 + int(400 * _unit(digest, 1))
    return MarketParams(
        mid_ticks=mid_ticks,
        target_levels=levels,
        window_ticks=int(levels * 2.5),
        size_median_lots=max(1.0, _LEVEL_NOTIONAL / mid_price / lot),
        trade_median_lots=max(1.0, _TRADE_NOTIONAL / mid_price / lot),
        messages_per_day=messages_per_day,
        first_sequence=1_000_000_000 + int(1e9 * _unit(digest, 2)),
        first_trade_id=1_000_000_000 + int(1e9 * _unit(digest, 3)),
    )


def _trades_table(trades: Trades, price: _Grid, lot: _Grid) -> pa.Table:
    return pa.Table.from_arrays(
        [
            pa.array(trades.origin),
            pa.array(trades.recv),
            pc.if_else(pa.array(trades.buy), "buy", "sell"),
            pa.array(price.to_float(trades.tick)),
            pa.array(lot.to_float(trades.qty)),
            pc.cast(pa.array(trades.id), pa.string()),
        ],
        schema=_arrow_schema(TRADES_SCHEMA),
    )


def _book_table(snapshots: Snapshots, price: _Grid, lot: _Grid) -> pa.Table:
    arrays = [pa.array(snapshots.origin), pa.array(snapshots.recv), pa.array(snapshots.seq)]
    sides = ((snapshots.bid_tick, snapshots.bid_size), (snapshots.ask_tick, snapshots.ask_size))
    for ticks, sizes in sides:
        for level in range(LEVELS):
            missing = sizes[level] == 0
            mask = missing if missing.any() else None
            arrays.append(pa.array(price.to_float(ticks[level]), mask=mask))
            arrays.append(pa.array(lot.to_float(sizes[level]), mask=mask))
    return pa.Table.from_arrays(arrays, schema=_arrow_schema(BOOK_SCHEMA))


def _tops_table(tops: Tops, price: _Grid, lot: _Grid) -> pa.Table:
    prices, sizes = (tops.bid_tick, tops.ask_tick), (tops.bid_size, tops.ask_size)
    arrays = [pa.array(tops.seq)]
    for ticks, lots in zip(prices, sizes, strict=True):
        arrays += [pa.array(price.to_float(ticks)), pa.array(lot.to_float(lots))]
    return pa.Table.from_arrays(arrays, schema=_arrow_schema(TOPS_SCHEMA))


def _delta_table(rows: DeltaRows) -> pa.Table:
    return pa.Table.from_arrays(
        [pa.array(getattr(rows, name)) for name in BOOK_DELTA_SCHEMA],
        schema=_arrow_schema(BOOK_DELTA_SCHEMA),
    )


def generate_day(
    instrument: Instrument,
    day: dt.date,
    settings: SyntheticSettings,
    out_root: Path,
    *,
    scale: float = 1.0,
) -> SyntheticDay:
    """Write one instrument-day of the synthetic vendor lake under out_root, deterministically.

    scale multiplies the number of messages (tests use ~0.02 for speed); book snapshots come every
    `settings.snapshot_interval_ms` whatever the scale, and the messages do not depend on it. Same
    settings, instrument, day and scale give byte-identical files.
    """
    market_key = (settings.seed, instrument.exchange, instrument.symbol, day.isoformat(), settings.profile)
    market_digest = _digest(*market_key, scale)
    faults = settings.faults if settings.faults.applies_to(day) else FaultSettings()
    fault_digest = _digest(*market_key, scale, faults.digest_json())

    messages_per_day = _PROFILE_DELTA_ROWS[settings.profile] * scale / _ROWS_PER_MESSAGE
    params = _market_params(instrument, market_digest, messages_per_day)
    price_grid, lot_grid = _Grid(instrument.tick_size), _Grid(instrument.lot_size)
    price_grid.check(2 * params.mid_ticks, "prices")
    # Level sizes are lognormal around the median; a million times it is never reached.
    lot_grid.check(int(params.size_median_lots * 1e6), "sizes")

    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    day_start = int(midnight.timestamp()) * 1_000_000_000
    rng_state = np.frombuffer(_digest(market_digest.hex(), "rng"), dtype=np.uint64)
    injector = FaultInjector(
        faults,
        np.random.Generator(np.random.PCG64(int.from_bytes(fault_digest, "big"))),
        params.first_sequence,
        math.floor(messages_per_day),
        day_start,
        instrument.tick_size,
    )

    files = {
        table: partition_dir(out_root, table, instrument.exchange, instrument.symbol, day) / PART_FILE
        for table in ("trades", "book", "book_delta_v2")
    }
    truth_dir = partition_dir(out_root / GROUND_TRUTH_DIR, "synthetic", instrument.exchange, instrument.symbol, day)
    truth_path = truth_dir / TRUTH_BOOK_FILE
    rows = dict.fromkeys(files, 0)
    last_sequence = params.first_sequence

    with ExitStack() as stack:

        def open_writer(
            final: Path, schema: dict[str, pl.DataType], **options: object
        ) -> tuple[Path, pq.ParquetWriter]:
            tmp = stack.enter_context(atomic_path(final))
            writer = pq.ParquetWriter(tmp, _arrow_schema(schema), compression="snappy", **options)
            stack.callback(writer.close)  # on error; closing twice is harmless
            return tmp, writer

        _, trades_out = open_writer(files["trades"], TRADES_SCHEMA)
        _, book_out = open_writer(files["book"], BOOK_SCHEMA)
        _, truth_out = open_writer(truth_path, BOOK_SCHEMA)
        _, tops_out = open_writer(truth_dir / TOPS_FILE, TOPS_SCHEMA)
        # Delta values rarely repeat: dictionary pages would make the file slower and larger.
        delta_tmp, delta_out = open_writer(files["book_delta_v2"], BOOK_DELTA_SCHEMA, use_dictionary=False)

        def write_deltas(delta: DeltaRows | None) -> None:
            if delta is not None and len(delta):
                delta_out.write_table(_delta_table(delta))
                rows["book_delta_v2"] += len(delta)

        def write_trades_and_deltas(block: Block) -> None:
            t, d = block.trades, block.deltas
            if len(t.origin):
                kept = injector.drop_trades(t.origin, t.id, t.recv)
                trades = _trades_table(t, price_grid, lot_grid).take(kept)
                trades_out.write_table(trades)
                rows["trades"] += trades.num_rows
            write_deltas(
                injector.push(
                    DeltaRows(
                        origin_time=d.origin,
                        received_time=d.recv,
                        sequence_number=d.seq,
                        side_is_bid=d.bid,
                        price=price_grid.to_float(d.tick),
                        size=lot_grid.to_float(d.size),
                        tick=d.tick,
                    )
                )
            )

        def write_books(block: Block) -> None:
            if len(block.tops.seq):
                tops_out.write_table(_tops_table(block.tops, price_grid, lot_grid))
            s = block.snapshots
            if len(s.origin):
                truth = _book_table(s, price_grid, lot_grid)
                truth_out.write_table(truth)
                received = injector.skew_book(s.origin, s.recv)
                true_levels = (s.bid_tick, s.bid_size, s.ask_tick, s.ask_size)
                levels = injector.stale_book(s.origin, s.seq, true_levels)
                vendor = truth
                if levels is not true_levels:
                    stale = s._replace(**dict(zip(_LEVELS, levels, strict=True)))
                    vendor = _book_table(stale, price_grid, lot_grid)
                book_out.write_table(vendor.set_column(1, "received_time", pa.array(received)))
                rows["book"] += len(s.origin)

        # The kernel releases the GIL: it simulates the next block while two writer lanes
        # write this one. Each file has one lane, so its row order is fixed; one block in
        # flight bounds memory.
        with (
            ThreadPoolExecutor(1, "synthetic-deltas") as deltas_lane,
            ThreadPoolExecutor(1, "synthetic-books") as books_lane,
        ):
            pending: list[Future[None]] = []
            for block in simulate(params, rng_state, day_start, settings.snapshot_interval_ms * 1_000_000):
                if len(block.deltas.seq):
                    last_sequence = int(block.deltas.seq[-1])
                for future in pending:
                    future.result()
                pending = [deltas_lane.submit(write_trades_and_deltas, block), books_lane.submit(write_books, block)]
            for future in pending:
                future.result()
        write_deltas(injector.finish())
        for writer in (trades_out, book_out, truth_out, tops_out, delta_out):
            writer.close()
        injector.truncate(delta_tmp, files["book_delta_v2"], out_root)

    manifest = {
        "generator_version": GENERATOR_VERSION,
        "exchange": instrument.exchange,
        "symbol": instrument.symbol,
        "day": day.isoformat(),
        "seed": settings.seed,
        "profile": settings.profile,
        "scale": scale,
        "snapshot_interval_ms": settings.snapshot_interval_ms,
        "tick_size": str(instrument.tick_size),
        "lot_size": str(instrument.lot_size),
        "rows": rows,
        "sequence_range": [params.first_sequence, last_sequence],
        "faults": injector.records,
    }
    manifest_path = truth_dir / "manifest.json"
    write_text_atomic(manifest_path, json.dumps(manifest, indent=2) + "\n")
    return SyntheticDay(
        root=out_root,
        files=files,
        manifest_path=manifest_path,
        truth_book_path=truth_path,
        rows=rows,
    )
