"""`PIPELINE_SOURCE=tardis`: Tardis.dev CSV files under PIPELINE_TARDIS_DIR, served as lake tables.

An instrument-day is read from up to three files, found as the tardis-dev client names them,
``{exchange}_{data_type}_{YYYY-MM-DD}_{SYMBOL}.csv.gz`` (or ``.csv``), directly in the directory
or in its nested layout ``{exchange}/{data_type}/{YYYY-MM-DD}_{SYMBOL}.csv.gz``. The exchange id
and symbol come from the settings (`config.py`). The three files are parsed together (the
``book`` table's sequence numbers come from the ``incremental_book_L2`` messages) and cached as
``tables/{table}/exchange=X/symbol=Y/dt=D/data.parquet`` under ``$PIPELINE_DATA_DIR/sources/tardis``,
with a manifest per instrument-day holding the fingerprint (name, size, mtime) of its files:
changing a file re-reads the day on the next request; otherwise the cache is reused.

Which tables a day has:
- ``book_delta_v2``: its ``incremental_book_L2`` file;
- ``book``: its ``book_snapshot_25`` file, sequenced against the L2 file; an empty table when the
  L2 file is there without snapshots (the replay then runs unchecked); not covered without L2;
- ``trades``: its ``trades`` file.
A table whose file is absent raises ``DayNotCovered`` (recorded as missing, not a failure). A file
that cannot be read is copied to ``lake/quarantine/tardis/`` with a reason file and the other
files are still served; the tables it feeds raise ``TardisRejected`` naming it (and the line).
"""

from __future__ import annotations

import contextvars
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import polars as pl

from market_pipeline.core.errors import InputDataError
from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.lake.cache_lock import cache_lock, day_lock_path
from market_pipeline.core.lake.files import copy_file_atomic, write_text_atomic
from market_pipeline.core.lake.ingest import write_cache_table
from market_pipeline.core.lake.paths import PARTITION_FILE, make_private_dirs, partition_dir, quarantine_dir
from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.core.telemetry import progress
from market_pipeline.vendors.base import LAKE_TABLES, BookDay, DayNotCovered, MissingSourceData
from market_pipeline.vendors.lake_shaped import LakeBookResult, LakeShapedBooks, rebuild_lake_books
from market_pipeline.vendors.tardis.config import tardis_names
from market_pipeline.vendors.tardis.csv_format import (
    DATA_TYPES,
    TardisFormatError,
    file_name,
    iter_book_snapshot_25,
    iter_incremental_book_l2,
    iter_trades,
)
from market_pipeline.vendors.tardis.message_heads import message_heads_writer

L2 = "incremental_book_L2"
SNAPSHOTS = "book_snapshot_25"
TRADES = "trades"
# The Tardis data types each lake table is made from.
TABLE_INPUTS: dict[str, tuple[str, ...]] = {
    "trades": (TRADES,),
    "book_delta_v2": (L2,),
    "book": (L2, SNAPSHOTS),
}
# Bump when the cached tables change shape, so old caches are rebuilt.
CACHE_VERSION = 1
DELTA_CACHE_SCHEMA = pl.Schema({**BOOK_DELTA_SCHEMA, "is_snapshot": pl.Boolean()})


@dataclass(frozen=True)
class RejectedFile:
    path: str
    data_type: str
    reason: str
    line: int | None
    quarantined: str


class TardisRejected(InputDataError, MissingSourceData):
    """A Tardis file this table of the instrument-day is made from could not be read; names it."""

    def __init__(self, table: str, instrument: Instrument, day: dt.date, rejected: list[RejectedFile]):
        self.rejected = rejected
        where = "; ".join(
            f"rejected {r.path}{f' line {r.line}' if r.line else ''}: {r.reason} (quarantined copy {r.quarantined})"
            for r in rejected
        )
        super().__init__("tardis", table, instrument, day, where)


def _fingerprint(names: tuple[str, str], files: dict[str, Path | None]) -> str:
    entries = [
        [data_type, str(p), p.stat().st_size, p.stat().st_mtime_ns] if p is not None else [data_type, None]
        for data_type, p in sorted(files.items())
    ]
    return hashlib.sha256(json.dumps([CACHE_VERSION, list(names), entries]).encode()).hexdigest()


