"""`okx_capture`: OKX v5 captures under PIPELINE_CAPTURE_DIR served as lake tables, as the primary
source of an instrument or, through PIPELINE_SOURCES, as the reference of a bought OKX day.

The files are `okx_<market>_<instrument id>_<YYYYMMDD>.gz` (`capture_format`); other exchanges'
files in the same directory are left to their sources. The cache, its manifest, the quarantine of
a bad file, the days covered and the books (core's generic delta replay: an OKX snapshot clears
and reloads the book, `seqId`s only grow, a broken `prevSeqId` chain unsyncs it) are
`ExchangeCaptureSource`'s, with OKX's parser (`capture_tables.py`) and the shared tables:
`book_delta_v2` (with snapshots flagged), `book`, `book_ticker` (`bbo-tbt`), `trades`. OKX's own
checksums of a day (`exchange_checksums`) come from verify-capture's replay of the day's files
(`verify.day_checksums`), kept beside the cache until the files change (`checksum_cache`).
"""

from __future__ import annotations

from pathlib import Path

from market_pipeline.vendors.capture_source import name_parts
from market_pipeline.vendors.exchange_capture_source import ExchangeCaptureSource
from market_pipeline.vendors.okx import capture_format as fmt
from market_pipeline.vendors.okx import verify
from market_pipeline.vendors.okx.capture_tables import LAKE_EXCHANGE, OkxCaptureParser, lake_symbol


def named_instrument(path: Path) -> str | None:
    """EXCHANGE:SYMBOL from a name like ``okx_swap_btc-usdt-swap_20251124.gz``, None otherwise."""
    parts = name_parts(path)
    if len(parts) < 3 or parts[0] != "okx":
        return None
    inst_id = parts[2].upper()
    if fmt.market_of(inst_id) != parts[1]:
        return None
    return f"{LAKE_EXCHANGE}:{lake_symbol(inst_id)}"


class OkxCaptureSource(ExchangeCaptureSource):
    """VendorSource over the OKX captures of a directory."""

    name = "okx_capture"
    exchange = "okx"
    exchange_label = "OKX"
    checksum_verify = verify
    parser = OkxCaptureParser

    def named_instrument(self, path: Path) -> str | None:
        return named_instrument(path)
