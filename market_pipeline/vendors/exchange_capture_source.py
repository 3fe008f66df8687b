"""The capture source of an exchange whose book stream starts with a snapshot (OKX, Bybit, Kraken): the
capture sources' cache, manifest, quarantine and days covered (`capture_source.py`), with
the exchange's parser (a `capture_tables.ChunkedCaptureParser`) and the tables it serves (the
shared `capture_tables.TABLE_SCHEMAS`, or its own). Books are rebuilt by core's generic delta replay
(`lake_shaped.rebuild_lake_books`): a snapshot clears and reloads the book, updates apply level by
level, the ids (`sequence_number`) only grow ("monotonic": they jump, so a jump proves no gap); a
message that breaks the exchange's chain (OKX's, Bybit's `prev_update_id`) does, and unsyncs the
books until the next snapshot."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from types import ModuleType

from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.quality.checksums import ChecksumFigures
from market_pipeline.vendors.base import BookDay
from market_pipeline.vendors.capture_source import CaptureSource, ParsedFile, parse_parts
from market_pipeline.vendors.capture_tables import ChunkedCaptureParser
from market_pipeline.vendors.checksum_cache import capture_day_checksums
from market_pipeline.vendors.lake_shaped import LakeBookResult, rebuild_lake_books


class ExchangeCaptureSource(CaptureSource):
    """VendorSource over one exchange's captures of a directory; a subclass names the exchange
    (`name`, `exchange`, `exchange_label`), its parser (`parser`) and how a file's name reads
    (`named_instrument`), and, where the exchange sends book checksums, its verify module
    (`checksum_verify`). The tables it serves are its parser's."""

    book_agreement = False  # the snapshots load the book: its sync points, not a check of it
    parser: type[ChunkedCaptureParser]
    # The exchange's verify module, whose `day_checksums` replays a day's checksums (looked up when
    # called), None when its book stream carries no checksum (Bybit).
    checksum_verify: ModuleType | None = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "parser" in cls.__dict__:  # the tables are the parser's, stated once
            cls.table_schemas = cls.parser.table_schemas
            cls.tables = frozenset(cls.table_schemas)
            cls.line_ordered = cls.parser.line_ordered

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # Each instrument's (by file name) parser of the last file read: a rebuild reads the files
        # in path order, which is time order for one instrument's (the recorder's hourly
        # directories, the day in the name), so the next file's parser follows on from it.
        self._last_parsers: dict[str, ChunkedCaptureParser] = {}

    def _rebuild(self) -> dict:
        self._last_parsers = {}
        return super()._rebuild()

    def parse_file(self, path: Path, scratch: Path) -> ParsedFile:
        parser, key = self.parser([path]), self.named_instrument(path)
        if key is not None and key in self._last_parsers:
            parser.follow(self._last_parsers[key])
        parsed = parse_parts(parser, path, scratch, self.line_ordered)
        if key is not None:
            self._last_parsers[key] = parser
        return parsed

    def exchange_checksums(self, instrument: Instrument, day: dt.date) -> ChecksumFigures | None:
        """The exchange's checksums of the instrument-day's book messages (`base.ChecksumSource`),
        replayed once and kept until the day's files change; None for an exchange without them."""
        if self.checksum_verify is None:
            return None
        return capture_day_checksums(self, instrument, day, self.checksum_verify.day_checksums)

    def sequence_semantics(self, instrument) -> SequenceSemantics:
        return "monotonic"  # the exchange's ids grow with jumps: a jump proves no loss

    def rebuild_books(self, job: BookDay) -> LakeBookResult | None:
        if job.day not in self.available_days("book_delta_v2", job.instrument):
            return None  # no capture that day: recorded as missing
        return rebuild_lake_books(job, self.sequence_semantics(job.instrument))
