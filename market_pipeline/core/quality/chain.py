"""Breaks of the exchange's update-id chain in a capture's raw `book_delta_v2` day (Binance, OKX, Bybit).

A capture's deltas carry each message's `U` (`first_update_id`), `u` (`sequence_number`) and,
where the exchange chains by it, the previous message's id (`prev_update_id`: Binance futures'
`pu`, OKX's `prevSeqId`, Bybit's `u` chain); rows of one message share `line_no`. The chain holds
when every message follows the one before it (`update_chain.message_breaks`: spot-style
`U == previous u + 1`, futures-style `pu == previous u`): a break is a lost message or a
reconnect, and the rebuild's book stays out of sync from there until a snapshot re-syncs it
(Binance's `vendors/binance/sync_kernel.py` applies the same rule; OKX's and Bybit's generic
replay asks `message_breaks` itself). The Crypto Lake sequence checks (`sequence.py`) cannot see
this: update ids only grow, so a jump proves nothing without the chain fields. The first message
of the day has no predecessor here (Binance's rebuild checks it against the previous day's
checkpoint).

Events have the gap events' columns (`day_stats.EVENT_SCHEMA`), kind `chain_break`; for spot
diffs `missing_sequence_numbers` counts the update ids skipped, for futures it is null (their
ids are shared across symbols, so the count is unknown).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from market_pipeline.core.lake.batches import column_chunks
from market_pipeline.core.quality.day_stats import EVENT_SCHEMA
from market_pipeline.core.update_chain import CHAIN_FIELDS, ChainCarry, MessageBreaks, message_breaks

CHAIN_BREAK = "chain_break"
CHAIN_COLUMNS = ["received_time", "origin_time", "sequence_number", *CHAIN_FIELDS]
_NONE = np.zeros(0, np.int64)  # `prev_update_id` of a spot-style chunk: no row has one


class ChainBreaks:
    """The chain breaks of a day's deltas, batch by batch in file order (any cuts): `add` each
    batch (with at least CHAIN_COLUMNS), then `frame()`. The raw import gathers them in its one
    pass over the day (`day_stats_builder`), so the checks never read the day again for them."""

    def __init__(self) -> None:
        self._found: list[pl.DataFrame] = []
        self._carry = ChainCarry()

    def add(self, frame: pl.DataFrame) -> None:
        # Chunk by chunk (a batch glued by `message_aligned` is in several), as to_numpy copies a
        # column of several chunks whole: 0.17 s over the bench day's capture deltas, against 0.26 s.
        start = 0
        for line, u, first, prev in column_chunks(
            frame, ["line_no", "sequence_number", "first_update_id", "prev_update_id"]
        ):
            if prev.null_count() == len(prev):  # spot-style throughout (no id of the previous message)
                prev_values, prev_valid = _NONE, _NONE.astype(np.bool_)
            else:
                prev_values, prev_valid = prev.fill_null(-1).to_numpy(), prev.is_not_null().to_numpy()
            messages = message_breaks(
                line.to_numpy(), u.to_numpy(), first.to_numpy(), prev_values, prev_valid, self._carry
            )
            self._carry = messages.carry
            if messages.broken.any():
                self._found.append(_events(frame.slice(start, len(line)), messages))
            start += len(line)

    def frame(self) -> pl.DataFrame:
        """The breaks found so far (`day_stats.EVENT_SCHEMA`), in file order."""
        return pl.concat(self._found) if self._found else pl.DataFrame(schema=EVENT_SCHEMA)


def _events(rows: pl.DataFrame, messages: MessageBreaks) -> pl.DataFrame:
    """The break events (`day_stats.EVENT_SCHEMA`) of the messages of `rows`."""
    heads = rows.select(CHAIN_COLUMNS).filter(pl.Series(messages.head))
    first, previous = heads["first_update_id"].to_numpy(), messages.previous
    missing = pl.Series(np.maximum(first - previous - 1, 0))
    return (
        heads.with_columns(
            pl.lit(CHAIN_BREAK).alias("kind"),
            pl.Series("previous_sequence_number", previous),
            pl.when(pl.Series(messages.futures)).then(None).otherwise(missing).alias("missing_sequence_numbers"),
        )
        .filter(pl.Series(messages.broken))
        .select(list(EVENT_SCHEMA))
        .cast(EVENT_SCHEMA)
    )


def chain_breaks(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """The chain breaks of a day's deltas given as CHAIN_COLUMNS frames in file order (any cuts)."""
    breaks = ChainBreaks()
    for frame in frames:
        breaks.add(frame)
    return breaks.frame()
