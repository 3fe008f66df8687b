"""Two sources of one instrument-day compared message by message: a vendor day (the primary
source) against a golden-sample capture of the same day (the reference), hour by hour.

What is compared (docs/data-formats.md, "Source agreement"), by one of two matchings:
`update_id` where the vendor's `sequence_number` is Binance's update id (Crypto Lake), else
`exchange_time` (Tardis: its sequence numbers are its own message counter). A vendor said to carry
update ids whose messages share not one id with the reference's is matched by exchange time
instead, with status `no_common_ids` (`DayComparison.note` says why): matched by ids it would
report every message missing and every one extra, which reads as a broken day when only the
numbering differs.
- messages by exchange update id: the capture's messages the vendor lacks, the vendor's the
  capture lacks, and the vendor's receive time minus the capture's for the messages both have
  (quantiles, in ms). By exchange time, only where the reference stamps every book message with
  its exchange time (`message_time_ns`: a Kraken capture, µs): the reference's update messages
  (not its snapshots) at an instant where the vendor has no message, one way (`_compare_instants`);
  otherwise, and the rest always, null: two messages of one instant cannot be told apart, and a
  vendor message need not be one exchange message;
- trades by exchange trade id (both matchings): missing in the vendor, extra, differing price,
  size or side;
- the vendor's book rebuilt message by message (core's replay, top level) against every
  bookTicker of the capture, best bid and ask prices and sizes exact: by update id, the vendor's
  book after its last message with an id <= the ticker's; by exchange time (`_compare_tickers_by_time`),
  the vendor's book at the end of the ticker's exchange-time instant;
- the vendor's own snapshots against the bookTicker of the same update id (a stale snapshot;
  update ids only, null otherwise);
- the two rebuilt books (the vendor's `lake/books`, the capture's under the reference area) at
  their common sample instants, the top `top_levels` levels of each side, where both are in sync.
Hours are UTC hours of the exchange time (the sample time for the books), identical in both sources.
Each side is read once in batches and spilled by hour (`agreement_spill`); memory is one batch,
then one hour of a few columns.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.rebuild import rebuild_day
from market_pipeline.core.day_clock import HOURS, NS_PER_MS
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.batches import iter_frames
from market_pipeline.core.quality.agreement_spill import HourSpill
from market_pipeline.core.quality.agreement_status import EXCHANGE_TIME, NO_COMMON_IDS, UPDATE_ID

TOP = ["bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]
TICKER_TOP = {
    "bid_price": "bid_0_price",
    "bid_size": "bid_0_size",
    "ask_price": "ask_0_price",
    "ask_size": "ask_0_size",
}

# Hourly figures, in the order of the warehouse table (after dt, instrument, hour).
COUNT_COLUMNS = (
    "messages_reference",
    "messages_vendor",
    "messages_missing",
    "messages_extra",
    "delayed_messages",
    "trades_reference",
    "trades_vendor",
    "trades_missing",
    "trades_extra",
    "trades_price_differs",
    "trades_size_differs",
    "trades_side_differs",
    "tickers",
    "tickers_matched",
    "tickers_differing",
    "tickers_unsynced",
    "tickers_same_time",
    "snapshots_compared",
    "snapshots_differing",
    "book_instants",
    "book_instants_differing",
    "book_instants_unsynced",
)
DELAY_COLUMNS = ("delay_p50_ms", "delay_p99_ms", "delay_max_ms")
# The counts of damage: an hour with any of them above zero counts in `hours_with_damage`.
DAMAGE_COLUMNS = (
    "messages_missing",
    "messages_extra",
    "delayed_messages",
    "trades_missing",
    "trades_extra",
    "trades_price_differs",
    "trades_size_differs",
    "trades_side_differs",
    "tickers_differing",
    "snapshots_differing",
    "book_instants_differing",
)
HOURLY_SCHEMA = {"hour": pl.Int64, **dict.fromkeys(COUNT_COLUMNS, pl.Int64), **dict.fromkeys(DELAY_COLUMNS, pl.Float64)}


@dataclass(frozen=True)
class AgreementInputs:
    """One instrument-day's files of both sources (lake-shaped raw tables and books)."""

    day: dt.date
    grid: Grid
    matching: str  # UPDATE_ID or EXCHANGE_TIME
    # By exchange time: the resolution of the reference's bookTicker times (Binance's E: 1 ms);
    # None when its bookTickers carry no exchange time (Binance spot): tickers not compared.
    ticker_time_ns: int | None
    contiguous: bool  # the vendor's sequence semantics, for its message-by-message rebuild
    # By exchange time: the resolution of the exchange times the reference stamps each of its book
    # messages with (a Kraken capture: 1 µs); None when it stamps none: messages not counted.
    message_time_ns: int | None
    vendor_deltas: Path
    vendor_trades: Path
    vendor_snapshots: Path
    vendor_checkpoint: Path | None  # the vendor's book at the end of the day before, when the lake has it
    vendor_books: Path | None  # lake/books of the day; None: no book comparison
    reference_deltas: Path
    reference_trades: Path
    reference_tickers: Path | None  # None: the reference has no top-of-book stream (Kraken's captures)
    reference_books: Path | None


