"""Settings of the Tardis.dev source (`PIPELINE_TARDIS_DIR`, `PIPELINE_TARDIS_EXCHANGES`,
`PIPELINE_TARDIS_SYMBOLS`) and how an instrument is named in Tardis file names."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

# Our (Crypto Lake) exchange names -> Tardis exchange ids; config.yaml repeats these defaults.
DEFAULT_EXCHANGES: dict[str, str] = {
    "BINANCE": "binance",
    "BINANCE_FUTURES": "binance-futures",
    "BINANCE_DELIVERY": "binance-delivery",
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


def tardis_names(exchange: str, symbol: str, exchanges: dict[str, str], symbols: dict[str, str]) -> tuple[str, str]:
    """(Tardis exchange id, Tardis symbol) of the instrument EXCHANGE:SYMBOL."""
    try:
        exchange_id = exchanges[exchange]
    except KeyError:
        raise ValueError(
            f"no Tardis exchange id for {exchange} (instrument {exchange}:{symbol}); "
            "add it to PIPELINE_TARDIS_EXCHANGES"
        ) from None
    return exchange_id, symbols.get(f"{exchange}:{symbol}") or default_symbol(symbol)


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
