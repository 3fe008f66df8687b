"""A directory of raw WebSocket captures (`<receive ns> <JSON>` lines, gzip or plain, optionally
encrypted: `capture_files.open_capture`) served as lake tables: what every exchange's capture
source shares (Binance's in `binance/source.py`, OKX's, Bybit's and Kraken's through
`exchange_capture_source.py`); a subclass names its exchange, its parser and its tables.

Files are parsed one by one, chunk by chunk (the exchange's parser), to scratch parts per table
and UTC day of ``received_time``; grouped by instrument and put in time order (by their first
receive time), the parts are streamed into ``tables/{table}/exchange=X/symbol=Y/dt=D/data.parquet``
under ``$PIPELINE_DATA_DIR/sources/<source>`` with one running line order (so a capture crossing
midnight replays as one stream); an instrument's only file's parts are moved there as they are.
Memory is set by the chunk size, not by the size of a file or a day. A manifest beside them holds
the fingerprint (name, size, mtime) of every input file: adding, removing or changing a capture
rebuilds the cache on the next request; otherwise it is reused.

A day the capture covers gets a partition of every table, possibly empty. A day it does not cover
raises ``DayNotCovered``: the raw stage records the instrument-day as missing. A file that cannot
be parsed is copied to ``lake/quarantine/<source>/`` with a reason file and the other files are
served; every instrument-day the bad file may hold data for raises ``CaptureRejected`` naming it
(instrument from the file name, else every instrument; days from the receive times that can still
be read, else the date in the file name, else every day).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from market_pipeline.core.day_clock import NS_PER_DAY
from market_pipeline.core.errors import CaptureError
from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.lake.batches import batch_rows_for, iter_tables
from market_pipeline.core.lake.cache_lock import cache_lock
from market_pipeline.core.lake.files import copy_file_atomic, write_text_atomic
from market_pipeline.core.lake.ingest import CacheTableWriter, write_cache_table
from market_pipeline.core.lake.paths import PARTITION_FILE, make_private_dirs, partition_dir, quarantine_dir
from market_pipeline.core.telemetry import progress
from market_pipeline.vendors.base import BookDay, DayNotCovered, MissingSourceData
from market_pipeline.vendors.capture_files import CaptureFormatError, open_capture
from market_pipeline.vendors.crypto_lake.local import LocalLakeSource

# File names taken as captures (an extra `.enc` suffix is allowed); anything else is ignored.
CAPTURE_SUFFIXES = (".gz", ".txt", ".log", ".jsonl")
ENCRYPTED_SUFFIX = ".enc"
# The other exchanges whose captures the recorder writes (`capture --exchange`), by file name prefix.
OTHER_CAPTURE_EXCHANGES = ("kraken", "okx", "bybit")
# Bump when the cached tables change shape, so old caches are rebuilt.
CACHE_VERSION = 2  # 2: Kraken tables carry the checksum chain
_EPOCH = dt.date(1970, 1, 1)
_DAY = (pl.col("received_time") // NS_PER_DAY).alias("day")


class CaptureRejected(CaptureError, MissingSourceData):
    """A capture file that may hold this instrument-day could not be read; it names the file."""

    def __init__(
        self, table: str, instrument: Instrument, day: dt.date, rejected: list[RejectedFile], source: str = "capture"
    ):
        self.rejected = rejected
        where = "; ".join(f"rejected {r.path}: {r.reason} (quarantined copy {r.quarantined})" for r in rejected)
        super().__init__(source, table, instrument, day, where)


@dataclass(frozen=True)
class RejectedFile:
    path: str
    reason: str
    instrument: str | None  # EXCHANGE:SYMBOL, None when the file name does not tell
    days: tuple[str, ...] | None  # ISO days the file may cover, None when unknown
    quarantined: str

    def covers(self, instrument: Instrument, day: dt.date) -> bool:
        return (self.instrument is None or self.instrument == instrument.key) and (
            self.days is None or day.isoformat() in self.days
        )


def is_capture_file(path: Path) -> bool:
    name = path.name.removesuffix(ENCRYPTED_SUFFIX)
    return not path.name.startswith(".") and name.endswith(CAPTURE_SUFFIXES)


def capture_files(root: Path, exchange: str = "binance") -> list[Path]:
    """`exchange`'s capture files anywhere under `root` (by the name's first part, see
    `capture_exchange_of`), sorted by path."""
    return sorted(
        p for p in root.rglob("*") if p.is_file() and is_capture_file(p) and capture_exchange_of(p) == exchange
    )


def capture_exchange_of(path: Path) -> str:
    """The exchange a capture file is named after (`<exchange>_<market>_<symbol>_<YYYYMMDD>.gz`):
    Binance's unless its name starts with another recorded exchange's (`kraken_`, `okx_`,
    `bybit_`), so captures of several exchanges can share PIPELINE_CAPTURE_DIR."""
    prefix = path.name.lower().partition("_")[0]
    return prefix if prefix in OTHER_CAPTURE_EXCHANGES else "binance"


def name_parts(path: Path) -> list[str]:
    name = path.name.removesuffix(ENCRYPTED_SUFFIX)
    for suffix in CAPTURE_SUFFIXES:
        name = name.removesuffix(suffix)
    return name.lower().split("_")


def named_day(path: Path) -> dt.date | None:
    """The date in a name like ``binance_spot_btcusdt_20240808.gz``."""
    last = name_parts(path)[-1]
    try:
        return dt.datetime.strptime(last, "%Y%m%d").date() if len(last) == 8 else None
    except ValueError:
        return None


def _readable_days(path: Path) -> tuple[str, ...] | None:
    """UTC days of the receive times that can be read before the file breaks, if any.

    The whole file is read for them: `day_files` asks again for every asset and day that counts
    a file's days, so each version of a file (its size and mtime) is read once in a process."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return _readable_days_of(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _readable_days_of(path: Path, size: int, mtime_ns: int) -> tuple[str, ...] | None:
    stamps: list[int] = []
    try:
        with open_capture(path) as stream:
            for line in stream:
                head = line.split(b" ", 1)[0]
                if head.isdigit():
                    stamps.append(int(head))
    except (OSError, EOFError, ValueError):  # the damage that got the file rejected
        pass
    if not stamps:
        return None
    first, last = min(stamps) // NS_PER_DAY, max(stamps) // NS_PER_DAY
    return tuple((_EPOCH + dt.timedelta(days=d)).isoformat() for d in range(first, last + 1))