@dataclass(frozen=True)
class DayComparison:
    """One instrument-day compared: its 24 hourly rows, its status (one of COMPARED) and, when the
    matching asked for could not be used, why (None otherwise)."""

    hourly: pl.DataFrame
    status: str
    note: str | None = None


def _spill(scratch: Path, name: str, day: dt.date, time_column: str, frames) -> HourSpill:
    spill = HourSpill(scratch, name, day, time_column)
    try:
        for frame in frames:
            spill.add(frame)
    finally:
        spill.close()
    return spill


def _messages(path: Path, batch_rows: int):
    """One row per message and batch (a message split across batches is merged per hour later)."""
    for frame in iter_frames(path, ["origin_time", "received_time", "sequence_number"], batch_rows):
        yield frame.group_by("sequence_number").agg(pl.col("origin_time").min(), pl.col("received_time").min())


def _reference_updates(path: Path, batch_rows: int):
    """`_messages` of the reference's update messages: its snapshot messages (`is_snapshot`, a
    reconnect's) are the capture's own resyncs, not exchange updates a vendor should have."""
    snapshots = "is_snapshot" in parquet_io.read_schema(path).names
    columns = ["origin_time", "received_time", "sequence_number", *(["is_snapshot"] if snapshots else [])]
    for frame in iter_frames(path, columns, batch_rows):
        updates = frame.filter(~pl.col("is_snapshot")).drop("is_snapshot") if snapshots else frame
        yield updates.group_by("sequence_number").agg(pl.col("origin_time").min(), pl.col("received_time").min())


