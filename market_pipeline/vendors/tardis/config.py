"""Settings of the Tardis.dev source (`PIPELINE_TARDIS_DIR`, `PIPELINE_TARDIS_EXCHANGES`,
`PIPELINE_TARDIS_SYMBOLS`) and how an instrument is named in Tardis file names."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

# Our (Crypto Lake) exchange names -> Tardis exchange ids; config.yaml repeats these defaults.
# Crypto Lake names every OKX (Bybit) instrument OKX (BYBIT); Tardis splits them by market: the
# ids given here are the spot ones, `tardis_names` takes the market's from the symbol.
DEFAULT_EXCHANGES: dict[str, str] = {
    "BINANCE": "binance",
    "BINANCE_FUTURES": "binance-futures",
    "BINANCE_DELIVERY": "binance-delivery",
    "OKX": "okex",
    "BYBIT": "bybit-spot",
    "KRAKEN": "kraken",  # spot; Kraken's futures are Tardis's `cryptofacilities` (not mapped by default)
}


class TardisConfig(BaseModel):
    """The pipeline settings' fields for this vendor."""

    tardis_dir: Path | None = None
    # Exchange name (the part before ':' of an instrument) -> Tardis exchange id.
    tardis_exchanges: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_EXCHANGES))
    # EXCHANGE:SYMBOL -> Tardis symbol, for instruments whose default symbol is not Tardis's.
    tardis_symbols: dict[str, str] = Field(default_factory=dict)

    @field_validator("tardis_exchanges", "tardis_symbols")
    @classmethod
    def _check_names(cls, value: dict[str, str]) -> dict[str, str]:
        for key, name in value.items():
            # They become parts of file names.
            if not name or name != name.strip() or "/" in name or "\\" in name or name in (".", ".."):
                raise ValueError(f"{key}: {name!r} is not a Tardis name")
        return value


def default_symbol(symbol: str) -> str:
    """Tardis's symbol for one of ours: dashes removed and a -PERP suffix dropped (BTC-USDT-PERP -> BTCUSDT)."""
    return symbol.upper().removesuffix("-PERP").replace("-", "")


def _is_contract(symbol: str) -> bool:
    """A perpetual (BTC-USDT-PERP) or dated contract (BTC-USD-251226), not a spot pair (BTC-USDT)."""
    parts = symbol.upper().split("-")
    return len(parts) > 2 and (parts[-1] == "PERP" or parts[-1].isdigit())


def _market_names(exchange_id: str, symbol: str) -> tuple[str, str]:
    """(Tardis exchange id, Tardis symbol) where Tardis splits an exchange by market: OKX's
    `okex` (spot), `okex-swap` (perpetual swaps), `okex-futures` (dated) take OKX's instrument ids
    (BTC-USDT, BTC-USDT-SWAP, BTC-USD-251226); Bybit's `bybit-spot` and `bybit` (its
    derivatives) the symbol without dashes (BTCUSDT); Kraken's `kraken` the WebSocket v2 pair with
    the client's `-` for `/` (BTC-USD for BTC/USD: Tardis's ids since 2026-07-10; earlier days
    are v1's, XBT-USD, set in PIPELINE_TARDIS_SYMBOLS)."""
    symbol = symbol.upper()
    if exchange_id == "okex":
        if symbol.endswith("-PERP"):
            return "okex-swap", symbol.removesuffix("-PERP") + "-SWAP"
        return ("okex-futures" if _is_contract(symbol) else "okex"), symbol
    if exchange_id == "kraken":
        return exchange_id, symbol
    if exchange_id == "bybit-spot" and _is_contract(symbol):
        return "bybit", default_symbol(symbol)
    return exchange_id, default_symbol(symbol)


def tardis_names(exchange: str, symbol: str, exchanges: dict[str, str], symbols: dict[str, str]) -> tuple[str, str]:
    """(Tardis exchange id, Tardis symbol) of the instrument EXCHANGE:SYMBOL (PIPELINE_TARDIS_SYMBOLS
    overrides the symbol)."""
    try:
        exchange_id = exchanges[exchange]
    except KeyError:
        raise ValueError(
            f"no Tardis exchange id for {exchange} (instrument {exchange}:{symbol}); "
            "add it to PIPELINE_TARDIS_EXCHANGES"
        ) from None
    exchange_id, tardis_symbol = _market_names(exchange_id, symbol)
    return exchange_id, symbols.get(f"{exchange}:{symbol}") or tardis_symbol


def tardis_problems(settings) -> list[str]:
    """Settings validation when PIPELINE_SOURCE=tardis."""
    problems = []
    if settings.tardis_dir is None:
        problems.append("PIPELINE_SOURCE=tardis needs PIPELINE_TARDIS_DIR")
    for item in settings.instruments:
        exchange, _, _ = item.partition(":")
        if exchange not in settings.tardis_exchanges:
            problems.append(f"PIPELINE_TARDIS_EXCHANGES: no Tardis exchange id for {exchange} (instrument {item})")
    return problems
