"""Breaks of the exchange's update-id chain in a Binance capture's raw `book_delta_v2` day.

A capture's deltas carry each diff's `U` (`first_update_id`), `u` (`sequence_number`) and, on
futures, `pu` (`prev_update_id`); rows of one diff share `line_no`. The chain holds when every
diff follows the one before it (spot `U == previous u + 1`, futures `pu == previous u`): a break is
a lost diff or a reconnect, and the rebuild's book stays out of sync from there until a REST
snapshot re-syncs it (`vendors/binance/sync_kernel.py` applies the same rule). The Crypto Lake
sequence checks (`sequence.py`) cannot see this: update ids only grow, so a jump proves nothing
without the chain fields. The first diff of the day has no predecessor here (the rebuild checks
it against the previous day's checkpoint).

Events have the gap events' columns (`day_stats.EVENT_SCHEMA`), kind `chain_break`; for spot
diffs `missing_sequence_numbers` counts the update ids skipped, for futures it is null (their
ids are shared across symbols, so the count is unknown).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import polars as pl

from market_pipeline.core.quality.sequence import GAP_SCHEMA

CHAIN_BREAK = "chain_break"
CHAIN_COLUMNS = ["received_time", "origin_time", "sequence_number", "first_update_id", "prev_update_id", "line_no"]
_EVENT_COLUMNS = list(GAP_SCHEMA)[:6]


def has_chain(columns: Iterable[str]) -> bool:
    """Whether a deltas file with these columns was written from a capture (carries the chain)."""
    return {"first_update_id", "prev_update_id", "line_no"} <= set(columns)


def chain_breaks(frames: Iterable[pl.DataFrame]) -> pl.DataFrame:
    """The chain breaks of a day's deltas given as CHAIN_COLUMNS frames in file order (any cuts)."""
    found: list[pl.DataFrame] = []
    last_line, last_u = None, None
    for frame in frames:
        line = frame["line_no"].to_numpy()
        head = np.r_[line[:1] != last_line if last_line is not None else [True], line[1:] != line[:-1]]
        heads = frame.filter(pl.Series(head))
        if not heads.height:
            continue
        u = heads["sequence_number"].to_numpy()
        previous = np.r_[[-1 if last_u is None else last_u], u[:-1]]
        has_previous = np.r_[[last_u is not None], np.ones(len(u) - 1, dtype=bool)]
        first = heads["first_update_id"].to_numpy()
        pu = heads["prev_update_id"]
        futures = pu.is_not_null().to_numpy()
        pu = pu.fill_null(-1).to_numpy()
        broken = has_previous & np.where(futures, pu != previous, first != previous + 1)
        if broken.any():
            missing = pl.Series(np.where(futures, 0, np.maximum(first - previous - 1, 0)))
            found.append(
                heads.with_columns(
                    pl.lit(CHAIN_BREAK).alias("kind"),
                    pl.Series("previous_sequence_number", previous),
                    pl.when(pl.Series(futures)).then(None).otherwise(missing).alias("missing_sequence_numbers"),
                ).filter(pl.Series(broken))
            )
        last_line, last_u = line[-1], int(u[-1])
    schema = {name: GAP_SCHEMA[name] for name in _EVENT_COLUMNS}
    if not found:
        return pl.DataFrame(schema=schema)
    return pl.concat(found).select(_EVENT_COLUMNS).cast(schema)
