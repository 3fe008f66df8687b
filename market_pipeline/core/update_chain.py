"""The exchange's update-id chain of a capture's deltas: which messages break it.

A capture's `book_delta_v2` rows (Binance, OKX, Bybit) carry each message's `first_update_id`
(Binance's `U`), `sequence_number` (`u`) and `prev_update_id` (Binance futures' `pu`, OKX's
`prevSeqId`, Bybit's previous `seq` while its `u` chain holds; null where there is none); rows of
one message share `line_no`. A message continues the chain when `prev_update_id == previous u`
where it has one (futures-style), else when `first_update_id == previous u + 1` (spot-style); one
that does not is a break: a lost message or a reconnect. The raw check (`quality/chain.py`) and the
book replay (`book/input_batches.py`) both ask `message_breaks`, so they count the same breaks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

CHAIN_FIELDS = ("first_update_id", "prev_update_id", "line_no")


def has_chain(columns: Iterable[str]) -> bool:
    """Whether a deltas file with these columns was written from a capture (carries the chain)."""
    return set(CHAIN_FIELDS) <= set(columns)


class ChainCarry(NamedTuple):
    """The last message of the rows seen so far: its `line_no` and its `u` (None before any)."""

    line: int | None = None
    u: int | None = None


class MessageBreaks(NamedTuple):
    """One batch's messages and whether each breaks the chain; `carry` goes to the next batch."""

    head: np.ndarray  # per row: bool, the row starts a message (its line_no differs from the row before)
    previous: np.ndarray  # per message: int64 `u` of the message before it (-1 for the first of all)
    futures: np.ndarray  # per message: bool, chained by `prev_update_id` (not null), else spot-style
    broken: np.ndarray  # per message: bool, it does not continue the message before it
    carry: ChainCarry


def message_breaks(
    line: np.ndarray,
    u: np.ndarray,
    first: np.ndarray,
    prev: np.ndarray,
    prev_valid: np.ndarray,
    carry: ChainCarry,
) -> MessageBreaks:
    """The messages of one batch of rows in file order (any cuts: a message may go on from the
    batch before, as `carry` says): `line` is `line_no`, `u` `sequence_number`, `first`
    `first_update_id`, `prev` `prev_update_id` with its nulls filled by any value and `prev_valid`
    False there. The first message of all has no predecessor: it breaks nothing."""
    head = np.empty(len(line), np.bool_)
    if len(line):
        head[0] = carry.line is None or line[0] != carry.line
        np.not_equal(line[1:], line[:-1], out=head[1:])
    at = np.flatnonzero(head)
    if not len(at):  # no rows, or all of them go on with the message before
        return MessageBreaks(head, np.empty(0, np.int64), np.empty(0, np.bool_), np.empty(0, np.bool_), carry)
    heads_u = u[at]
    previous = np.empty(len(at), np.int64)
    previous[0] = -1 if carry.u is None else carry.u
    previous[1:] = heads_u[:-1]
    futures = prev_valid[at]
    broken = np.where(futures, prev[at] != previous, first[at] != previous + 1)
    broken[0] &= carry.u is not None
    return MessageBreaks(head, previous, futures, broken, ChainCarry(int(line[-1]), int(heads_u[-1])))