def _instants(path: Path, resolution_ns: int, batch_rows: int):
    """The distinct exchange-time instants (`origin_time` down to `resolution_ns`) of a vendor's
    delta rows, per batch: by exchange time a vendor message is known by its instant alone (its
    `sequence_number` need not number messages)."""
    for frame in iter_frames(path, ["origin_time"], batch_rows):
        yield frame.select((pl.col("origin_time") // resolution_ns * resolution_ns).unique())


def _books(path: Path, trigger: str, columns: list[str], batch_rows: int):
    """Rows of one trigger of a books file, decimals as floats (the nearest float of each decimal,
    as a raw table holds the same value: equal values compare equal)."""
    wanted = ["origin_time", "received_time", "sequence_number", "synced", "trigger", *columns]
    for frame in iter_frames(path, wanted, batch_rows):
        yield frame.filter(pl.col("trigger") == trigger).drop("trigger").with_columns(pl.col(columns).cast(pl.Float64))


def _vendor_message_books(inputs: AgreementInputs, scratch: Path) -> Path:
    """The vendor's book after each of its messages (top level), by core's replay of its raw day."""
    output = scratch / "vendor_message_books.parquet"
    rebuild_day(
        deltas_path=inputs.vendor_deltas,
        book_path=inputs.vendor_snapshots,
        output_path=output,
        checkpoint_in=inputs.vendor_checkpoint,  # as the published books: continued from the day before
        checkpoint_out=scratch / "vendor_message_books.checkpoint.parquet",
        grid=inputs.grid,
        day=inputs.day,
        contiguous=inputs.contiguous,
        depth=1,
        interval_ms=0,  # one row per message
    )
    return output


def compare_day(inputs: AgreementInputs, scratch: Path, batch_rows: int, top_levels: int) -> DayComparison:
    """One instrument-day's hourly rows (`hour`, COUNT_COLUMNS, DELAY_COLUMNS) and how it was matched."""
    day = inputs.day
    by_time = inputs.matching == EXCHANGE_TIME
    resolution = inputs.message_time_ns
    # By exchange time, messages have no update id to be matched by: counted by instant where the
    # reference stamps its messages (`message_time_ns`), else not read; snapshots are not read.
    by_instant = by_time and resolution is not None
    if not by_time:
        vendor_frames = _messages(inputs.vendor_deltas, batch_rows)
        reference_frames = _messages(inputs.reference_deltas, batch_rows)
    elif resolution is not None:
        vendor_frames = _instants(inputs.vendor_deltas, resolution, batch_rows)
        reference_frames = _reference_updates(inputs.reference_deltas, batch_rows)
    else:
        vendor_frames = reference_frames = ()
    vendor_messages = _spill(scratch, "vendor_messages", day, "origin_time", vendor_frames)
    reference_messages = _spill(scratch, "reference_messages", day, "origin_time", reference_frames)
    trade_columns = ["origin_time", "trade_id", "side", "price", "quantity"]
    vendor_trades = _spill(
        scratch, "vendor_trades", day, "origin_time", iter_frames(inputs.vendor_trades, trade_columns, batch_rows)
    )
    reference_trades = _spill(
        scratch, "reference_trades", day, "origin_time", iter_frames(inputs.reference_trades, trade_columns, batch_rows)
    )
    ticker_columns = ["origin_time", "update_id", *TICKER_TOP]
    tickers = _spill(
        scratch,
        "tickers",
        day,
        "origin_time",
        ()
        if inputs.reference_tickers is None
        else (f.rename(TICKER_TOP) for f in iter_frames(inputs.reference_tickers, ticker_columns, batch_rows)),
    )
    snapshots = _spill(
        scratch,
        "vendor_snapshots",
        day,
        "origin_time",
        () if by_time else iter_frames(inputs.vendor_snapshots, ["origin_time", "sequence_number", *TOP], batch_rows),
    )
    message_books = _spill(
        scratch,
        "vendor_message_books",
        day,
        "origin_time",
        _books(_vendor_message_books(inputs, scratch), "message", TOP, batch_rows),
    )
    levels = [
        f"{side}_{i}_{field}" for side in ("bid", "ask") for i in range(top_levels) for field in ("price", "size")
    ]
    book_pairs = None
    if inputs.vendor_books is not None and inputs.reference_books is not None:
        book_pairs = tuple(
            _spill(scratch, name, day, "received_time", _books(path, "interval", levels, batch_rows))
            for name, path in (("vendor_books", inputs.vendor_books), ("reference_books", inputs.reference_books))
        )

    def hourly_rows(by_time: bool) -> pl.DataFrame:
        rows = []
        carry = pl.DataFrame()  # the vendor's last message book before the hour
        for hour in range(HOURS):
            row: dict[str, object] = {"hour": hour}
            if not by_time:
                row.update(_compare_messages(vendor_messages.hour(hour), reference_messages.hour(hour)))
            elif by_instant and resolution is not None:
                row.update(_compare_instants(vendor_messages.hour(hour), reference_messages.hour(hour), resolution))
            row.update(_compare_trades(vendor_trades.hour(hour), reference_trades.hour(hour)))
            hour_tickers = tickers.hour(hour)
            if not by_time:
                figures, carry = _compare_tickers(hour_tickers, message_books.hour(hour), carry)
                nearby = pl.concat([tickers.hour(hour - 1), hour_tickers]) if hour else hour_tickers
                row.update(_compare_snapshots(snapshots.hour(hour), nearby))
            elif inputs.ticker_time_ns is not None:
                books = message_books.hour(hour)
                figures, carry = _compare_tickers_by_time(hour_tickers, books, carry, inputs.ticker_time_ns)
            else:
                figures = {"tickers": hour_tickers.height}
            row.update(figures)
            if book_pairs is not None:
                row.update(_compare_books(book_pairs[0].hour(hour), book_pairs[1].hour(hour), levels))
            rows.append(row)
        return pl.DataFrame(rows, schema=HOURLY_SCHEMA)  # what is not measured: null

    hourly = hourly_rows(by_time)
    if by_time:
        return _by_exchange_time(hourly, vendor_has_rows=vendor_messages.schema is not None)
    vendor, reference = hourly["messages_vendor"].sum(), hourly["messages_reference"].sum()
    common = reference - hourly["messages_missing"].sum()
    if common == 0 and vendor and reference:
        note = (
            f"the primary's {vendor} messages share no update id with the reference's {reference}: its "
            "sequence numbers are not the exchange's update ids, so it was matched by exchange time "
            "(messages and snapshots not compared"
            + ("" if inputs.ticker_time_ns is not None else "; the reference's bookTickers carry no exchange time")
            + ")"
        )
        return DayComparison(hourly_rows(True), NO_COMMON_IDS, note)
    return DayComparison(hourly, UPDATE_ID)


def _by_exchange_time(hourly: pl.DataFrame, vendor_has_rows: bool) -> DayComparison:
    """A day matched by exchange time; its message counts dropped (null, with a note) when not one
    of the reference's messages has a vendor message at its instant although both have messages:
    the vendor's `origin_time` is then not the exchange's message time, and counting would report
    every message missing on a day that may be whole."""
    reference = hourly["messages_reference"].sum()
    if not (reference and vendor_has_rows and reference == hourly["messages_missing"].sum()):
        return DayComparison(hourly, EXCHANGE_TIME)
    note = (
        f"none of the reference's {reference} messages has a message of the primary at its exchange time, "
        "though the primary has delta rows: its origin_time is not the exchange's message time, so messages "
        "were not counted"
    )
    counts = ("messages_reference", "messages_missing")
    unmeasured = hourly.with_columns(pl.lit(None, pl.Int64).alias(c) for c in counts)
    return DayComparison(unmeasured, EXCHANGE_TIME, note)


def _compare_instants(vendor: pl.DataFrame, reference: pl.DataFrame, resolution_ns: int) -> dict[str, object]:
    """By exchange time: the reference's update messages (one row per message and batch) and those
    at an instant where the vendor has no message. One way only: a reference subscribed to a
    limited depth (Kraken's 10 levels) has no message for an update below it, so the vendor's
    messages the reference lacks are not counted (`messages_vendor`, `messages_extra`: null)."""
    reference = _per_message(reference, "origin_time")
    if reference.is_empty():
        return {"messages_reference": 0, "messages_missing": 0}
    instants = vendor["origin_time"] if vendor.width else pl.Series("origin_time", [], pl.Int64)
    present = (reference["origin_time"] // resolution_ns * resolution_ns).is_in(instants.implode())
    return {"messages_reference": reference.height, "messages_missing": reference.height - int(present.sum())}


def _per_message(frame: pl.DataFrame, time_column: str = "received_time") -> pl.DataFrame:
    if frame.is_empty():
        return pl.DataFrame(schema={"sequence_number": pl.Int64, time_column: pl.Int64})
    return frame.group_by("sequence_number").agg(pl.col(time_column).min())


def _compare_messages(vendor: pl.DataFrame, reference: pl.DataFrame) -> dict[str, object]:
    vendor, reference = _per_message(vendor), _per_message(reference)
    both = reference.join(vendor, on="sequence_number", how="inner", suffix="_vendor")
    delay = ((both["received_time_vendor"] - both["received_time"]) / NS_PER_MS).cast(pl.Float64)
    return {
        "messages_reference": reference.height,
        "messages_vendor": vendor.height,
        "messages_missing": reference.height - both.height,
        "messages_extra": vendor.height - both.height,
        "delayed_messages": int((delay != 0).sum()),
        "delay_p50_ms": delay.quantile(0.5, "nearest") if both.height else None,
        "delay_p99_ms": delay.quantile(0.99, "nearest") if both.height else None,
        "delay_max_ms": delay.max() if both.height else None,
    }


def _compare_trades(vendor: pl.DataFrame, reference: pl.DataFrame) -> dict[str, object]:
    both = reference.join(vendor, on="trade_id", how="inner", suffix="_vendor") if reference.height else reference
    if both.is_empty():
        price = size = side = 0
    else:
        price = int((both["price"] != both["price_vendor"]).sum())
        size = int((both["quantity"] != both["quantity_vendor"]).sum())
        side = int((both["side"] != both["side_vendor"]).sum())
    return {
        "trades_reference": reference.height,
        "trades_vendor": vendor.height,
        "trades_missing": reference.height - both.height,
        "trades_extra": vendor.height - both.height,
        "trades_price_differs": price,
        "trades_size_differs": size,
        "trades_side_differs": side,
    }


def _compare_tickers(
    tickers: pl.DataFrame, books: pl.DataFrame, carry: pl.DataFrame
) -> tuple[dict[str, object], pl.DataFrame]:
    """Every ticker against the vendor's book after its last message with an id <= the ticker's."""
    books = pl.concat([carry, books.select(carry.columns) if carry.width else books]) if carry.height else books
    if books.height:
        books = books.sort("sequence_number", maintain_order=True).unique(
            "sequence_number", keep="last", maintain_order=True
        )
        carry = books.tail(1)
    figures = {"tickers": tickers.height, "tickers_same_time": 0}
    if tickers.is_empty():
        return {**figures, "tickers_matched": 0, "tickers_differing": 0, "tickers_unsynced": 0}, carry
    if books.is_empty():
        return {**figures, "tickers_matched": 0, "tickers_differing": 0, "tickers_unsynced": tickers.height}, carry
    joined = tickers.sort("update_id").join_asof(
        books.select("sequence_number", "synced", *TOP),
        left_on="update_id",
        right_on="sequence_number",
        strategy="backward",
        suffix="_vendor",
    )
    return {**figures, **_ticker_verdicts(joined)}, carry


def _ticker_verdicts(joined: pl.DataFrame) -> dict[str, int]:
    """Tickers joined to the vendor's book (`*_vendor` columns, `synced`): matched where in sync and
    equal, differing where in sync and not, unsynced where the vendor's book was out of sync or absent."""
    synced = joined.filter(pl.col("synced").fill_null(False))
    equal = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"{c}_vendor")) for c in TOP])
    matched = int(synced.select(equal.sum()).item()) if synced.height else 0
    return {
        "tickers_matched": matched,
        "tickers_differing": synced.height - matched,
        "tickers_unsynced": joined.height - synced.height,
    }


