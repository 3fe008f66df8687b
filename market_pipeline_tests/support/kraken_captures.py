"""Synthetic Kraken spot captures with exact ground truth, in WebSocket v1 and v2 form, with faults.

The exchange side is simulated here, independently of `vendors/kraken`: a full book of ~30 levels
a side changes at random; a subscriber at depth 10 sees the top 10, so a message carries the
changes inside that view, a removal as quantity 0, a level that comes back into view (after a
removal above it) republished (v1 flag "r"), and nothing for a level pushed out of view by an
insert (Kraken's truncation rule). Each update's checksum is computed from the rendered texts, the
way Kraken's guides spell it (``.`` removed, leading zeros stripped, asks then bids), not with the
reader's integers.

Faults: a dropped update (`drop`), a wrong checksum (`bad_checksum`), a reconnect after some lost
updates (`reconnect_at`: a new subscription answer and a fresh snapshot of the truth).
"""

from __future__ import annotations

import gzip
import random
import zlib
from dataclasses import dataclass, field
from pathlib import Path

DEPTH = 10
FULL_LEVELS = 30
MID = 614_150  # ticks of 0.1: 61415.0
QTY_SCALE = 8
START_NS = 1_763_942_400_000_000_000  # 2025-11-24T00:00:00Z
STEP_NS = 50_000_000
PAIRS = {1: "XBT/USD", 2: "BTC/USD"}
PRICE_SCALES = {1: 5, 2: 1}  # v1 sends 5 decimals for XBT/USD, v2 the pair's precision (1)

Side = dict[int, int]  # ticks -> quantity in 1e-8


@dataclass
class Update:
    """One update message as the exchange computes it: (ticks, quantity, republished) a side and
    the visible book after it."""

    asks: list[tuple[int, int, bool]]
    bids: list[tuple[int, int, bool]]
    view: tuple[Side, Side]


@dataclass
class SyntheticBook:
    first_view: tuple[Side, Side]
    updates: list[Update] = field(default_factory=list)


def _view(side: Side, asks: bool) -> Side:
    return {p: side[p] for p in sorted(side, reverse=not asks)[:DEPTH]}


def _diff(full_before: Side, full_after: Side, old: Side, new: Side) -> list[tuple[int, int, bool]]:
    removed = [(p, 0, False) for p in old if p not in full_after]
    changed = [(p, q, p not in old and p in full_before) for p, q in new.items() if old.get(p) != q]
    return removed + changed


def synthetic_book(updates: int, seed: int = 7) -> SyntheticBook:
    """A random book stream of `updates` messages, each changing the top 10 levels."""
    rng = random.Random(seed)
    full = (
        {MID + 1 + i: rng.randint(1, 10**8) for i in range(FULL_LEVELS + 5) if rng.random() < 0.85},
        {MID - 1 - i: rng.randint(1, 10**8) for i in range(FULL_LEVELS + 5) if rng.random() < 0.85},
    )
    view = (_view(full[0], True), _view(full[1], False))
    book = SyntheticBook((dict(view[0]), dict(view[1])))
    while len(book.updates) < updates:
        before = (dict(full[0]), dict(full[1]))
        for s in rng.sample((0, 1), 2 if rng.random() < 0.2 else 1):
            _random_change(rng, full[s], s == 0)
        new = (_view(full[0], True), _view(full[1], False))
        asks, bids = _diff(before[0], full[0], view[0], new[0]), _diff(before[1], full[1], view[1], new[1])
        if asks or bids:
            book.updates.append(Update(asks, bids, new))
        view = new
    return book


def _random_change(rng: random.Random, side: Side, asks: bool) -> None:
    ranked = sorted(side, reverse=not asks)[: DEPTH + 3]
    op = rng.random()
    if op < 0.5 and ranked:
        side[rng.choice(ranked)] = rng.randint(1, 10**8)
    elif op < 0.75 and len(side) > DEPTH + 2:
        del side[rng.choice(ranked[:DEPTH])]
    else:
        free = [MID + d if asks else MID - d for d in range(1, 15)]
        free = [p for p in free if p not in side]
        if free:
            side[rng.choice(free)] = rng.randint(1, 10**8)


# --- rendering ---------------------------------------------------------------------------------


def _fixed(value: int, scale: int) -> str:
    whole, fraction = divmod(value, 10**scale)
    return f"{whole}.{fraction:0{scale}d}" if scale else str(whole)


def price_text(version: int, ticks: int) -> str:
    return _fixed(ticks * 10 ** (PRICE_SCALES[version] - 1), PRICE_SCALES[version])


def qty_text(qty: int) -> str:
    return _fixed(qty, QTY_SCALE)


def checksum(version: int, view: tuple[Side, Side]) -> int:
    """Kraken's CRC32 from the texts: top 10 asks low to high, then bids high to low."""
    asks, bids = view
    levels = [(p, asks[p]) for p in sorted(asks)[:10]] + [(p, bids[p]) for p in sorted(bids, reverse=True)[:10]]
    text = "".join(
        price_text(version, p).replace(".", "").lstrip("0") + qty_text(q).replace(".", "").lstrip("0")
        for p, q in levels
    )
    return zlib.crc32(text.encode())


