"""Synthetic Bybit v5 captures (`orderbook.50` with `orderbook.1`) rendered from a `book_walk`.

Prices in ticks of 0.01 and sizes in lots of 0.001, written as Bybit writes them (fixed decimals:
"17440.00", "40.833"). The book topic's `u` goes up by one a message, `seq` is the walk's
sequence number of the message's last event; `orderbook.1` snapshots (their own `u`) follow the
book message of their events. The walk's book has more levels than the topic's depth, so levels
leave and come back into view (Bybit's depth truncation).

Faults: a dropped delta (`drop`), a wrong `orderbook.1` size (`bad_quote`: the message whose
last quote is changed), a reconnect after lost messages (`reconnect_at`: a subscribe answer and
a fresh snapshot), and Bybit's service restart (`restart_at`: a snapshot with `u` = 1 before
that message, whose deltas then count on from 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from market_pipeline_tests.support.book_walk import Side, Walk, book_walk, fixed_text

SYMBOL = "BTCUSDT"
DEPTH = 50
MID = 6_141_500  # ticks of 0.01
PRICE_SCALE, SIZE_SCALE = 2, 3
START_NS = 1_763_942_400_000_000_000  # 2025-11-24T00:00:00Z
STEP_NS = 20_000_000
SUBSCRIBED = '{"success":true,"ret_msg":"","conn_id":"d30fdpbboasp1pjbe7r0","req_id":"","op":"subscribe"}'
PONG = '{"success":true,"ret_msg":"pong","conn_id":"d30fdpbboasp1pjbe7r0","req_id":"","op":"ping"}'
TRADE = (
    '{"topic":"publicTrade.BTCUSDT","type":"snapshot","ts":1763942400100,"data":[{"T":1763942400099,'
    '"s":"BTCUSDT","S":"Buy","v":"0.001","p":"61415.10","L":"PlusTick","i":"0bf3a2b9","BT":false}]}'
)


def walk(messages: int) -> Walk:
    return book_walk(messages, depth=DEPTH, mid=MID, levels=DEPTH + 12, seed=5)


def price_text(ticks: int) -> str:
    return fixed_text(ticks, PRICE_SCALE, trim=False)


def size_text(lots: int) -> str:
    return fixed_text(lots, SIZE_SCALE, trim=False)


def _book_line(kind: str, bids, asks, u: int, seq: int) -> str:
    data = {"s": SYMBOL, "b": [[price_text(p), size_text(q)] for p, q in bids]}
    data.update(a=[[price_text(p), size_text(q)] for p, q in asks], u=u, seq=seq)
    message = {"topic": f"orderbook.{DEPTH}.{SYMBOL}", "type": kind, "ts": 1763942400000, "data": data}
    return json.dumps({**message, "cts": 1763942399998})


def _snapshot_line(view: tuple[Side, Side], u: int, seq: int) -> str:
    return _book_line("snapshot", sorted(view[0].items(), reverse=True), sorted(view[1].items()), u, seq)


def _quote_line(quote, u: int, bad: bool) -> str:
    bid = [[price_text(quote.bid[0]), size_text(quote.bid[1] + bad)]] if quote.bid else []
    ask = [[price_text(quote.ask[0]), size_text(quote.ask[1])]] if quote.ask else []
    data = {"s": SYMBOL, "b": bid, "a": ask, "u": u, "seq": quote.seq}
    return json.dumps({"topic": f"orderbook.1.{SYMBOL}", "type": "snapshot", "ts": 1763942400000, "data": data})


@dataclass
class Rendered:
    lines: list[str]
    message_lines: dict[int, int]  # walk message index -> 1-based line in the file
    trades: int


def render(
    walk: Walk,
    *,
    drop: int | None = None,
    bad_quote: int | None = None,
    reconnect_at: int | None = None,
    lost: int = 0,
    restart_at: int | None = None,
) -> Rendered:
    """The capture's lines (`<receive ns> <message>`), with the faults asked for."""
    u, quote_u = 20_000, 500
    lines = [SUBSCRIBED, _snapshot_line(walk.first_view, u, walk.first_seq)]
    out = Rendered(lines, {}, 0)
    lost_range = range(reconnect_at, reconnect_at + lost) if reconnect_at is not None else range(0)
    for i, message in enumerate(walk.messages):
        previous = walk.messages[i - 1] if i else None
        if restart_at is not None and i == restart_at:
            u = 1  # the restart snapshot shows the book as it is, numbered 1
            lines.append(_snapshot_line(previous.view, u, previous.seq))
        if reconnect_at is not None and i == reconnect_at + lost:
            lines += [PONG, SUBSCRIBED, _snapshot_line(previous.view, u, previous.seq)]
        u += 1
        if i == drop or i in lost_range:
            continue
        lines.append(_book_line("delta", message.bids, message.asks, u, message.seq))
        out.message_lines[i] = len(lines)
        for n, quote in enumerate(message.quotes):
            quote_u += 1
            lines.append(_quote_line(quote, quote_u, bad_quote == i and n == len(message.quotes) - 1))
        if i % 10 == 5:
            lines.append(TRADE)
            out.trades += 1
    out.lines = [f"{START_NS + n * STEP_NS} {m}\n" for n, m in enumerate(lines)]
    return out
