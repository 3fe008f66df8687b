"""Every figure of the warehouse, recomputed from the lake files with plain polars.

The test `test_warehouse_exact.py` compares each numeric column of each warehouse table and view
with the frames built here. Nothing here imports the pipeline's quality, bars or book code: the
definitions are written out again from docs/data-formats.md, over the raw tables (`raw.*`), the
rebuilt books and the rebuild's per-snapshot agreement rows as the lake holds them, and the
rebuild's own counters from its materialization (`crossed_events`). Prices and sizes become
integer ticks and lots through their decimal spelling, never through float arithmetic.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import polars as pl

NS_PER_HOUR = 3_600_000_000_000
NS_PER_MS = 1_000_000
DAY_SECONDS = 86_400
DEPTH_BPS = (5, 10, 25)
RANKS = (("0", 0, 0), ("1", 1, 1), ("2", 2, 2), ("3", 3, 3), ("4", 4, 4), ("5_9", 5, 9), ("10_19", 10, 19))


@dataclass(frozen=True)
class Day:
    """One instrument-day's lake files."""

    lake: Path
    exchange: str
    symbol: str
    day: dt.date
    tick: Decimal
    lot: Decimal

    def _dir(self, *parts: str) -> Path:
        return self.lake.joinpath(*parts, f"exchange={self.exchange}", f"symbol={self.symbol}", f"dt={self.day}")

    def raw(self, table: str) -> pl.DataFrame:
        return pl.read_parquet(self._dir("raw", table) / "*.parquet", hive_partitioning=False)

    def books(self, columns: list[str]) -> pl.DataFrame:
        return pl.read_parquet(self._dir("books") / "*.parquet", columns=columns, hive_partitioning=False)

    def agreement(self) -> pl.DataFrame:
        return pl.read_parquet(self._dir("book_agreement") / "*.parquet", hive_partitioning=False)

    def bars(self) -> pl.DataFrame:
        return pl.read_parquet(self._dir("bars") / "*.parquet", hive_partitioning=False)

    @property
    def start_ns(self) -> int:
        return int(dt.datetime.combine(self.day, dt.time(), dt.UTC).timestamp()) * 10**9

    def hour(self, column: str) -> pl.Expr:
        return ((pl.col(column) - self.start_ns) // NS_PER_HOUR).clip(0, 23).cast(pl.Int64).alias("hour")


# ------------------------------------------------------------------------------------------
# Exact numbers from floats: the shortest decimal spelling, then integer steps
# ------------------------------------------------------------------------------------------


def _decimal(value: float) -> Decimal:
    return Decimal(repr(float(value)))


def steps(values: pl.Series, step: Decimal) -> np.ndarray:
    """Integer steps of each float (its shortest spelling over the step; must be whole)."""
    out = []
    for value in values.to_list():
        quotient = _decimal(value) / step
        if quotient != quotient.to_integral_value():
            raise AssertionError(f"{value} is not on the grid {step}")
        out.append(int(quotient))
    return np.array(out, dtype=np.int64)


def decimal_steps(values: pl.Series, step: Decimal) -> np.ndarray:
    """Integer steps of an exact decimal column (the rebuilt books)."""
    return np.array([int(v / step) for v in values.to_list()], dtype=np.int64)


def off_grid_and_noise(values: pl.Series, step: Decimal) -> tuple[int, int]:
    """(off the grid, on the grid but not the float nearest its decimal value), counted by value.

    Off grid: the value lies more than 1e-4 steps from a whole number of steps. Noise: within
    that, yet the float differs from float(n * step) for the nearest n. Decided exactly with
    Decimal once per distinct value, then counted over the rows.
    """
    off = noise = 0
    for value, count in values.drop_nulls().drop_nans().value_counts().iter_rows():
        exact = Decimal(value) / step  # the float's exact binary value, over the step
        n = exact.to_integral_value()
        if abs(exact - n) > Decimal("1e-4"):
            off += count
        elif value != float(n * step):
            noise += count
    return off, noise


def shortest_decimals(values: pl.Series) -> int | None:
    exponents = [_decimal(v).as_tuple().exponent for v in values.drop_nulls().unique().to_list()]
    return max((-e for e in exponents if isinstance(e, int)), default=None)


# ------------------------------------------------------------------------------------------
# Messages, gaps and skew from the raw deltas
# ------------------------------------------------------------------------------------------


def messages(deltas: pl.DataFrame) -> pl.DataFrame:
    """First row of each run of rows sharing (received_time, sequence_number), in file order."""
    starts = (
        (pl.col("received_time") != pl.col("received_time").shift(1))
        | (pl.col("sequence_number") != pl.col("sequence_number").shift(1))
    ).fill_null(True)
    return deltas.filter(starts).select("received_time", "origin_time", "sequence_number")


def gap_events(d: Day, deltas: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """Jumps (numbering is contiguous) and out-of-order messages; a gap is repaired by the first
    vendor snapshot received after it whose number reaches the highest number seen by then."""
    rows = []
    highest = None
    snap_recv = snapshots["received_time"].to_list()
    snap_seq = snapshots["sequence_number"].to_list()
    for recv, seq in messages(deltas).select("received_time", "sequence_number").iter_rows():
        kind = None
        if highest is not None and seq < highest:
            kind, missing = "out_of_order", 0
        elif highest is not None and seq > highest + 1:
            kind, missing = "jump", seq - highest - 1
        highest = seq if highest is None else max(highest, seq)
        if kind:
            fill = next(
                (i for i, (r, s) in enumerate(zip(snap_recv, snap_seq, strict=True)) if r >= recv and s >= highest),
                None,
            )
            rows.append(
                {
                    "kind": kind,
                    "received_time": recv,
                    "missing": missing,
                    "fill": fill,
                    "fill_received_time": None if fill is None else snap_recv[fill],
                }
            )
    schema = {"kind": pl.String, "received_time": pl.Int64, "missing": pl.Int64, "fill": pl.Int64}
    return pl.DataFrame(rows, schema={**schema, "fill_received_time": pl.Int64})


def quantile_linear(values: np.ndarray, q: float) -> float | None:
    """polars' "linear" quantile (its formula: lower + (upper - lower) * fraction)."""
    return pl.Series(values).quantile(q, "linear") if len(values) else None


def quantile_disc(values: np.ndarray, q: float) -> int | None:
    """DuckDB's `quantile_disc`, the nearest rank: the smallest value whose cumulative share of the
    values is at least q, i.e. the value at 1-based rank ceil(q * n) of the sorted values. (Not
    floor(q * (n - 1)) 0-based: the two agree on a day of 864,000 snapshots, where neighbouring
    ranks hold the same spread, and differ on 2,880: 20 ticks against DuckDB's 21.)"""
    if not len(values):
        return None
    return int(np.sort(values)[max(int(np.ceil(q * len(values))) - 1, 0)])


def skew_figures(msgs: pl.DataFrame) -> dict[str, float | None]:
    skew = ((msgs["received_time"] - msgs["origin_time"]).to_numpy()).astype(np.float64) / NS_PER_MS
    if not len(skew):
        return dict.fromkeys(("skew_p1_ms", "skew_p50_ms", "skew_p99_ms", "skew_max_ms", "skew_min_ms"), None) | {
            "skew_negative_share": None
        }
    return {
        "skew_p1_ms": quantile_linear(skew, 0.01),
        "skew_p50_ms": quantile_linear(skew, 0.50),
        "skew_p99_ms": quantile_linear(skew, 0.99),
        "skew_max_ms": float(skew.max()),
        "skew_min_ms": float(skew.min()),
        "skew_negative_share": float((skew < 0).mean()),
    }


# ------------------------------------------------------------------------------------------
# validation_reports and validation_reports_hourly
# ------------------------------------------------------------------------------------------


def validation(d: Day, crossed_events: int | None) -> tuple[dict[str, object], pl.DataFrame]:
    deltas, snapshots, trades = d.raw("book_delta_v2"), d.raw("book"), d.raw("trades")
    agreement = d.agreement()
    books = d.books(["received_time", "synced", "bid_0_price", "ask_0_price"])
    msgs = messages(deltas)
    events = gap_events(d, deltas, snapshots)
    divergent = agreement.filter(~pl.col("matched") & pl.col("synced_before"))
    fills = events.filter(pl.col("fill").is_not_null()).unique("fill")

    # Mid deviation: half ticks from the rebuild's agreement rows; bps against the vendor's mid.
    vendor_mid = snapshots.select(
        "received_time", "sequence_number", ((pl.col("bid_0_price") + pl.col("ask_0_price")) / 2).alias("mid")
    )
    dev = agreement.join(vendor_mid, on=["received_time", "sequence_number"], how="left", maintain_order="left")
    assert dev.height == agreement.height and dev["mid"].null_count() == 0
    ticks = (dev["mid_deviation_half_ticks"].abs() / 2).to_numpy().astype(np.float64)
    bps = ticks * float(d.tick) / dev["mid"].to_numpy() * 1e4
    masks = agreement["mismatched_level_mask"].to_numpy()
    mismatched = agreement.filter(~pl.col("matched"))

    flags = [
        off_grid_and_noise(deltas["price"], d.tick),
        off_grid_and_noise(deltas["size"], d.lot),
        off_grid_and_noise(trades["price"], d.tick),
        off_grid_and_noise(trades["quantity"], d.lot),
        *(
            off_grid_and_noise(snapshots[c], d.tick if c.endswith("_price") else d.lot)
            for c in snapshots.columns
            if c.startswith(("bid_", "ask_"))
        ),
    ]
    unsynced = int((~books["synced"]).sum())
    touch = books.filter("synced").drop_nulls(["bid_0_price", "ask_0_price"]).sort("received_time")
    with_touch = (
        trades.select("received_time", "price")
        .sort("received_time")
        .join_asof(touch.select("received_time", "bid_0_price", "ask_0_price"), on="received_time")
        .drop_nulls("bid_0_price")
    )
    inside = [
        bid <= _decimal(p) <= ask
        for p, bid, ask in with_touch.select("price", "bid_0_price", "ask_0_price").iter_rows()
    ]
    row = {
        "messages": msgs.height,
        "delta_rows": deltas.height,
        "trades": trades.height,
        "gaps_detected": events.height + divergent.height,
        "gaps_filled": fills.height + divergent.height,
        "gaps_unrepaired": events.filter(pl.col("fill").is_null()).height,
        "sequence_jumps": events.filter(pl.col("kind") == "jump").height,
        "chain_breaks": 0,
        "missing_sequence_numbers": int(events["missing"].sum()),
        "out_of_order_messages": events.filter(pl.col("kind") == "out_of_order").height,
        "divergences": divergent.height,
        "vendor_snapshots": agreement.height,
        "snapshots_mismatched": mismatched.height,
        "max_mid_dev_ticks": float(ticks.max()),
        "p99_mid_dev_ticks": quantile_linear(ticks, 0.99),
        "max_mid_dev_bps": float(bps.max()),
        "p99_mid_dev_bps": quantile_linear(bps, 0.99),
        "snapshot_exact_match_share": float(agreement["matched"].mean()),
        "book_rows": books.height,
        "unsynced_rows": unsynced,
        "unsynced_share": unsynced / books.height,
        "mismatches_by_level": [int(((masks >> level) & 1).sum()) for level in range(20)],
        "levels_mismatched_mean": float(mismatched["levels_mismatched"].mean() or 0.0),
        **skew_figures(msgs),
        "off_grid_values": sum(off for off, _ in flags),
        "precision_loss_events": sum(noise for _, noise in flags),
        "price_decimals_max": shortest_decimals(deltas["price"]),
        "crossed_events": crossed_events,
        "vendor_crossed_snapshots": snapshots.filter(pl.col("bid_0_price") >= pl.col("ask_0_price")).height,
        "rebuilt_crossed_rows": books.filter(pl.col("bid_0_price") >= pl.col("ask_0_price")).height,
        "trades_at_or_inside_touch_share": sum(inside) / len(inside) if inside else None,
        # A vendor day, not a capture: the capture's figures are absent.
        "capture_files": None,
        "capture_ticker_checks": None,
        "capture_ticker_agreement_share": None,
        "capture_samples": None,
        "ks_spread_statistic": None,
        "ks_spread_pvalue": None,
        "ks_mid_return_statistic": None,
        "ks_mid_return_pvalue": None,
        # A synthetic vendor's day: no exchange checksums.
        "checksums_checked": None,
        "checksum_mismatches": None,
        "checksums_unchecked": None,
        "first_checksum_mismatch_file": None,
        "first_checksum_mismatch_line": None,
        "first_checksum_mismatch_received_time": None,
    }

    hours = pl.DataFrame({"hour": pl.Series(range(24), dtype=pl.Int64)})
    detected = pl.concat([events.select(d.hour("received_time")), divergent.select(d.hour("received_time"))])
    filled = pl.concat([fills.select(d.hour("fill_received_time")), divergent.select(d.hour("received_time"))])
    per_hour_skew = []
    for hour in range(24):
        in_hour = msgs.filter(d.hour("received_time") == hour)
        figures = skew_figures(in_hour)
        per_hour_skew.append({"hour": hour, "messages": in_hour.height, **figures})
    hourly = (
        hours.join(pl.DataFrame(per_hour_skew).drop("skew_min_ms"), on="hour", how="left")
        .join(detected.group_by("hour").agg(pl.len().cast(pl.Int64).alias("gaps_detected")), on="hour", how="left")
        .join(filled.group_by("hour").agg(pl.len().cast(pl.Int64).alias("gaps_filled")), on="hour", how="left")
        .join(
            books.group_by(d.hour("received_time")).agg(
                pl.len().cast(pl.Int64).alias("book_rows"),
                (~pl.col("synced")).sum().cast(pl.Int64).alias("unsynced_rows"),
            ),
            on="hour",
            how="left",
        )
        .with_columns(pl.col("gaps_detected", "gaps_filled", "book_rows", "unsynced_rows").fill_null(0))
    )
    return row, hourly


# ------------------------------------------------------------------------------------------
# pipeline_metrics and pipeline_metrics_hourly (microstructure)
# ------------------------------------------------------------------------------------------


def _ticks(frame: pl.DataFrame, columns: list[str], step: Decimal) -> np.ndarray:
    """Integer steps of exact on-grid values: their nearest whole number of steps."""
    return np.column_stack(
        [np.rint(frame[c].cast(pl.Float64).to_numpy() / float(step)).astype(np.int64) for c in columns]
    )


def microstructure(d: Day, levels: int = 20) -> tuple[dict[str, object], pl.DataFrame]:
    level_cols = [f"{side}_{i}_{f}" for side in ("bid", "ask") for i in range(levels) for f in ("price", "size")]
    snaps = (
        d.books(["received_time", "trigger", *level_cols])
        .filter(
            (pl.col("trigger") == "snapshot")
            & pl.col("bid_0_price").is_not_null()
            & pl.col("ask_0_price").is_not_null()
        )
        .sort("received_time", maintain_order=True)
    )
    bid_p = _ticks(snaps, [f"bid_{i}_price" for i in range(levels)], d.tick)
    ask_p = _ticks(snaps, [f"ask_{i}_price" for i in range(levels)], d.tick)
    bid_s = _ticks(snaps, [f"bid_{i}_size" for i in range(levels)], d.lot)
    ask_s = _ticks(snaps, [f"ask_{i}_size" for i in range(levels)], d.lot)
    bid_null = np.column_stack([snaps[f"bid_{i}_price"].is_null().to_numpy() for i in range(levels)])
    ask_null = np.column_stack([snaps[f"ask_{i}_price"].is_null().to_numpy() for i in range(levels)])
    spread = ask_p[:, 0] - bid_p[:, 0]
    twice_mid = bid_p[:, 0] + ask_p[:, 0]
    shape = {"hour": snaps.select(d.hour("received_time"))["hour"].to_numpy(), "spread": spread}
    for n in DEPTH_BPS:
        # |2 p - (b0 + a0)| * 10_000 <= n (b0 + a0), in ticks, over the levels present.
        within_bid = (np.abs(2 * bid_p - twice_mid[:, None]) * 10_000 <= n * twice_mid[:, None]) & ~bid_null
        within_ask = (np.abs(2 * ask_p - twice_mid[:, None]) * 10_000 <= n * twice_mid[:, None]) & ~ask_null
        shape[f"depth_{n}"] = (bid_s * within_bid).sum(axis=1) + (ask_s * within_ask).sum(axis=1)
    shape = pl.DataFrame(shape)

    deltas = d.raw("book_delta_v2")
    msgs = messages(deltas)
    trades = d.raw("trades")
    # Rank of each delta row against the last rebuilt snapshot received strictly before it.
    snap_index = snaps.select(pl.col("received_time").alias("snap_time"), pl.int_range(pl.len()).alias("snap"))
    joined = (
        deltas.select("received_time", "side_is_bid", "price")
        .with_row_index("row")
        .sort("received_time", maintain_order=True)
        .join_asof(snap_index, left_on="received_time", right_on="snap_time", allow_exact_matches=False)
        .drop_nulls("snap")
    )
    snap = joined["snap"].to_numpy()
    price = np.rint(joined["price"].to_numpy() / float(d.tick)).astype(np.int64)
    is_bid = joined["side_is_bid"].to_numpy()
    better_bid = ((bid_p[snap] > price[:, None]) & ~bid_null[snap]).sum(axis=1)
    better_ask = ((ask_p[snap] < price[:, None]) & ~ask_null[snap]).sum(axis=1)
    rank = np.where(is_bid, better_bid, better_ask)
    counts = np.bincount(np.minimum(rank, levels), minlength=levels + 1)

    def shape_figures(frame: pl.DataFrame, lot: float) -> dict[str, object]:
        spreads = frame["spread"].to_numpy()
        return {
            "snapshots": frame.height,
            "spread_p50_ticks": quantile_disc(spreads, 0.5),
            **{f"depth_{n}bps_mean": (frame[f"depth_{n}"].mean() * lot if frame.height else None) for n in DEPTH_BPS},
        }

    lot = float(d.lot)
    spreads = shape["spread"].to_numpy()
    daily = {
        **shape_figures(shape, lot),
        "spread_p90_ticks": quantile_disc(spreads, 0.9),
        "spread_p99_ticks": quantile_disc(spreads, 0.99),
        "spread_mean_ticks": float(spreads.mean()),
        "book_messages": msgs.height,
        "trades": trades.height,
        "trade_to_book_ratio": trades.height / msgs.height,
        "book_updates_unranked": deltas.height - int(counts.sum()),
        **{f"updates_per_s_rank_{label}": int(counts[lo : hi + 1].sum()) / DAY_SECONDS for label, lo, hi in RANKS},
        "updates_per_s_rank_deeper": int(counts[levels]) / DAY_SECONDS,
    }
    rows = []
    for hour in range(24):
        in_hour = shape.filter(pl.col("hour") == hour)
        m = msgs.filter(d.hour("received_time") == hour).height
        t = trades.filter(d.hour("received_time") == hour).height
        rows.append(
            {
                "hour": hour,
                **shape_figures(in_hour, lot),
                "book_messages": m,
                "book_delta_rows": deltas.filter(d.hour("received_time") == hour).height,
                "trades": t,
                "trade_to_book_ratio": t / m if m else None,
            }
        )
    return daily, pl.DataFrame(rows)


# ------------------------------------------------------------------------------------------
# Bars: every interval from the raw trades, the book columns from the rebuilt books
# ------------------------------------------------------------------------------------------


def _vwap(quote: Decimal, volume: Decimal, tick: Decimal) -> Decimal:
    """quote / volume, rounded half up to the tick's decimals + 4."""
    places = Decimal(1).scaleb(tick.normalize().as_tuple().exponent - 4)
    return (quote / volume).quantize(places, rounding="ROUND_HALF_UP")


def bars(d: Day, every_ns: int) -> list[dict[str, object]]:
    """OHLCV bars of one interval from the day's trades (origin time in the day), in exact decimals,
    in time order (equal times in file order); mid, spread and book time from the last in-sync
    rebuilt book at or before the bar's last nanosecond."""
    trades = (
        d.raw("trades")
        .filter(pl.col("origin_time").is_between(d.start_ns, d.start_ns + DAY_SECONDS * 10**9 - 1))
        .sort("origin_time", maintain_order=True)
    )
    out: dict[int, dict[str, object]] = {}
    for time, price, qty, side in trades.select("origin_time", "price", "quantity", "side").iter_rows():
        price, qty = _decimal(price), _decimal(qty)
        start = time - (time - d.start_ns) % every_ns
        bar = out.get(start)
        if bar is None:
            bar = out[start] = {"open": price, "high": price, "low": price, "volume": Decimal(0)}
            bar |= {"quote_volume": Decimal(0), "buy_volume": Decimal(0), "trade_count": 0}
        bar["high"], bar["low"], bar["close"] = max(bar["high"], price), min(bar["low"], price), price
        bar["volume"] += qty
        bar["quote_volume"] += price * qty
        bar["buy_volume"] += qty if side == "buy" else 0
        bar["trade_count"] += 1
    books = (
        d.books(["origin_time", "synced", "bid_0_price", "ask_0_price"])
        .filter("synced")
        .drop_nulls(["bid_0_price", "ask_0_price"])
        .sort("origin_time", maintain_order=True)
    )
    ends = pl.DataFrame({"end": [start + every_ns - 1 for start in sorted(out)]}, schema={"end": pl.Int64})
    touch = ends.join_asof(books, left_on="end", right_on="origin_time", strategy="backward")
    rows = []
    for (start, bar), book in zip(sorted(out.items()), touch.iter_rows(named=True), strict=True):
        bid, ask = book["bid_0_price"], book["ask_0_price"]
        rows.append(
            {
                "bar_start": start,
                **bar,
                "vwap": _vwap(bar["quote_volume"], bar["volume"], d.tick),
                "mid": None if bid is None else (bid + ask) / 2,
                "spread": None if bid is None else ask - bid,
                "book_time": book["origin_time"],
            }
        )
    return rows


def bars_summary(d: Day, every_ns: int) -> dict[str, object]:
    rows = bars(d, every_ns)
    trades = d.raw("trades")
    in_day = trades["origin_time"].is_between(d.start_ns, d.start_ns + DAY_SECONDS * 10**9 - 1)
    off_price = sum(1 for v in trades["price"].to_list() if (_decimal(v) / d.tick) % 1)
    off_qty = sum(1 for v in trades["quantity"].to_list() if (_decimal(v) / d.lot) % 1)
    return {
        "bars": len(rows),
        "trades": sum(r["trade_count"] for r in rows),
        "volume": sum((r["volume"] for r in rows), Decimal(0)),
        "quote_volume": sum((r["quote_volume"] for r in rows), Decimal(0)),
        "buy_volume": sum((r["buy_volume"] for r in rows), Decimal(0)),
        "bars_without_book": sum(1 for r in rows if r["mid"] is None),
        "trades_outside_day": int((~in_day).sum()),
        "off_grid_trades": off_price + off_qty,
    }