def _compare_tickers_by_time(
    tickers: pl.DataFrame, books: pl.DataFrame, carry: pl.DataFrame, resolution_ns: int
) -> tuple[dict[str, object], pl.DataFrame]:
    """Every ticker against the vendor's book at the end of the ticker's exchange-time instant.

    The ticker at exchange time T (a multiple of `resolution_ns`: Binance stamps in ms) shows the
    top after the exchange's last update up to it; the vendor's book compared is the one after its
    last message, in its own order, whose exchange time is < T + resolution: every vendor message
    of the same instant counts as before the ticker, whatever its finer stamp (Tardis: µs). The
    vendor's clock is the running maximum of its messages' exchange times, so a message stamped
    earlier than one before it does not move the book back in time. Several tickers of one instant
    (the top changed several times within it): only the last (highest update id, and any repeat of
    it) shows the top at the instant's end; the others are `tickers_same_time`, not compared.
    """
    columns = ["clock", "synced", *TOP]
    if books.height:
        books = books.sort("sequence_number", maintain_order=True).with_columns(clock=pl.col("origin_time"))
        books = pl.concat([carry, books.select(columns)]) if carry.height else books.select(columns)
        books = books.with_columns(pl.col("clock").cum_max()).unique("clock", keep="last", maintain_order=True)
        carry = books.tail(1)
    else:
        books = carry
    if tickers.is_empty():
        return {"tickers": 0, "tickers_same_time": 0, "tickers_matched": 0, "tickers_differing": 0}, carry
    last = tickers.filter(pl.col("update_id") == pl.col("update_id").max().over("origin_time")).sort("origin_time")
    figures = {"tickers": tickers.height, "tickers_same_time": tickers.height - last.height}
    if books.is_empty():
        return {**figures, "tickers_matched": 0, "tickers_differing": 0, "tickers_unsynced": last.height}, carry
    joined = last.with_columns(clock=pl.col("origin_time") + (resolution_ns - 1)).join_asof(
        books, on="clock", strategy="backward", suffix="_vendor"
    )
    return {**figures, **_ticker_verdicts(joined)}, carry


