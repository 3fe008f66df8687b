"""Instruments of the configured universe: exchange, symbol and the exact price/size grid."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

# contiguous: sequence numbers grow by exactly 1 per message, so a jump proves a gap.
# monotonic: they only grow (e.g. Binance update ids), so gaps show up against vendor snapshots.
SequenceSemantics = Literal["contiguous", "monotonic"]


# Exchange and symbol become lake path components (exchange=X/symbol=Y): a closed character set.
EXCHANGE_PATTERN = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
SYMBOL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_instrument_key(key: str) -> None:
    """Raise ValueError unless `key` is EXCHANGE:SYMBOL in the characters a lake path allows."""
    exchange, sep, symbol = key.partition(":")
    if not sep:
        raise ValueError(f"{key!r} is not EXCHANGE:SYMBOL (e.g. BINANCE:BTC-USDT)")
    if not EXCHANGE_PATTERN.fullmatch(exchange):
        raise ValueError(
            f"{key!r}: exchange {exchange!r} must be upper-case letters, digits and _ (e.g. BINANCE_FUTURES)"
        )
    if not SYMBOL_PATTERN.fullmatch(symbol):
        raise ValueError(f"{key!r}: symbol {symbol!r} must be letters, digits, '.', '_' and '-' (e.g. BTC-USDT)")


class InstrumentSpec(BaseModel):
    """Tick and lot size of one instrument, as exact decimals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tick_size: Decimal
    lot_size: Decimal
    sequence: SequenceSemantics = "monotonic"

    @field_validator("tick_size", "lot_size", mode="before")
    @classmethod
    def _decimal_from_text(cls, value: object) -> Decimal:
        # A YAML float (0.1) would carry binary noise into the fixed-point scale; go through str.
        try:
            parsed = Decimal(str(value))
        except InvalidOperation as exc:
            raise ValueError(f"not a decimal number: {value!r}") from exc
        if not parsed.is_finite() or parsed <= 0:
            raise ValueError(f"must be a positive decimal, got {value!r}")
        return parsed


class Instrument(BaseModel):
    """One member of the universe: exchange and symbol (Crypto Lake spelling) plus its grid."""

    model_config = ConfigDict(frozen=True)

    exchange: str
    symbol: str
    spec: InstrumentSpec

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    @property
    def tick_size(self) -> Decimal:
        return self.spec.tick_size

    @property
    def lot_size(self) -> Decimal:
        return self.spec.lot_size
