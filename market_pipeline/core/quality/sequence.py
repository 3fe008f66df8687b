"""Sequence gaps in a raw `book_delta_v2` day, and which vendor snapshot repairs each one.

Mirrors the book kernel (`core/book/delta_replay.py`) so the figures match the rebuild's counters:
- a message is a run of rows sharing (received_time, sequence_number);
- a message numbered below the highest number seen so far is out of order (the kernel skips
  it, so its update is lost until the next snapshot);
- with contiguous numbering (+1 per message) a message more than one above the highest number
  seen so far is a jump, missing `sequence_number - previous - 1` messages; with monotonic
  numbering a jump proves nothing and is not reported here (the rebuild finds those gaps as
  divergences from the next vendor snapshot);
- a gap is **repaired** when the same day's `book` table holds a vendor snapshot with
  `sequence_number >=` the highest number seen once the gap has happened: the kernel
  processes that snapshot after the gap and refills the book from it. A gap with no such
  snapshot leaves the book wrong for the rest of the day (and in the end-of-day checkpoint).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from numba import njit

JUMP = "jump"
OUT_OF_ORDER = "out_of_order"

GAP_SCHEMA = {
    "kind": pl.String,
    "received_time": pl.Int64,
    "origin_time": pl.Int64,
    "sequence_number": pl.Int64,
    "previous_sequence_number": pl.Int64,
    "missing_sequence_numbers": pl.Int64,
    "repaired": pl.Boolean,
    "fill_snapshot": pl.Int64,  # row of the repairing snapshot in the day's book table
    "fill_received_time": pl.Int64,
    "fill_sequence_number": pl.Int64,
}


def gap_messages(msgs: pl.DataFrame, contiguous: bool) -> pl.DataFrame:
    """The messages that are gap events, with `kind` and `missing_sequence_numbers`.

    `msgs` has a row per message with sequence_number and previous_sequence_number (the highest
    number seen before it; null for the day's first message, which is no event).
    """
    is_out_of_order = pl.col("sequence_number") < pl.col("previous_sequence_number")
    is_jump = pl.lit(contiguous) & (pl.col("sequence_number") > pl.col("previous_sequence_number") + 1)
    return msgs.filter((is_out_of_order | is_jump).fill_null(False)).with_columns(
        pl.when(is_out_of_order).then(pl.lit(OUT_OF_ORDER)).otherwise(pl.lit(JUMP)).alias("kind"),
        pl.when(is_out_of_order)
        .then(0)
        .otherwise(pl.col("sequence_number") - pl.col("previous_sequence_number") - 1)
        .alias("missing_sequence_numbers"),
    )


@njit(cache=True, nogil=True)
def gap_rows(received, sequence, contiguous, max_before, has_max, lead_received, lead_sequence):
    """The rows of a chunk whose message is a gap event, the highest number seen before each,
    and the highest number after the chunk: `gap_messages` over the chunk's messages in one
    pass (the day statistics' batches, chunk by chunk). `max_before` is the highest number of
    the earlier chunks (`has_max` False: none yet, and the day's first message is no event).
    The chunk's first row starts a message unless it has the lead key (the last row of the
    chunk before it in the same batch; pass an empty `lead_received` for a batch's first chunk).
    """
    rows = np.empty(received.shape[0], dtype=np.int64)
    previous = np.empty(received.shape[0], dtype=np.int64)
    found = 0
    running = max_before
    for i in range(received.shape[0]):
        if i > 0 and received[i] == received[i - 1] and sequence[i] == sequence[i - 1]:
            continue  # not a message start
        if i == 0 and lead_received.shape[0] and received[0] == lead_received[0] and sequence[0] == lead_sequence[0]:
            continue
        number = sequence[i]
        if has_max and (number < running or (contiguous and number > running + 1)):
            rows[found] = i
            previous[found] = running
            found += 1
        running = max(running, number) if has_max else number
        has_max = True
    return rows[:found], previous[:found], running


def repair_gaps(events: pl.DataFrame, snapshots: pl.DataFrame) -> pl.DataFrame:
    """Gap events (the first six GAP_SCHEMA columns) with the vendor snapshot that repairs each
    (GAP_SCHEMA); `snapshots` has the day's vendor snapshots' sequence_number and received_time
    in file order.

    The kernel processes snapshot k once a message numbered above it arrives, so the first
    snapshot (in file order) numbered at or above the highest number seen repairs the gap.
    """
    resume = np.maximum(events["sequence_number"].to_numpy(), events["previous_sequence_number"].to_numpy()).astype(
        np.int64
    )
    snap_seq = snapshots["sequence_number"].to_numpy().astype(np.int64)
    snap_recv = snapshots["received_time"].to_numpy()
    running = np.maximum.accumulate(snap_seq) if len(snap_seq) else snap_seq
    fill = np.searchsorted(running, resume, side="left")
    repaired = fill < len(snap_seq)
    safe = np.where(repaired, fill, 0)
    fill_recv = np.where(repaired, snap_recv[safe] if len(snap_recv) else 0, 0)
    fill_seq = np.where(repaired, snap_seq[safe] if len(snap_seq) else 0, 0)
    return (
        events.with_columns(
            pl.Series("repaired", repaired, pl.Boolean),
            pl.Series("fill_snapshot", np.where(repaired, fill, -1), pl.Int64),
            pl.Series("fill_received_time", fill_recv, pl.Int64),
            pl.Series("fill_sequence_number", fill_seq, pl.Int64),
        )
        .with_columns(
            [
                pl.when(pl.col("repaired")).then(pl.col(c)).otherwise(None).alias(c)
                for c in ("fill_snapshot", "fill_received_time", "fill_sequence_number")
            ]
        )
        .select(list(GAP_SCHEMA))
        .cast(GAP_SCHEMA)
    )