def _compare_snapshots(snapshots: pl.DataFrame, tickers: pl.DataFrame) -> dict[str, object]:
    """The vendor's snapshots against the ticker of the same update id."""
    if snapshots.is_empty() or tickers.is_empty():
        return {"snapshots_compared": 0, "snapshots_differing": 0}
    latest = tickers.unique("update_id", keep="last").select("update_id", *TOP)
    both = snapshots.join(latest, left_on="sequence_number", right_on="update_id", how="inner", suffix="_ticker")
    equal = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"{c}_ticker")) for c in TOP])
    return {
        "snapshots_compared": both.height,
        "snapshots_differing": both.height - int(both.select(equal.sum()).item()),
    }


def _compare_books(vendor: pl.DataFrame, reference: pl.DataFrame, levels: list[str]) -> dict[str, object]:
    """The two rebuilt books at their common sample instants, where both are in sync."""
    if vendor.is_empty() or reference.is_empty():
        return {"book_instants": 0, "book_instants_differing": 0, "book_instants_unsynced": 0}
    both = vendor.join(reference, on="received_time", how="inner", suffix="_reference")
    synced = both.filter(pl.col("synced") & pl.col("synced_reference"))
    equal = pl.all_horizontal([pl.col(c).eq_missing(pl.col(f"{c}_reference")) for c in levels])
    return {
        "book_instants": both.height,
        "book_instants_differing": synced.height - int(synced.select(equal.sum()).item()),
        "book_instants_unsynced": both.height - synced.height,
    }


def day_summary(hourly: pl.DataFrame) -> dict[str, object]:
    """One instrument-day's figures from its hourly rows: the counts summed, the worst delays, and the
    share of compared bookTickers the vendor's book agreed with (None when none was compared)."""
    summary: dict[str, object] = {c: hourly[c].sum() if hourly[c].null_count() < HOURS else None for c in COUNT_COLUMNS}
    for column in DELAY_COLUMNS:
        summary[column] = hourly[column].max()
    # Tickers not compared at all (a reference without exchange times on them, or none): null.
    matched, differing = summary["tickers_matched"] or 0, summary["tickers_differing"] or 0
    compared = matched + differing  # type: ignore[operator]
    summary["ticker_agreement_share"] = matched / compared if compared else None  # type: ignore[operator]
    summary["hours_with_damage"] = int(
        hourly.filter(pl.any_horizontal(pl.col(*DAMAGE_COLUMNS).fill_null(0) > 0)).height
    )
    return summary
