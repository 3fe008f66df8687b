"""Synthetic OKX v5 captures (`books` with `bbo-tbt`) rendered from a `book_walk`, with faults.

Prices in ticks of 0.1 and sizes in lots of 0.00000001, written as OKX writes them (trailing
zeros dropped: "61415", "61415.1", "0.5"). Each book message's checksum is computed here from
those texts the way OKX's documentation spells it (the best 25 bids and asks interleaved,
`price:size`, joined by `:`, CRC32 as a signed 32-bit integer), not with the reader's code. A
message's `bbo-tbt` quotes precede it, as OKX pushes `bbo-tbt` before `books` on a connection.

Faults: a dropped update (`drop`), a wrong checksum (`bad_checksum`), a wrong `bbo-tbt` size
(`bad_quote`: the message whose last quote is changed), a reconnect after lost messages
(`reconnect_at`: a subscribe answer and a fresh snapshot), OKX's sequence reset after
maintenance (`reset_at`: the message's `seqId` drops below its `prevSeqId`), and checksums
retired (`retired`: every checksum 0, as OKX sends since 2026).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass

from market_pipeline_tests.support.book_walk import Message, Side, Walk, book_walk, fixed_text

INST_ID = "BTC-USDT"
MID = 614_150  # ticks of 0.1
PRICE_SCALE, SIZE_SCALE = 1, 8
START_NS = 1_763_942_400_000_000_000  # 2025-11-24T00:00:00Z
STEP_NS = 20_000_000
DEPTH = 400  # `books`: the synthetic book has fewer levels, the view is the whole book
SUBSCRIBE = '{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a4d3ae55"}'
SUBSCRIBE_BBO = '{"event":"subscribe","arg":{"channel":"bbo-tbt","instId":"BTC-USDT"},"connId":"a4d3ae55"}'
TRADE = (
    '{"arg":{"channel":"trades","instId":"BTC-USDT"},"data":[{"instId":"BTC-USDT","tradeId":"130639474",'
    '"px":"61415.1","sz":"0.001","side":"buy","ts":"1763942400100","count":"1"}]}'
)


def walk(messages: int) -> Walk:
    return book_walk(messages, depth=DEPTH, mid=MID, levels=30)


def price_text(ticks: int) -> str:
    return fixed_text(ticks, PRICE_SCALE, trim=True)


def size_text(lots: int) -> str:
    return fixed_text(lots, SIZE_SCALE, trim=True)


def checksum(view: tuple[Side, Side]) -> int:
    """OKX's checksum of a book from its texts."""
    bids = [f"{price_text(p)}:{size_text(view[0][p])}" for p in sorted(view[0], reverse=True)[:25]]
    asks = [f"{price_text(p)}:{size_text(view[1][p])}" for p in sorted(view[1])[:25]]
    parts = [text for i in range(max(len(bids), len(asks))) for text in (bids[i : i + 1] + asks[i : i + 1])]
    value = zlib.crc32(":".join(parts).encode())
    return value - 2**32 if value >= 2**31 else value


def _levels(changes) -> list[list[str]]:
    return [[price_text(p), size_text(q), "0", "1" if q else "0"] for p, q in changes]


def _book_line(action: str, bids, asks, seq: int, prev: int, sent_checksum: int) -> str:
    data = {"asks": _levels(asks), "bids": _levels(bids), "ts": "1763942400000"}
    data.update(checksum=sent_checksum, prevSeqId=prev, seqId=seq)
    return json.dumps({"arg": {"channel": "books", "instId": INST_ID}, "action": action, "data": [data]})


def _snapshot_line(view: tuple[Side, Side], seq: int, retired: bool) -> str:
    bids = sorted(view[0].items(), reverse=True)
    asks = sorted(view[1].items())
    return _book_line("snapshot", bids, asks, seq, -1, 0 if retired else checksum(view))


def _quote_line(quote, bad: bool) -> str:
    bid = [price_text(quote.bid[0]), size_text(quote.bid[1] + bad), "0", "1"] if quote.bid else None
    ask = [price_text(quote.ask[0]), size_text(quote.ask[1]), "0", "1"] if quote.ask else None
    data = {"asks": [ask] if ask else [], "bids": [bid] if bid else [], "ts": "1763942400000", "seqId": quote.seq}
    return json.dumps({"arg": {"channel": "bbo-tbt", "instId": INST_ID}, "data": [data]})


@dataclass
class Rendered:
    lines: list[str]
    message_lines: dict[int, int]  # walk message index -> 1-based line in the file
    quote_lines: list[int]  # the line of every bbo-tbt message, in order
    trades: int


def render(
    walk: Walk,
    *,
    drop: int | None = None,
    bad_checksum: int | None = None,
    bad_quote: int | None = None,
    reconnect_at: int | None = None,
    lost: int = 0,
    reset_at: int | None = None,
    retired: bool = False,
) -> Rendered:
    """The capture's lines (`<receive ns> <message>`), with the faults asked for."""
    lines = [SUBSCRIBE_BBO, SUBSCRIBE, _snapshot_line(walk.first_view, walk.first_seq, retired)]
    rendered = Rendered(lines, {}, [], 0)
    lost_range = range(reconnect_at, reconnect_at + lost) if reconnect_at is not None else range(0)
    prev, offset = walk.first_seq, 0  # offset: how far the numbering dropped at a reset
    for i, message in enumerate(walk.messages):
        if reset_at is not None and i == reset_at:
            offset = message.seq - 100  # the reset message gets seqId 100, below its prevSeqId
        seq = message.seq - offset
        if reconnect_at is not None and i == reconnect_at + lost:
            lines += ["pong", SUBSCRIBE]
            lines.append(_snapshot_line(walk.messages[i - 1].view, prev, retired))
        if i == drop or i in lost_range:
            prev = seq
            continue
        _render_message(rendered, i, message, seq, prev, offset, bad_checksum == i, bad_quote == i, retired)
        prev = seq
    rendered.lines = [f"{START_NS + n * STEP_NS} {m}\n" for n, m in enumerate(lines)]
    return rendered


def _render_message(
    out: Rendered,
    i: int,
    message: Message,
    seq: int,
    prev: int,
    offset: int,
    bad_sum: bool,
    bad_quote: bool,
    retired: bool,
) -> None:
    for n, quote in enumerate(message.quotes):
        quote = type(quote)(quote.seq - offset, quote.bid, quote.ask)
        out.lines.append(_quote_line(quote, bad_quote and n == len(message.quotes) - 1))
        out.quote_lines.append(len(out.lines))
    sent = 0 if retired else checksum(message.view) ^ bad_sum
    out.lines.append(_book_line("update", message.bids, message.asks, seq, prev, sent))
    out.message_lines[i] = len(out.lines)
    if i % 10 == 5:
        out.lines.append(TRADE)
        out.trades += 1
