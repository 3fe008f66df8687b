"""The one protocol every vendor implements, and what the stages ask of it.

A vendor is a package under `vendors/` that exports a `Vendor` (name, its settings, a builder).
The builder turns the pipeline settings into a `VendorSource`: the raw tables it provides,
fetching an instrument-day of one table as local Parquet files in the lake's schemas, what its
sequence numbers can prove, and rebuilding one instrument-day's books from the raw lake; a source
whose exchange sends book checksums also replays them (`ChecksumSource`, optional).
Vendors import `core/` only; they read the pipeline settings duck-typed (attributes they own,
plus `data_dir`, `lake_dir` and `book`), never the settings module.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from market_pipeline.core.errors import SourceError
from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.quality.checksums import ChecksumFigures

# The Crypto Lake tables every lake-shaped vendor serves (captures add book_ticker and depth_snapshot).
LAKE_TABLES = frozenset({"trades", "book", "book_delta_v2"})


class MissingSourceData(SourceError):
    """The source has no files for a table, instrument and day."""

    def __init__(self, source: str, table: str, instrument: Instrument, day: dt.date, where: str):
        self.day = day
        super().__init__(f"{source} source has no {table} data for {instrument.key} on {day.isoformat()} ({where})")


class DayNotCovered(MissingSourceData):
    """The source has nothing for this instrument-day by nature, not by fault (no capture was
    running that day): the raw stage records the instrument-day as missing instead of failing."""


@dataclass(frozen=True)
class BookDay:
    """One instrument-day's book rebuild, as the books stage asks for it."""

    lake_dir: Path
    instrument: Instrument
    day: dt.date
    depth: int
    interval_ms: int
    spill_dir: Path | None = None  # scratch a rebuild may spill to (None: the system's temporary directory)


class BookDayResult(Protocol):
    """What a vendor's rebuild reports for one instrument-day."""

    counters: dict[str, int]
    seconds: float

    @property
    def events(self) -> int:
        """Input events replayed (messages or diffs), the base of the throughput figure."""
        ...

    @property
    def totals(self) -> dict[str, int]:
        """deltas_applied, gaps and fills: summed over the run in the step's metadata."""
        ...

    def metadata(self, instrument_key: str) -> dict[str, object]:
        """Per-partition materialization metadata, keys prefixed with the instrument."""
        ...

    def summary(self) -> str:
        """One log line."""
        ...


@dataclass
class WrappedBookResult:
    """Base of a vendor's `BookDayResult`: the counters and time of the rebuild result it wraps;
    subclasses add `events`, `totals`, `metadata` and `summary`."""

    result: Any

    @property
    def counters(self) -> dict[str, int]:
        return self.result.counters

    @property
    def seconds(self) -> float:
        return self.result.seconds


def book_day_metadata(
    key: str,
    figures: dict[str, object],
    rows_in: int,
    seconds: float,
    peak_rss_bytes: int,
    start_mode: str,
    detail: dict[str, object],
) -> dict[str, object]:
    """A rebuilt instrument-day's metadata (`BookDayResult.metadata`), keys prefixed with the
    instrument `key`: the vendor's `figures` (numbers the UI plots), then what every rebuild
    reports (delta rows replayed per second, peak memory, how the day started), then `detail`
    (one dict, stored as JSON metadata)."""
    return {
        **{f"{key} {name}": value for name, value in figures.items()},
        f"{key} deltas_per_second": rows_in / seconds if seconds else 0.0,
        f"{key} peak_rss_mb": peak_rss_bytes / 2**20,
        f"{key} start_mode": start_mode,
        f"{key} detail": detail,
    }


class VendorSource(Protocol):
    name: str
    tables: frozenset[str]
    # Whether rebuild_books writes the per-snapshot agreement table: the vendor's snapshots are
    # independent of the replay. Not so for captures, whose REST snapshots are the sync points.
    book_agreement: bool

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        """Local Parquet files holding the vendor's `table` for one instrument-day, in order.

        Raises MissingSourceData when the source has no such day (DayNotCovered: by nature).
        """
        ...

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        """The user's file(s) that `path`, a file `fetch` returned for this table and instrument-day,
        was made from, as messages about bad input name them: `path` itself when the source serves
        its files as they are, the original file(s) when it serves a converted or downloaded copy."""
        ...

    def available_days(self, table: str, instrument: Instrument) -> list[dt.date] | None:
        """Days present at the source, for the new-day sensor; None when it cannot list them."""
        ...

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        """What the source's sequence numbers can prove for this instrument."""
        ...

    def rebuild_books(self, job: BookDay) -> BookDayResult | None:
        """Rebuild one instrument-day's books from the raw lake; None when the source has no
        data for it by nature (recorded as missing, not a failure)."""
        ...


class ChecksumSource(Protocol):
    """The optional part of the protocol: a source whose exchange sends a checksum of its book with
    the updates (Kraken, OKX before 2026) implements `exchange_checksums`; the others do not, or
    return None (every exchange capture source has it: Bybit's has no checksum to replay)."""

    def exchange_checksums(self, instrument: Instrument, day: dt.date) -> ChecksumFigures | None:
        """The exchange's checksums of the instrument-day, recomputed by its verify replay over the
        day's capture files (streaming, bounded memory); None when the source has no data that day."""
        ...


def exchange_checksums(source: VendorSource, instrument: Instrument, day: dt.date) -> ChecksumFigures | None:
    """`source.exchange_checksums(instrument, day)`; None for a source without exchange checksums."""
    replay = getattr(source, "exchange_checksums", None)
    return None if replay is None else replay(instrument, day)


@dataclass(frozen=True)
class Vendor:
    """A registry entry: `PIPELINE_SOURCE=<name>` selects it.

    `config` is a pydantic model whose fields join the pipeline settings (so its environment
    names are `PIPELINE_<FIELD>`); `problems` says which required setting is missing when the
    vendor is selected (settings validation); `environment` what is wrong around valid settings
    (a directory that does not exist; `validate-env`); `describe` is a secret-free summary;
    `build` imports the vendor's heavy modules only when it is used.
    """

    name: str
    description: str
    build: Callable[[Any], VendorSource]
    config: type[BaseModel] | None = None
    problems: Callable[[Any], list[str]] = lambda settings: []
    environment: Callable[[Any], list[str]] = lambda settings: []
    describe: Callable[[Any], str] = lambda settings: ""
    # Whether `book_delta_v2.sequence_number` is the exchange's update id (Crypto Lake's Binance
    # data): then `source_agreement` can match its messages to a capture's by id.
    update_ids: bool = False
    # Whether its book messages carry the exchange's ids at all (False: Kraken numbers none): as the
    # reference of `source_agreement`, one without them is matched by exchange time.
    message_ids: bool = True
    # The resolution (ns) of the exchange time the source stamps each of its book messages with,
    # None when it stamps none: as the reference of a vendor matched by exchange time, its messages
    # with no vendor message at the same instant are counted missing (a Kraken capture: 1 µs).
    message_time_ns: int | None = None
    # The resolution (ns) of the exchange time on the source's `book_ticker` rows of an instrument,
    # None when they carry none (their origin_time is the receive time): what `source_agreement`
    # can match a vendor without update ids by (exchange time).
    ticker_time_ns: Callable[[Any], int | None] = lambda instrument: None


def directory_problem(variable: str, path: Path | None) -> list[str]:
    """A configured directory that does not exist, named by its variable."""
    if path is not None and not path.is_dir():
        return [f"{variable}: {path.resolve()} is not an existing directory"]
    return []
