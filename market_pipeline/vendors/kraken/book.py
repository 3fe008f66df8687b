"""A Kraken book under Kraken's rules, prices and quantities as exact fixed-point integers.

Each side is a dict {price: quantity} of integers at the pair's precision: the number of decimals
the exchange sends (v1 fixed-decimal strings, v2 numbers "with full precision"), taken from the
snapshot that loads the book. At that scale a level's checksum text (the decimal string with
``.`` removed and leading zeros stripped) is the integer's decimal form, so the CRC32 of the top
10 levels needs no string surgery. Per message: the levels in order (quantity 0 removes), then
truncation to the subscribed depth (levels that fall out of scope get no removal message).

A `BookSide` per side (vendors/exchange_books.py: a dict and its sorted prices) rather than numba
arrays (core/book/ladder.py): Kraken books are at most 1000 levels deep and a message touches a
few, so the top 10 of the checksum is a slice.
"""

from __future__ import annotations

from decimal import Decimal

from market_pipeline.vendors.exchange_books import BookSide, crc32, decimals
from market_pipeline.vendors.kraken.capture_format import BookMessage, Level

CHECKSUM_LEVELS = 10


class PrecisionError(ValueError):
    """A price or quantity with more decimals than the pair's precision (the snapshot's)."""


def to_fixed(text: str, scale: int) -> int:
    """``"61414.7"`` at scale 5 -> 6141470000, exactly; exponent forms go through Decimal."""
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    whole, _, fraction = text.partition(".")
    if len(fraction) > scale:
        if fraction[scale:].strip("0"):
            raise PrecisionError(f"{text} has more than {scale} decimals, the precision of the snapshot")
        fraction = fraction[:scale]
    return int(whole + fraction.ljust(scale, "0"))


def fixed_text(value: int, scale: int) -> str:
    """The decimal text of a fixed-point integer (the JSON figures: never a float)."""
    return format(Decimal(value).scaleb(-scale), "f")


def checksum_text(asks: list[tuple[int, int]], bids: list[tuple[int, int]]) -> str:
    """Kraken's checksum input: asks low to high then bids high to low, price then quantity each."""
    return "".join(f"{price}{qty}" for price, qty in asks) + "".join(f"{price}{qty}" for price, qty in bids)


class KrakenBook:
    """One pair's book at one subscribed depth, loaded by a snapshot and kept by updates."""

    def __init__(self, snapshot: BookMessage, depth: int) -> None:
        levels = snapshot.asks + snapshot.bids
        self.price_scale = max((decimals(price) for price, _ in levels), default=0)
        self.qty_scale = max((decimals(qty) for _, qty in levels), default=0)
        self.depth = depth
        self.ask_side, self.bid_side = BookSide(bids=False), BookSide(bids=True)
        self.asks: dict[int, int] = self.ask_side.levels
        self.bids: dict[int, int] = self.bid_side.levels
        self.dropped_on_load = self.apply(snapshot)  # the snapshot's levels beyond the depth, if any

    def apply(self, message: BookMessage) -> tuple[list[int], list[int]]:
        """Apply a message's levels in order, then truncate; returns the prices the truncation
        dropped (asks, bids): levels pushed out of scope, which Kraken sends no removal for."""
        for side, levels in ((self.ask_side, message.asks), (self.bid_side, message.bids)):
            self._apply_side(side, levels)
        return self.ask_side.truncate(self.depth), self.bid_side.truncate(self.depth)

    def _apply_side(self, side: BookSide, levels: list[Level]) -> None:
        for price_text, qty_text in levels:
            price, qty = to_fixed(price_text, self.price_scale), to_fixed(qty_text, self.qty_scale)
            if qty:
                side.put(price, qty)
            else:
                side.remove(price)

    def top(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """The best `CHECKSUM_LEVELS` (price, quantity) a side, best first."""
        return self.ask_side.top(CHECKSUM_LEVELS), self.bid_side.top(CHECKSUM_LEVELS)

    def checksum(self) -> int:
        """Kraken's CRC32 of the book's top 10 levels, as a message carrying it should say."""
        return crc32(checksum_text(*self.top()))
