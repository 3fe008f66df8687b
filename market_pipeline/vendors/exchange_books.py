"""Price-level books of the exchanges whose captures `verify-capture` replays in plain Python
(Kraken, OKX, Bybit), and the checksum CRC32 they share.

`BookSide` keeps one side as a dict {exact price: value} plus the prices in ascending order
(`bisect`), so the best n levels are a slice and truncation to the subscribed depth drops a
slice: books are at most a thousand levels a side and a message touches a few, so an insertion's
memmove is cheaper than selecting the top levels on every message.

`TextBook` is the book of exchanges whose oracles read the levels as sent (OKX's checksum joins
the texts; Bybit's top-of-book stream is compared by value): prices keyed by `Decimal` (exact;
"3366" and "3366.0" are one level), each level kept as its (price text, size text).
"""

from __future__ import annotations

import zlib
from bisect import bisect_left, insort
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

_ABSENT = object()

# One price level as sent: (price text, size text).
Level = tuple[str, str]


def crc32(text: str) -> int:
    """zlib's CRC32 of the ASCII text, unsigned (Kraken's form)."""
    return zlib.crc32(text.encode("ascii"))


def signed_crc32(text: str) -> int:
    """The CRC32 as a signed 32-bit integer (OKX's form: -1881014294, not 2413953002)."""
    value = crc32(text)
    return value - (1 << 32) if value >= 1 << 31 else value


def decimals(text: str) -> int:
    """Digits after the decimal point of a decimal text ("8476.98" -> 2, "7" -> 0)."""
    point = text.find(".")
    return len(text) - point - 1 if point >= 0 else 0


def step_text(places: int) -> str:
    """The power-of-ten step with that many decimals ("0.01" for 2, "1" for 0)."""
    return format(Decimal(1).scaleb(-places), "f")


class BookSide:
    """One side of a book: `levels` {price: value}, the prices sorted, best first on request."""

    def __init__(self, bids: bool) -> None:
        self.is_bids = bids
        self.levels: dict[Any, Any] = {}
        self._prices: list = []  # ascending

    def __len__(self) -> int:
        return len(self._prices)

    def put(self, price, value) -> None:
        if price not in self.levels:
            insort(self._prices, price)
        self.levels[price] = value

    def remove(self, price) -> None:
        """Remove the level; a price the side does not hold is ignored (exchanges send such)."""
        if self.levels.pop(price, _ABSENT) is not _ABSENT:
            del self._prices[bisect_left(self._prices, price)]

    def clear(self) -> None:
        self.levels.clear()
        self._prices.clear()

    def truncate(self, depth: int) -> list:
        """Keep the best `depth` levels: those beyond the subscribed depth get no removal message.
        Returns the prices dropped."""
        extra = len(self._prices) - depth
        if extra <= 0:
            return []
        worst = slice(None, extra) if self.is_bids else slice(depth, None)
        dropped = self._prices[worst]
        for price in dropped:
            del self.levels[price]
        del self._prices[worst]
        return dropped

    def best_prices(self, n: int) -> list:
        """The best `n` prices, best first (bids high to low, asks low to high)."""
        return self._prices[: -n - 1 : -1] if self.is_bids else self._prices[:n]

    def top(self, n: int) -> list[tuple[Any, Any]]:
        """The best `n` (price, value), best first."""
        levels = self.levels
        return [(price, levels[price]) for price in self.best_prices(n)]

    def best(self):
        """The best price, or None when the side is empty."""
        if not self._prices:
            return None
        return self._prices[-1] if self.is_bids else self._prices[0]


def exact(text: str, what: str) -> Decimal:
    """The exact value of a price or size text; ValueError (the reason) when it is not a number."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{what} {text!r} is not a decimal number") from None
    if not value.is_finite():
        raise ValueError(f"{what} {text!r} is not a decimal number")
    return value


class TextBook:
    """One instrument's book at a subscribed depth, levels kept as sent, keyed by exact price."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids = BookSide(bids=True)
        self.asks = BookSide(bids=False)
        self.price_decimals = 0
        self.size_decimals = 0

    def load(self, bids: Iterable[Level], asks: Iterable[Level]) -> int:
        """Replace the book by a snapshot's levels; returns the levels read."""
        self.bids.clear()
        self.asks.clear()
        return self.apply(bids, asks)

    def apply(self, bids: Iterable[Level], asks: Iterable[Level]) -> int:
        """Apply the levels in order (size 0 removes), then truncate; returns the levels applied."""
        applied = 0
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            for price_text, size_text in levels:
                price = exact(price_text, "price")
                if exact(size_text, "size"):
                    side.put(price, (price_text, size_text))
                    self.price_decimals = max(self.price_decimals, decimals(price_text))
                    self.size_decimals = max(self.size_decimals, decimals(size_text))
                else:
                    side.remove(price)
                applied += 1
            side.truncate(self.depth)
        return applied

    def crossed(self) -> bool:
        bid, ask = self.bids.best(), self.asks.best()
        return bid is not None and ask is not None and bid >= ask

    def agrees(self, bids: list[Level], asks: list[Level], depth: int) -> bool:
        """Whether the book's best `depth` levels a side are these levels, by value."""
        for side, levels in ((self.bids, bids), (self.asks, asks)):
            mine = [(price, exact(text[1], "size")) for price, text in side.top(depth)]
            theirs = [(exact(p, "price"), exact(s, "size")) for p, s in levels]
            if mine != theirs:
                return False
        return True

    def best_texts(self) -> tuple[str | None, str | None]:
        """(best bid, best ask) price texts as sent."""
        bid, ask = self.bids.top(1), self.asks.top(1)
        return (bid[0][1][0] if bid else None), (ask[0][1][0] if ask else None)
