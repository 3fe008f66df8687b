"""Crypto Lake table schemas as stored in our raw lake, and the vendor's alternative spellings.

Times are int64 nanoseconds since the Unix epoch (UTC): exact, and the kernel reads them
without conversion. Prices and sizes are float64 as the vendor publishes them; the book
stage maps them onto the instrument's integer tick and lot grid.
"""

from __future__ import annotations

import polars as pl

BOOK_LEVELS = 20

TRADES_SCHEMA: dict[str, pl.DataType] = {
    "origin_time": pl.Int64(),
    "received_time": pl.Int64(),
    "side": pl.String(),  # taker side: "buy" or "sell"
    "price": pl.Float64(),
    "quantity": pl.Float64(),
    "trade_id": pl.String(),
}

BOOK_DELTA_SCHEMA: dict[str, pl.DataType] = {
    "origin_time": pl.Int64(),
    "received_time": pl.Int64(),
    "sequence_number": pl.Int64(),
    "side_is_bid": pl.Boolean(),
    "price": pl.Float64(),
    "size": pl.Float64(),  # absolute size at the level; 0 removes it
}


def book_level_columns(levels: int = BOOK_LEVELS) -> list[str]:
    """bid_0_price, bid_0_size, ... bid_{n-1}_size, ask_0_price, ... in the vendor's order."""
    return [f"{side}_{i}_{field}" for side in ("bid", "ask") for i in range(levels) for field in ("price", "size")]


BOOK_SCHEMA: dict[str, pl.DataType] = {
    "origin_time": pl.Int64(),
    "received_time": pl.Int64(),
    "sequence_number": pl.Int64(),
    **{name: pl.Float64() for name in book_level_columns()},  # null where a side has fewer levels
}

# Binance captures carry the update-id chain beside the Crypto Lake columns.
CAPTURE_DELTA_EXTRA_SCHEMA: dict[str, pl.DataType] = {
    "first_update_id": pl.Int64(),  # Binance U
    "prev_update_id": pl.Int64(),  # Binance pu (futures only; null on spot)
}

BOOK_TICKER_SCHEMA: dict[str, pl.DataType] = {
    "origin_time": pl.Int64(),  # exchange event/transaction time when given, else received_time
    "received_time": pl.Int64(),
    "update_id": pl.Int64(),  # Binance u
    "bid_price": pl.Float64(),
    "bid_size": pl.Float64(),
    "ask_price": pl.Float64(),
    "ask_size": pl.Float64(),
}

# Full-depth REST snapshots of a capture, one row per level (long format).
DEPTH_SNAPSHOT_SCHEMA: dict[str, pl.DataType] = {
    "received_time": pl.Int64(),
    "last_update_id": pl.Int64(),
    "side_is_bid": pl.Boolean(),
    "price": pl.Float64(),
    "size": pl.Float64(),
}

# Columns a source may add to a table: kept when a file has them, never required. Binance
# captures carry the update-id chain and the capture line order an exact replay needs;
# `is_snapshot` (Tardis.dev) marks rows of full-book snapshot messages (absent = all false).
OPTIONAL_COLUMNS: dict[str, dict[str, pl.DataType]] = {
    "book_delta_v2": {**CAPTURE_DELTA_EXTRA_SCHEMA, "line_no": pl.Int64(), "is_snapshot": pl.Boolean()},
    "depth_snapshot": {"line_no": pl.Int64()},
    "book_ticker": {"line_no": pl.Int64()},
}
# Columns where null is a legal value (spot diffs have no `pu`).
NULLABLE_COLUMNS = frozenset({"prev_update_id"})

# Vendor table name -> schema of the stored table.
TABLE_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "trades": TRADES_SCHEMA,
    "book": BOOK_SCHEMA,
    "book_delta_v2": BOOK_DELTA_SCHEMA,
    "book_ticker": BOOK_TICKER_SCHEMA,
    "depth_snapshot": DEPTH_SNAPSHOT_SCHEMA,
}

# Columns the vendor stores under another name (its client renames them on read).
VENDOR_ALIASES: dict[str, str] = {
    "timestamp": "origin_time",
    "receipt_timestamp": "received_time",
    "amount": "quantity",
    "id": "trade_id",
}

# Columns that must be finite and non-negative; prices must also be > 0.
PRICE_COLUMNS = {"price", "bid_price", "ask_price"}
SIZE_COLUMNS = {"quantity", "size", "bid_size", "ask_size"}
