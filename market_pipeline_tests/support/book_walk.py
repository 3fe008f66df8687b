"""An exchange-side book for synthetic OKX and Bybit captures, with exact ground truth.

Simulated here, independently of the vendors' replays: a full book (prices in ticks, sizes in
lots, integers) changes one random event at a time, each event numbered by the exchange's
sequence (which jumps by 1 to 5, as OKX's `seqId` and Bybit's `seq` do). A message conflates 1
to 3 events, as the exchanges' 10-200 ms pushes do, and carries the changes a subscriber at
`depth` sees: levels that changed inside the view, removals as size 0, a level that came back
into view republished, nothing for a level pushed out of view by an insert (the subscriber
truncates to its depth). After every event that changes the best bid or ask, the top-of-book
stream sends a quote numbered by that event: only the quotes of a message's last event share a
sequence number with a book message.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

Side = dict[int, int]  # ticks -> lots
Change = tuple[int, int]  # (ticks, lots); lots 0 removes


@dataclass
class Quote:
    seq: int
    bid: tuple[int, int] | None
    ask: tuple[int, int] | None


@dataclass
class Message:
    """One book message: the changes a side, the sequence number of its last event, the view after
    it, and the top-of-book quotes of its events (in order, the last one's number is `seq`)."""

    seq: int
    bids: list[Change]
    asks: list[Change]
    view: tuple[Side, Side]  # (bids, asks)
    quotes: list[Quote] = field(default_factory=list)


@dataclass
class Walk:
    first_seq: int
    first_view: tuple[Side, Side]
    messages: list[Message]


def _view(side: Side, bids: bool, depth: int) -> Side:
    return {p: side[p] for p in sorted(side, reverse=bids)[:depth]}


def _best(side: Side, bids: bool) -> tuple[int, int] | None:
    if not side:
        return None
    price = max(side) if bids else min(side)
    return price, side[price]


def _changes(old: Side, new: Side, full: Side) -> list[Change]:
    """What the exchange sends: removals of levels gone from the book (not of those pushed out of
    view by an insert: the subscriber truncates), then every level of the new view that changed
    or came (back) into it."""
    removed = [(p, 0) for p in old if p not in full]
    return removed + [(p, q) for p, q in new.items() if old.get(p) != q]


def book_walk(messages: int, depth: int, mid: int, levels: int, seed: int = 11) -> Walk:
    """`messages` book messages of a random walk of a book of about `levels` levels a side around
    `mid` ticks, seen at `depth`."""
    rng = random.Random(seed)
    full = (
        {mid - 1 - i: rng.randint(1, 5000) for i in range(levels) if rng.random() < 0.85},
        {mid + 1 + i: rng.randint(1, 5000) for i in range(levels) if rng.random() < 0.85},
    )
    view = (_view(full[0], True, depth), _view(full[1], False, depth))
    seq = 1000
    walk = Walk(seq, (dict(view[0]), dict(view[1])), [])
    quotes: list[Quote] = []
    while len(walk.messages) < messages:
        for _ in range(rng.randint(1, 3)):
            top = (_best(full[0], True), _best(full[1], False))
            _random_event(rng, full, mid, levels)
            seq += rng.randint(1, 5)
            if (_best(full[0], True), _best(full[1], False)) != top:
                quotes.append(Quote(seq, _best(full[0], True), _best(full[1], False)))
        new = (_view(full[0], True, depth), _view(full[1], False, depth))
        bids, asks = _changes(view[0], new[0], full[0]), _changes(view[1], new[1], full[1])
        if bids or asks:  # else the events cancelled out: no message, the quotes go with the next
            walk.messages.append(Message(seq, bids, asks, new, quotes))
            view, quotes = new, []
    return walk


def _random_event(rng: random.Random, full: tuple[Side, Side], mid: int, levels: int) -> None:
    s = rng.randrange(2)
    side, bids = full[s], s == 0
    ranked = sorted(side, reverse=bids)[: levels + 3]
    op = rng.random()
    if op < 0.5 and ranked:
        side[rng.choice(ranked[:4] if rng.random() < 0.5 else ranked)] = rng.randint(1, 5000)
    elif op < 0.75 and len(side) > levels // 2:
        del side[rng.choice(ranked[:levels])]
    else:
        free = [mid - d if bids else mid + d for d in range(1, levels + 6)]
        free = [p for p in free if p not in side and p not in full[1 - s]]
        if free:
            side[rng.choice(free)] = rng.randint(1, 5000)


def fixed_text(value: int, scale: int, trim: bool) -> str:
    """The decimal text of an integer at `scale` decimals; `trim` drops trailing zeros (OKX)."""
    whole, fraction = divmod(value, 10**scale)
    text = f"{whole}.{fraction:0{scale}d}" if scale else str(whole)
    return text.rstrip("0").rstrip(".") if trim and scale else text


def droppable(walk: Walk, after: int) -> int:
    """A message from `after` on whose loss leaves the book wrong (it changes a level the next
    message does not set again)."""
    for i in range(after, len(walk.messages) - 1):
        here, nxt = walk.messages[i], walk.messages[i + 1]
        if {p for p, _ in here.bids + here.asks} - {p for p, _ in nxt.bids + nxt.asks}:
            return i
    raise AssertionError("no droppable message in the walk")


def checked_quotes(walk: Walk, skipped: set[int] = frozenset()) -> list[int]:
    """The messages (indices) whose last quote shares their sequence number (only the last can):
    the quotes a replay in sync compares, the messages in `skipped` (dropped, lost) left out."""
    return [i for i, m in enumerate(walk.messages) if i not in skipped and m.quotes and m.quotes[-1].seq == m.seq]