class TardisSource(LakeShapedBooks):
    """VendorSource over a directory of Tardis.dev downloadable CSV files."""

    name = "tardis"
    tables = LAKE_TABLES
    # Tardis builds book_snapshot_25 from the same updates with its own code: an independent
    # check of our replay.
    book_agreement = True

    def __init__(
        self, tardis_dir: Path, root: Path, lake_dir: Path, exchanges: dict[str, str], symbols: dict[str, str]
    ):
        self.tardis_dir = tardis_dir
        self.root = root  # the cache, $PIPELINE_DATA_DIR/sources/tardis
        self.lake_dir = lake_dir  # for the quarantine
        self.exchanges = exchanges
        self.symbols = symbols
        self._days: dict[tuple[str, dt.date], dict] = {}
        # (table, instrument, day) -> the file that served it: raw metadata ("served_by").
        self.served_by: dict[tuple[str, str, dt.date], str] = {}

    # --- files ---------------------------------------------------------------------------------

    def names(self, instrument: Instrument) -> tuple[str, str]:
        """(Tardis exchange id, Tardis symbol) of an instrument."""
        return tardis_names(instrument.exchange, instrument.symbol, self.exchanges, self.symbols)

    def locate(self, instrument: Instrument, day: dt.date) -> dict[str, Path | None]:
        """The instrument-day's file of each data type, None when absent (first found of: flat
        .csv.gz, flat .csv, nested .csv.gz, nested .csv)."""
        exchange_id, symbol = self.names(instrument)
        found: dict[str, Path | None] = {}
        for data_type in (L2, SNAPSHOTS, TRADES):
            nested = self.tardis_dir / exchange_id / data_type
            candidates = [
                self.tardis_dir / file_name(exchange_id, data_type, day, symbol),
                self.tardis_dir / file_name(exchange_id, data_type, day, symbol, compressed=False),
                nested / f"{day.isoformat()}_{symbol}.csv.gz",
                nested / f"{day.isoformat()}_{symbol}.csv",
            ]
            found[data_type] = next((p for p in candidates if p.is_file()), None)
        return found

    def _days_of(self, instrument: Instrument, data_type: str) -> set[dt.date]:
        exchange_id, symbol = self.names(instrument)
        days: set[dt.date] = set()
        prefix, suffix = f"{exchange_id}_{data_type}_", f"_{symbol}"
        listings = [(self.tardis_dir, prefix), (self.tardis_dir / exchange_id / data_type, "")]
        for directory, head in listings:
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                stem = path.name.removesuffix(".gz").removesuffix(".csv")
                if stem == path.name or not stem.startswith(head) or not stem.endswith(suffix):
                    continue
                try:
                    days.add(dt.date.fromisoformat(stem[len(head) : len(stem) - len(suffix)]))
                except ValueError:
                    continue
        return days

    # --- the cache -----------------------------------------------------------------------------

    def _manifest_path(self, instrument: Instrument, day: dt.date) -> Path:
        where = partition_dir(self.root / "manifests", "tardis", instrument.exchange, instrument.symbol, day)
        return where / "manifest.json"

    def _table_path(self, table: str, instrument: Instrument, day: dt.date) -> Path:
        return partition_dir(self.root / "tables", table, instrument.exchange, instrument.symbol, day) / PARTITION_FILE

    def day_manifest(self, instrument: Instrument, day: dt.date) -> dict:
        """The instrument-day's manifest, reading its files into the cache first when they changed."""
        if not self.tardis_dir.is_dir():
            raise FileNotFoundError(f"PIPELINE_TARDIS_DIR {self.tardis_dir} is not a directory")
        names = self.names(instrument)
        files = self.locate(instrument, day)
        wanted = _fingerprint(names, files)
        cached = self._days.get((instrument.key, day))
        if cached is not None and cached["fingerprint"] == wanted:
            return cached
        reading = f"reading the Tardis files of {day} {instrument.key}"
        # The raw assets of one run may ask for the same day from separate processes.
        with cache_lock(day_lock_path(self.root, instrument, day), reading):
            path = self._manifest_path(instrument, day)
            manifest = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            if manifest is None or manifest.get("version") != CACHE_VERSION or manifest["fingerprint"] != wanted:
                with progress.task(reading):
                    manifest = self._read_day(instrument, day, names, files, wanted)
                write_text_atomic(path, json.dumps(manifest, indent=2))
        self._days[(instrument.key, day)] = manifest
        return manifest

    def _read_day(
        self,
        instrument: Instrument,
        day: dt.date,
        names: tuple[str, str],
        files: dict[str, Path | None],
        fingerprint: str,
    ) -> dict:
        exchange_id, symbol = names
        scratch = self.root / ".scratch"  # the L2 messages, removed once the snapshots are sequenced
        make_private_dirs(scratch)
        tables: dict[str, int] = {}
        rejected: list[RejectedFile] = []

        def attempt(
            table: str, data_type: str, batches: Callable[[Path], Iterable[pl.DataFrame]], schema: pl.Schema
        ) -> bool:
            """Write `table` from its file's batches; quarantine the file when it cannot be read."""
            path = files[data_type]
            if path is None:
                return False
            try:
                tables[table] = write_cache_table(batches(path), schema, self._table_path(table, instrument, day))
            except TardisFormatError as exc:
                rejected.append(self._quarantine(path, data_type, exc, instrument, day))
                return False
            return True

        book_path = self._table_path("book", instrument, day)
        with (
            message_heads_writer(scratch) as messages,
            ThreadPoolExecutor(1, thread_name_prefix="tardis-book") as beside,
        ):
            # The book needs the L2 messages' sequence numbers. Its snapshots are read on a thread
            # beside the L2 file, each batch waiting for the messages it needs (`following`): the
            # bench day's three tables took 6.7-6.8 s so against 7.7-7.8 s one after the other.
            book: Future[int] | None = None
            snapshots = files[SNAPSHOTS]
            if files[L2] is not None and snapshots is not None:
                batches = iter_book_snapshot_25(snapshots, day, messages.following(), exchange_id, symbol)
                run = contextvars.copy_context().run
                book = beside.submit(run, write_cache_table, batches, pl.Schema(BOOK_SCHEMA), book_path)
            l2 = False
            try:
                l2 = attempt(
                    "book_delta_v2",
                    L2,
                    lambda p: iter_incremental_book_l2(p, day, messages, exchange_id, symbol),
                    DELTA_CACHE_SCHEMA,
                )
            finally:
                if l2:
                    messages.finish()
                else:  # closed without finishing: a snapshot batch still waiting stops
                    messages.close()
                book_error = book.exception() if book is not None else None
                if not l2:  # rejected or failed: without its sequence numbers, nothing of the book is kept
                    book_path.unlink(missing_ok=True)
            if not l2:
                pass  # not covered: fetch names the L2 file's rejection or absence
            elif book is None:  # no snapshots file: the replay runs unchecked
                tables["book"] = write_cache_table([], BOOK_SCHEMA, book_path)
            elif isinstance(book_error, TardisFormatError):
                rejected.append(self._quarantine(snapshots, SNAPSHOTS, book_error, instrument, day))
            else:
                tables["book"] = book.result()  # raises what else went wrong
        attempt("trades", TRADES, lambda p: iter_trades(p, exchange_id, symbol), pl.Schema(TRADES_SCHEMA))
        return {
            "version": CACHE_VERSION,
            "fingerprint": fingerprint,
            "exchange_id": exchange_id,
            "symbol": symbol,
            "files": {k: (str(v) if v is not None else None) for k, v in files.items()},
            "tables": tables,
            "rejected": [asdict(r) for r in rejected],
        }

    def _quarantine(
        self, path: Path, data_type: str, exc: TardisFormatError, instrument: Instrument, day: dt.date
    ) -> RejectedFile:
        """Copy a bad file (the original stays where it is) with a reason file beside it."""
        target = quarantine_dir(self.lake_dir) / "tardis" / path.name
        record = RejectedFile(str(path), data_type, exc.reason, exc.line, str(target))
        copy_file_atomic(path, target)
        detail = {
            **asdict(record),
            "instrument": instrument.key,
            "dt": day.isoformat(),
            "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
        }
        write_text_atomic(target.with_name(target.name + ".reason.json"), json.dumps(detail, indent=2))
        return record

    # --- VendorSource --------------------------------------------------------------------------

    def fetch(self, table: str, instrument: Instrument, day: dt.date) -> list[Path]:
        if table not in self.tables:
            raise MissingSourceData(self.name, table, instrument, day, "Tardis files do not provide this table")
        try:
            manifest = self.day_manifest(instrument, day)
        except ValueError as exc:  # no exchange id for the instrument
            raise MissingSourceData(self.name, table, instrument, day, str(exc)) from None
        inputs = TABLE_INPUTS[table]
        bad = [RejectedFile(**r) for r in manifest["rejected"] if r["data_type"] in inputs]
        if bad:
            raise TardisRejected(table, instrument, day, bad)
        if table not in manifest["tables"]:
            exchange_id, symbol = manifest["exchange_id"], manifest["symbol"]
            wanted = file_name(exchange_id, DATA_TYPES[table] if table != "book" else L2, day, symbol)
            raise DayNotCovered(self.name, table, instrument, day, f"no {wanted} in {self.tardis_dir}")
        served = manifest["files"][DATA_TYPES[table]] or manifest["files"][L2]
        self.served_by[(table, instrument.key, day)] = Path(served).name
        return [self._table_path(table, instrument, day)]

    def origin(self, table: str, instrument: Instrument, day: dt.date, path: Path) -> str:
        """The Tardis file the cached table was converted from (the book: the snapshots file, whose
        sequence numbers come from the L2 file)."""
        files = self.day_manifest(instrument, day)["files"]
        if table == "book" and files[SNAPSHOTS]:
            return f"{files[SNAPSHOTS]} (sequenced against {files[L2]})"
        return files[DATA_TYPES[table]] or files[L2]

    def available_days(self, table: str, instrument: Instrument) -> list[dt.date]:
        """Days with a file the table is made from (the book: days with an L2 file)."""
        if table not in self.tables:
            return []
        return sorted(self._days_of(instrument, TABLE_INPUTS[table][0]))

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        # Tardis has no sequence numbers: ours count messages, so a jump cannot prove a gap.
        return "monotonic"

    def rebuild_books(self, job: BookDay) -> LakeBookResult | None:
        if self.locate(job.instrument, job.day)[L2] is None:
            return None  # no L2 file that day: recorded as missing
        return rebuild_lake_books(job, self.sequence_semantics(job.instrument))
