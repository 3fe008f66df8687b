"""`kraken_capture`: Kraken spot captures under PIPELINE_CAPTURE_DIR served as lake tables, as the
primary source of a pair or, through PIPELINE_SOURCES, as the reference of a bought Kraken day.

The files are `kraken_spot_<pair>_<YYYYMMDD>.gz` (`capture_format`); other exchanges' files in the
same directory are left to their sources. The cache, its manifest, the quarantine of a bad file,
the days covered and the books (core's generic delta replay: a Kraken snapshot clears and reloads
the book, updates apply level by level) are `ExchangeCaptureSource`'s, with Kraken's parser
(`capture_tables.py`) and tables: `book_delta_v2` (snapshots flagged, truncation written out),
`book`, `trades`. Kraken numbers no message, so its sequence numbers (receive times) prove no gap
("monotonic") and `source_agreement` matches a bought day to it by exchange time.

The files are parsed in path order (the recorder's `YYYYMMDDTHH/` directories: time order), each
pair's book carried from one file to the next (`KrakenCaptureParser.follow`), so a file continuing
a session is truncated from the book its session had. Kraken's own checksums of a day
(`exchange_checksums`) come from verify-capture's replay of the day's files (`verify.day_checksums`),
kept beside the cache until the files change (`checksum_cache`).
"""

from __future__ import annotations

from pathlib import Path

from market_pipeline.vendors.capture_source import name_parts
from market_pipeline.vendors.exchange_capture_source import ExchangeCaptureSource
from market_pipeline.vendors.kraken import verify
from market_pipeline.vendors.kraken.capture_tables import LAKE_EXCHANGE, KrakenCaptureParser, file_pair, lake_symbol


def named_instrument(path: Path) -> str | None:
    """EXCHANGE:SYMBOL from a name like ``kraken_spot_xbtusd_20251124.gz``, None otherwise."""
    parts = name_parts(path)
    if len(parts) < 3 or parts[0] != "kraken" or parts[1] != "spot":
        return None
    pair = file_pair(parts[2])
    return None if pair is None else f"{LAKE_EXCHANGE}:{lake_symbol(pair)}"


class KrakenCaptureSource(ExchangeCaptureSource):
    """VendorSource over the Kraken captures of a directory."""

    name = "kraken_capture"
    exchange = "kraken"
    exchange_label = "Kraken"
    checksum_verify = verify
    parser = KrakenCaptureParser

    def named_instrument(self, path: Path) -> str | None:
        return named_instrument(path)
