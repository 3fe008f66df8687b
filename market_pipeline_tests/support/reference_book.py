"""Exact Decimal reference replay of a Binance capture, independent of the production book code.

Books are ``dict[Decimal, Decimal]`` built from the exchange's decimal strings, so every
comparison is exact. Binance's documented sync rules, applied in capture line order:

* diffs are buffered until a REST snapshot line arrives (the snapshot line is written a few diffs
  after the diffs that bracket its ``lastUpdateId``), then the buffer is replayed in order;
* spot: drop ``u <= lastUpdateId``; the first applied diff has ``U <= lastUpdateId + 1 <= u``;
  after it each diff must have ``U == previous u + 1``;
* futures (USD-M, COIN-M): drop ``u < lastUpdateId``; the first applied diff has
  ``U <= lastUpdateId <= u``; after it each diff must have ``pu == previous u``;
* any break is a gap: the book is out of sync, diffs are buffered again and the next snapshot
  line resyncs it;
* a bookTicker is checked when its ``u`` equals the ``u`` of an applied diff: its best bid/ask
  price and quantity must equal the book's right after that diff, exactly. The bookTicker stream
  is faster than the depth stream, so the ticker line usually comes *before* its diff (always on
  spot, where diffs are 100 ms batches); such a ticker waits for its diff. A ticker that comes
  after its diff is checked while that diff is still the last applied one and the book is in
  sync. A ticker whose ``u`` falls strictly inside a diff's ``[U, u]`` shows an intermediate
  state the diffs never expose and is not checkable.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from market_pipeline.vendors.binance.capture_format import binance_market_of, iter_messages, market_of_diff

ZERO = Decimal(0)


def _apply_levels(side: dict[Decimal, Decimal], levels: list[list[str]]) -> None:
    for price, qty in levels:
        p, q = Decimal(price), Decimal(qty)
        if q == ZERO:
            side.pop(p, None)  # removing an absent level is normal
        else:
            side[p] = q


def _decimal_str(value: Decimal | None) -> str | None:
    return None if value is None else format(value.normalize(), "f")


class _Replay:
    """State machine: WAITING (buffering diffs) -> FIRST (snapshot loaded) -> SYNCED."""

    WAITING, FIRST, SYNCED = "waiting", "first", "synced"

    def __init__(self, market: str | None) -> None:
        self.market = market
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.buffer: list[dict[str, Any]] = []
        self.state = self.WAITING
        self.ever_synced = False
        self.snapshot_id = 0  # lastUpdateId of the loaded snapshot
        self.last_u = 0  # u of the last applied diff
        # Tickers whose u is beyond the last applied diff, by u: checked if a diff ends there.
        self.early_tickers: dict[int, list[dict[str, Any]]] = {}
        self.counts = dict.fromkeys(
            (
                "diffs",
                "skipped_before_sync",
                "applied",
                "gaps",
                "resyncs",
                "ticker_checks",
                "ticker_mismatches",
                "trades",
            ),
            0,
        )

    @property
    def futures(self) -> bool:
        return self.market != "spot"

    def _apply(self, diff: dict[str, Any]) -> None:
        _apply_levels(self.bids, diff["b"])
        _apply_levels(self.asks, diff["a"])
        u = int(diff["u"])
        self.last_u = u
        self.counts["applied"] += 1
        for ticker in self.early_tickers.pop(u, ()):
            self._check(ticker)
        # Tickers with a smaller u sat inside this diff's [U, u]: they can never be checked.
        self.early_tickers = {k: v for k, v in self.early_tickers.items() if k > u}

    def _gap(self, diff: dict[str, Any]) -> None:
        # Keep the breaking diff: the next snapshot may be older than it.
        self.state = self.WAITING
        self.buffer = [diff]
        self.counts["gaps"] += 1

    def diff(self, diff: dict[str, Any]) -> None:
        if self.state == self.WAITING:
            self.buffer.append(diff)
        elif self.state == self.FIRST:
            u, first_id, lid = int(diff["u"]), int(diff["U"]), self.snapshot_id
            if (u < lid) if self.futures else (u <= lid):
                # Stale: already contained in the snapshot.
                if not self.ever_synced:
                    self.counts["skipped_before_sync"] += 1
            elif first_id <= (lid if self.futures else lid + 1) <= u:
                self._apply(diff)
                self.state = self.SYNCED
                if self.ever_synced:
                    self.counts["resyncs"] += 1
                self.ever_synced = True
            else:
                self._gap(diff)  # updates between the snapshot and this diff are missing
        elif int(diff["pu"]) == self.last_u if self.futures else int(diff["U"]) == self.last_u + 1:
            self._apply(diff)
        else:
            self._gap(diff)

    def snapshot(self, snapshot: dict[str, Any]) -> None:
        if self.state == self.SYNCED:
            return  # an in-sync book needs no snapshot
        self.bids.clear()
        self.asks.clear()
        _apply_levels(self.bids, snapshot["bids"])
        _apply_levels(self.asks, snapshot["asks"])
        self.snapshot_id = int(snapshot["lastUpdateId"])
        self.state = self.FIRST
        pending, self.buffer = self.buffer, []
        for diff in pending:
            self.diff(diff)

    def ticker(self, ticker: dict[str, Any]) -> None:
        u = int(ticker["u"])
        if u > self.last_u:
            self.early_tickers.setdefault(u, []).append(ticker)
        elif u == self.last_u and self.state == self.SYNCED:
            self._check(ticker)

    def _check(self, ticker: dict[str, Any]) -> None:
        self.counts["ticker_checks"] += 1
        best_bid, best_ask = max(self.bids), min(self.asks)
        if (
            Decimal(ticker["b"]) != best_bid
            or Decimal(ticker["B"]) != self.bids[best_bid]
            or Decimal(ticker["a"]) != best_ask
            or Decimal(ticker["A"]) != self.asks[best_ask]
        ):
            self.counts["ticker_mismatches"] += 1


def replay(paths: Sequence[Path]) -> dict[str, Any]:
    """Replay the capture files of one instrument (in time order); counts and final best prices."""
    state = _Replay(binance_market_of(paths[0]))
    for _, _, kind, payload in iter_messages(paths):
        if kind == "diff":
            state.counts["diffs"] += 1
            if state.market is None:
                state.market = market_of_diff(payload)
            state.diff(payload)
        elif kind == "snapshot":
            state.snapshot(payload)
        elif kind == "ticker":
            state.ticker(payload)
        else:
            state.counts["trades"] += 1
    return {
        "market": state.market,
        **state.counts,
        "final_best_bid": _decimal_str(max(state.bids) if state.bids else None),
        "final_best_ask": _decimal_str(min(state.asks) if state.asks else None),
    }
