"""Every vendor by its `PIPELINE_SOURCE` name. Adding a vendor: its package and one line here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.quality.checksums import ChecksumFigures
from market_pipeline.vendors import binance, bybit, crypto_lake, kraken, okx, synthetic, tardis
from market_pipeline.vendors.base import BookDay, BookDayResult, Vendor, VendorSource, exchange_checksums

if TYPE_CHECKING:
    from market_pipeline.vendors.live_capture.subscribed import SubscribedFeed

VENDORS: dict[str, Vendor] = {
    vendor.name: vendor
    for vendor in (
        synthetic.VENDOR,
        crypto_lake.LOCAL,
        crypto_lake.S3,
        binance.VENDOR,
        okx.VENDOR,
        bybit.VENDOR,
        kraken.VENDOR,
        tardis.VENDOR,
    )
}


# verify-capture's replay of each exchange's capture files, by the file names' first part
# (`<exchange>_<market>_<symbol>_<YYYYMMDD>.gz`); files named otherwise are Binance's.
CAPTURE_VERIFIERS: dict[str, Callable[[Sequence[Path]], dict]] = {
    "binance": binance.verify_capture,
    "kraken": kraken.verify_capture,
    "okx": okx.verify_capture,
    "bybit": bybit.verify_capture,
}
DEFAULT_CAPTURE_EXCHANGE = "binance"

# `capture --exchange`: the streams of each exchange whose book channel starts with a snapshot on
# subscribing, for the subscribing recorder (vendors/live_capture/subscribed.py); Binance's
# recorder joins a REST snapshot to its diffs (vendors/binance/live/).
SUBSCRIBED_FEEDS: dict[str, Callable[..., SubscribedFeed]] = {
    "kraken": kraken.live_feed,
    "okx": okx.live_feed,
    "bybit": bybit.live_feed,
}


def capture_exchange(files: Sequence[Path]) -> str:
    """The one exchange of capture files, from their names; ValueError when they mix exchanges."""
    exchanges = {
        prefix if prefix in CAPTURE_VERIFIERS else DEFAULT_CAPTURE_EXCHANGE
        for prefix in (Path(f).name.lower().partition("_")[0] for f in files)
    }
    if len(exchanges) > 1:
        raise ValueError(f"capture files of several exchanges ({', '.join(sorted(exchanges))}): verify one at a time")
    return exchanges.pop() if exchanges else DEFAULT_CAPTURE_EXCHANGE


def verify_capture(files: Sequence[Path]) -> dict:
    """verify-capture's figures for capture files of one instrument, by their exchange's rules."""
    return CAPTURE_VERIFIERS[capture_exchange(files)](files)


def vendor_configs() -> tuple[type, ...]:
    """The vendors' settings models, each once: their fields join the pipeline settings."""
    configs: list[type] = []
    for vendor in VENDORS.values():
        if vendor.config is not None and vendor.config not in configs:
            configs.append(vendor.config)
    return tuple(configs)


def get_vendor(name: str) -> Vendor:
    try:
        return VENDORS[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; known: {', '.join(sorted(VENDORS))}") from None


def build_source(settings) -> VendorSource:
    """The primary source of the configured instruments: PIPELINE_SOURCE's vendor, or, when
    PIPELINE_SOURCES gives some instruments another primary, `PrimarySources` over all of them."""
    names = {settings.primary_source(key) for key in settings.instruments}
    if names == {settings.source}:
        return get_vendor(settings.source).build(settings)
    return PrimarySources(settings, names)


def source_of(source: VendorSource, instrument: Instrument) -> VendorSource:
    """The vendor source serving `instrument` (itself unless `source` is a PrimarySources): for
    what a vendor says of all its instruments at once (its tables, `book_agreement`, its name)."""
    return source.of(instrument) if isinstance(source, PrimarySources) else source


class PrimarySources:
    """Each instrument's primary source behind one `VendorSource`: every call about an instrument
    goes to that instrument's vendor, so the stages import, rebuild and check each instrument-day
    from its own primary into the one lake (`lake/raw`, `lake/books`)."""

    book_agreement = False  # per instrument: source_of(...).book_agreement

    def __init__(self, settings, names: set[str]) -> None:
        self._by_name = {name: get_vendor(name).build(settings) for name in sorted(names)}
        self._primary = {key: settings.primary_source(key) for key in settings.instruments}
        self.name = "+".join(self._by_name)
        # The union: a table only some primaries provide is imported for their instruments only.
        self.tables = frozenset().union(*(s.tables for s in self._by_name.values()))

    @property
    def served_by(self) -> dict[tuple[str, str, dt.date], str]:
        """The failover sources' record of what served each import (raw assets' metadata)."""
        return {k: v for s in self._by_name.values() for k, v in getattr(s, "served_by", {}).items()}

    def of(self, instrument: Instrument) -> VendorSource:
        return self._by_name[self._primary[instrument.key]]

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        return self.of(instrument).fetch(table, instrument, day)

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        return self.of(instrument).origin(table, instrument, day, path)

    def available_days(self, table: str, instrument: Instrument) -> list[dt.date] | None:
        return self.of(instrument).available_days(table, instrument)

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        return self.of(instrument).sequence_semantics(instrument)

    def rebuild_books(self, job: BookDay) -> BookDayResult | None:
        return self.of(job.instrument).rebuild_books(job)

    def exchange_checksums(self, instrument: Instrument, day: dt.date) -> ChecksumFigures | None:
        return exchange_checksums(self.of(instrument), instrument, day)