def fingerprint(files: list[Path]) -> str:
    entries = [[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    return hashlib.sha256(json.dumps([CACHE_VERSION, entries]).encode()).hexdigest()


@dataclass
class ParsedFile:
    """One capture file parsed to scratch Parquet parts, one per table and UTC day of received_time,
    with the file's own line_no (from 0)."""

    path: Path
    scratch: Path
    market: str
    exchange: str
    symbol: str
    first_received: int
    line_span: int  # the last line_no of a line-ordered row + 1 (0: none): the next file's line offset
    days: set[int]  # days since the epoch

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.symbol}"

    def part(self, table: str, day: int) -> Path:
        return self.scratch / table / f"{day}.parquet"


def parse_parts(parser, path: Path, scratch: Path, line_ordered: tuple[str, ...]) -> ParsedFile:
    """Write the chunks of `parser` (of the one file `path`: a `CaptureParser` or another
    exchange's parser with its `chunks()` and `instrument()`) as per-table, per-day parts under
    `scratch`; `line_ordered` the tables with a `line_no`. The parts are written as the cached
    tables are (`ingest.CacheTableWriter`): an instrument's only file's parts become its cached
    tables as they are."""
    first_received, line_span, days = None, 0, set()
    with ExitStack() as writers:
        open_parts: dict[Path, CacheTableWriter] = {}
        for chunk in parser.chunks():
            for name, frame in chunk.items():
                if frame.is_empty():
                    continue
                received = frame.get_column("received_time")
                start, end = received.min(), received.max()
                first_received = start if first_received is None else min(first_received, start)
                if name in line_ordered:
                    line_span = max(line_span, frame.get_column("line_no").max() + 1)
                for day, part in _day_parts(frame, start, end):
                    days.add(day)
                    target = scratch / name / f"{day}.parquet"
                    if target not in open_parts:
                        target.parent.mkdir(parents=True, exist_ok=True)
                        open_parts[target] = writers.enter_context(CacheTableWriter(target, part.schema))
                    open_parts[target].write(part)
    market, exchange, symbol = parser.instrument()
    return ParsedFile(path, scratch, market, exchange, symbol, first_received or 0, line_span, days)


def _day_parts(frame: pl.DataFrame, start: int, end: int) -> Iterator[tuple[int, pl.DataFrame]]:
    """(day, rows) of a chunk's table by UTC day of received_time (from `start` to `end`), in row
    order. A chunk almost always falls on one day: it is then its own part, not copied (splitting
    every chunk copied its rows: the bench day's parse to parts took 47.9-48.9 CPU-s and 607-624 MB
    so, 47.2-47.8 CPU-s and 573-576 MB without; the wall time, bound by the decoders, barely moved)."""
    if start // NS_PER_DAY == end // NS_PER_DAY:
        yield start // NS_PER_DAY, frame
        return
    parts = frame.with_columns(_DAY).partition_by("day", maintain_order=True, include_key=False, as_dict=True)
    for (day,), part in parts.items():
        yield day, part


def _write_day_table(
    target: Path, table: str, parts: list[tuple[int, ParsedFile]], day: int, source: CaptureSource
) -> None:
    """One cached partition: the instrument's files' parts of `day` in time order, line_no shifted
    by each file's offset (one running line order), streamed from the scratch parts and written
    as the Tardis cache is (`ingest.write_cache_table`); the bench day's deltas (34 M rows) took
    10.9 CPU-s with zstd (`sink_parquet`), 5.0 so. An instrument's only file's part is already
    that partition: it is moved (5.3 s of the bench day's 35.6 s cache build saved)."""
    (offset, only), *others = parts
    part = only.part(table, day)
    if not others and offset == 0 and part.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        part.replace(target)
        return
    write_cache_table(_day_rows(table, parts, day, source), source.table_schemas[table], target)


def _day_rows(
    table: str, parts: list[tuple[int, ParsedFile]], day: int, source: CaptureSource
) -> Iterator[pl.DataFrame]:
    """The rows of `table` on `day` in the files' scratch parts, a row group at a time, in order."""
    for offset, parsed in parts:
        if not parsed.part(table, day).is_file():
            continue
        with pq.ParquetFile(parsed.part(table, day)) as part:
            for group in iter_tables(part, None, batch_rows_for(len(part.schema_arrow))):
                rows = pl.from_arrow(group)
                assert isinstance(rows, pl.DataFrame)
                yield rows.with_columns(pl.col("line_no") + offset) if table in source.line_ordered else rows


def _rejected(manifest: dict) -> list[RejectedFile]:
    return [RejectedFile(**{**r, "days": tuple(r["days"]) if r["days"] else None}) for r in manifest["rejected"]]


class CaptureSource:
    """VendorSource over a directory of one exchange's raw captures: the cache, its manifest, the
    quarantine and the days covered. A subclass (`binance.source.BinanceCaptureSource`,
    `exchange_capture_source.ExchangeCaptureSource`: OKX's, Bybit's, Kraken's) names the source and
    its exchange's files, and says how a file is parsed, how its name reads and how books are rebuilt."""

    name: str  # the registry's, and the cache's and quarantine's folder
    exchange: str  # whose files in PIPELINE_CAPTURE_DIR it reads (`capture_exchange_of`)
    exchange_label: str
    tables: frozenset[str]
    table_schemas: dict[str, dict[str, pl.DataType]]
    line_ordered: tuple[str, ...]  # the tables with a `line_no`
    book_agreement = False  # a capture's snapshots are the replay's sync points, not a check of it

    def __init__(self, capture_dir: Path, root: Path, lake_dir: Path, fidelity_interval_ms: int = 1000):
        self.capture_dir = capture_dir
        self.fidelity_interval_ms = fidelity_interval_ms  # grid of the capture-fidelity samples
        self.root = root  # the cache, $PIPELINE_DATA_DIR/sources/capture
        self.lake_dir = lake_dir  # for the quarantine
        self._manifest: dict | None = None

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    # --- the cache -----------------------------------------------------------------------------

    def manifest(self) -> dict:
        """The cache manifest, rebuilding the cache first when the capture files changed."""
        if not self.capture_dir.is_dir():
            raise FileNotFoundError(f"PIPELINE_CAPTURE_DIR {self.capture_dir} is not a directory")
        wanted = fingerprint(capture_files(self.capture_dir, self.exchange))
        if self._manifest is not None and self._manifest["fingerprint"] == wanted:
            return self._manifest
        # Raw assets of one run may ask from separate processes at the same time.
        reading = f"reading the {self.exchange_label} captures in {self.capture_dir}"
        with cache_lock(self.root / ".lock", reading):
            manifest = self._read_manifest()
            if manifest is None or manifest["fingerprint"] != wanted:
                with progress.task(reading):
                    manifest = self._rebuild()
        self._manifest = manifest
        return manifest

    def _read_manifest(self) -> dict | None:
        if not self.manifest_path.is_file():
            return None
        manifest = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        return manifest if manifest.get("version") == CACHE_VERSION else None

    def _rebuild(self) -> dict:
        files = capture_files(self.capture_dir, self.exchange)
        wanted = fingerprint(files)  # taken before parsing: a file changing meanwhile rebuilds again
        scratch = self.root / f".scratch-{uuid.uuid4().hex}"
        try:
            groups: dict[str, list[ParsedFile]] = defaultdict(list)
            rejected: list[RejectedFile] = []
            for index, path in enumerate(files):
                try:
                    parsed = self.parse_file(path, scratch / str(index))
                except CaptureFormatError as exc:  # truncated gzip, bad line, undecryptable, ...
                    shutil.rmtree(scratch / str(index), ignore_errors=True)
                    rejected.append(self._quarantine(path, str(exc)))
                    continue
                groups[parsed.key].append(parsed)
            build = self.root / f".build-{uuid.uuid4().hex}"
            instruments = {key: self._write_instrument(build, parts) for key, parts in sorted(groups.items())}
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        make_private_dirs(build)
        old = self.root / f".old-{uuid.uuid4().hex}"
        if self.tables_dir.exists():
            self.tables_dir.rename(old)
        build.rename(self.tables_dir)
        shutil.rmtree(old, ignore_errors=True)
        manifest = {
            "version": CACHE_VERSION,
            "fingerprint": wanted,
            "capture_dir": str(self.capture_dir),
            "instruments": instruments,
            "rejected": [r.__dict__ for r in rejected],
        }
        write_text_atomic(self.manifest_path, json.dumps(manifest, indent=2))
        return manifest

    def parse_file(self, path: Path, scratch: Path) -> ParsedFile:
        """One capture file parsed to scratch parts (`parse_parts` over the exchange's parser)."""
        raise NotImplementedError

    def named_instrument(self, path: Path) -> str | None:
        """EXCHANGE:SYMBOL from the file's name, None when the name does not tell."""
        raise NotImplementedError

    def _write_instrument(self, build: Path, parsed: list[ParsedFile]) -> dict:
        """One instrument's files, in time order (by first receive time), as day partitions under
        `build` with one running line order; its manifest entry."""
        parsed.sort(key=lambda part: (part.first_received, str(part.path)))
        offsets, offset = [], 0
        for part in parsed:
            offsets.append(offset)
            offset += part.line_span
        days = sorted(set().union(*(part.days for part in parsed)))
        first = parsed[0]
        for day in days:
            for name in sorted(self.tables):
                target = partition_dir(build, name, first.exchange, first.symbol, _EPOCH + dt.timedelta(days=day))
                _write_day_table(target / PARTITION_FILE, name, list(zip(offsets, parsed, strict=True)), day, self)
        return {
            "market": first.market,
            "files": [str(part.path) for part in parsed],
            "days": [(_EPOCH + dt.timedelta(days=day)).isoformat() for day in days],
        }

    def _quarantine(self, path: Path, reason: str) -> RejectedFile:
        """Copy a bad capture (the original stays where it is) with a reason file beside it."""
        target = quarantine_dir(self.lake_dir) / self.name / path.name
        record = RejectedFile(
            path=str(path),
            reason=reason,
            instrument=self.named_instrument(path),
            days=_readable_days(path) or ((d.isoformat(),) if (d := named_day(path)) else None),
            quarantined=str(target),
        )
        copy_file_atomic(path, target)
        detail = {**record.__dict__, "quarantined_at": dt.datetime.now(dt.UTC).isoformat()}
        write_text_atomic(target.with_name(target.name + ".reason.json"), json.dumps(detail, indent=2))
        return record

    # --- VendorSource --------------------------------------------------------------------------

    def rejected_files(self) -> list[RejectedFile]:
        return _rejected(self.manifest())

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        manifest = self.manifest()
        bad = [r for r in _rejected(manifest) if r.covers(instrument, day)]
        if bad:
            raise CaptureRejected(table, instrument, day, bad, self.name)
        if table not in self.tables:
            raise MissingSourceData(self.name, table, instrument, day, "captures do not provide this table")
        covered = manifest["instruments"].get(instrument.key, {}).get("days", [])
        if day.isoformat() not in covered:
            raise DayNotCovered(self.name, table, instrument, day, f"no capture in {self.capture_dir} covers it")
        return LocalLakeSource(self.tables_dir, name=self.name).fetch(table, instrument, day)

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        raise NotImplementedError

    def rebuild_books(self, job: BookDay):
        raise NotImplementedError

    def files_of_day(self, instrument: Instrument, day: dt.date) -> int:
        """How many of the instrument's capture files hold data of `day`."""
        return len(self.day_files(instrument, day))

    def day_files(self, instrument: Instrument, day: dt.date) -> list[Path]:
        """The instrument's capture files that hold data of `day`, in time order.

        A file is named after the day it starts on: one named `day` counts, one named the day
        before (or without a day) counts when its receive times reach into `day`.
        """
        found = []
        for name in self.manifest()["instruments"].get(instrument.key, {}).get("files", []):
            path = Path(name)
            named = named_day(path)
            if named == day or (
                (named is None or named == day - dt.timedelta(days=1))
                and day.isoformat() in (_readable_days(path) or ())
            ):
                found.append(path)
        return found

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        """The capture files the day's converted table was made from."""
        return ", ".join(str(p) for p in self.day_files(instrument, day)) or str(path)

    def available_days(self, table: str, instrument: Instrument) -> list[dt.date]:
        """Days the captures cover for the instrument (every table has a partition on each),
        plus days a rejected file may cover: a run of those fails naming the file."""
        if table not in self.tables:
            return []
        manifest = self.manifest()
        days = {dt.date.fromisoformat(d) for d in manifest["instruments"].get(instrument.key, {}).get("days", [])}
        for bad in _rejected(manifest):
            if bad.days is not None and bad.instrument in (None, instrument.key):
                days.update(dt.date.fromisoformat(d) for d in bad.days)
        return sorted(days)