def _v1_levels(version: int, levels, stamp: str) -> str:
    out = []
    for p, q, republished in levels:
        flag = ',"r"' if republished else ""
        out.append(f'["{price_text(version, p)}","{qty_text(q)}","{stamp}"{flag}]')
    return "[" + ",".join(out) + "]"


def _v2_levels(levels) -> str:
    return "[" + ",".join(f'{{"price":{price_text(2, p)},"qty":{qty_text(q)}}}' for p, q, _ in levels) + "]"


def _snapshot_lines(version: int, view: tuple[Side, Side], stamp: str) -> list[str]:
    asks = [(p, q, False) for p, q in sorted(view[0].items())]
    bids = [(p, q, False) for p, q in sorted(view[1].items(), reverse=True)]
    if version == 1:
        return [
            '{"channelID":42,"channelName":"book-10","event":"subscriptionStatus","pair":"XBT/USD",'
            '"status":"subscribed","subscription":{"depth":10,"name":"book"}}',
            f'[42,{{"as":{_v1_levels(1, asks, stamp)},"bs":{_v1_levels(1, bids, stamp)}}},"book-10","XBT/USD"]',
        ]
    return [
        '{"method":"subscribe","result":{"channel":"book","depth":10,"snapshot":true,"symbol":"BTC/USD"},'
        '"success":true,"time_in":"2025-11-24T00:00:00.000000Z","time_out":"2025-11-24T00:00:00.000100Z"}',
        f'{{"channel":"book","type":"snapshot","data":[{{"symbol":"BTC/USD","bids":{_v2_levels(bids)},'
        f'"asks":{_v2_levels(asks)},"checksum":{checksum(2, view)}}}]}}',
    ]


def _update_line(version: int, update: Update, sent_checksum: int, stamp: str) -> str:
    if version == 1:
        parts = []
        if update.asks:
            parts.append(f'{{"a":{_v1_levels(1, update.asks, stamp)}}}')
        if update.bids:
            parts.append(f'{{"b":{_v1_levels(1, update.bids, stamp)}}}')
        parts[-1] = parts[-1][:-1] + f',"c":"{sent_checksum}"}}'
        return "[42," + ",".join(parts) + ',"book-10","XBT/USD"]'
    return (
        f'{{"channel":"book","type":"update","data":[{{"symbol":"BTC/USD","bids":{_v2_levels(update.bids)},'
        f'"asks":{_v2_levels(update.asks)},"checksum":{sent_checksum},"timestamp":"{stamp}"}}]}}'
    )


def _trade_line(version: int) -> str:
    if version == 1:
        return '[337,[["61415.00000","0.01000000","1763942400.100000","b","l",""]],"trade","XBT/USD"]'
    return (
        '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":61415.0,'
        '"qty":0.01000000,"ord_type":"limit","trade_id":1,"timestamp":"2025-11-24T00:00:00.100000Z"}]}'
    )


@dataclass
class Rendered:
    lines: list[str]
    update_lines: dict[int, int]  # update index -> 1-based line number in the file
    trades: int


def render(
    version: int,
    book: SyntheticBook,
    *,
    drop: int | None = None,
    bad_checksum: int | None = None,
    reconnect_at: int | None = None,
    lost: int = 0,
) -> Rendered:
    """The capture's lines (`<receive ns> <message>`), with the faults asked for."""
    heartbeat = '{"event":"heartbeat"}' if version == 1 else '{"channel":"heartbeat"}'
    messages = [heartbeat, *_snapshot_lines(version, book.first_view, "1763942400.000000")]
    update_lines: dict[int, int] = {}
    trades = 0
    lost_range = range(reconnect_at, reconnect_at + lost) if reconnect_at is not None else range(0)
    for i, update in enumerate(book.updates):
        if reconnect_at is not None and i == reconnect_at + lost:
            messages += _snapshot_lines(version, book.updates[i - 1].view, "1763942460.000000")
        if i == drop or i in lost_range:
            continue
        sent = checksum(version, update.view) ^ (1 if i == bad_checksum else 0)
        messages.append(_update_line(version, update, sent, f"{1763942400 + i}.000000"))
        update_lines[i] = len(messages)
        if i % 10 == 5:
            messages.append(_trade_line(version))
            trades += 1
        if i % 25 == 0:
            messages.append(heartbeat)
    lines = [f"{START_NS + n * STEP_NS} {m}\n" for n, m in enumerate(messages)]
    return Rendered(lines, update_lines, trades)


def droppable_update(book: SyntheticBook, after: int) -> int:
    """An update from `after` on that touches one side only and is followed by one touching only
    the other: without it the reader's book differs on that side at the next checksum."""
    for i in range(after, len(book.updates) - 1):
        a, b = book.updates[i], book.updates[i + 1]
        if bool(a.asks) != bool(a.bids) and bool(b.asks) != bool(b.bids) and bool(a.asks) != bool(b.asks):
            return i
    raise AssertionError("no droppable update in the synthetic book")


def final_best(version: int, book: SyntheticBook) -> tuple[str, str]:
    """(best bid, best ask) texts of the truth after the last update."""
    asks, bids = book.updates[-1].view
    return price_text(version, max(bids)), price_text(version, min(asks))


def write_capture(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.writelines(lines)
    return path
