"""The floors the bench holds its runs against: what reading every input once and writing every
output once with the same codecs costs, timed in the same run as the work it bounds.

- reads (`read_seconds`): the cheapest honest way for each format: Parquet every column in
  batches; Tardis the import's own readers into typed columns, nothing checked or converted (the
  L2 and snapshot lines by its numba line readers, `line_blocks`: on the bench day 2.1 s and
  0.7 s against 6.6 s and 2.7 s with pyarrow's streaming CSV reader; the trades, and what those
  readers decline, by that reader over `csv_stream.TextStream`: the gzip inflated by ISA-L into
  Arrow's pool); capture the lines inflated by ISA-L, decoded by the capture parser into typed
  columns, nothing written (on two threads: the diffs, bookTickers and trades by the parser's one-pass
  numba readers, what they decline by Arrow's JSON reader per kind, the fastest library
  measured; msgspec a line at a time took 39.5 s for the bench day);
- writes (`write_seconds`): each Parquet file written once more, row group by row group from
  memory, with its own compression, dictionary and delta encodings; only the writes are timed.

The whole graph's floor reads the day's vendor files and writes every lake file the run wrote;
the book stage's reads what the rebuild reads and writes the books partition it wrote.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.paths import partition_dir
from market_pipeline.vendors.base import LAKE_TABLES
from market_pipeline.vendors.synthetic.generate import PART_FILE


def synthetic_day_files(synthetic_root: Path, instrument: Instrument, day: dt.date) -> list[Path]:
    """The synthetic source's files of the instrument-day (Crypto Lake layout): the graph's inputs."""
    return [
        partition_dir(synthetic_root, table, instrument.exchange, instrument.symbol, day) / PART_FILE
        for table in sorted(LAKE_TABLES)
    ]


def lake_outputs(lake_dir: Path, day: dt.date | None = None) -> list[Path]:
    """Every Parquet file under `lake_dir` (in-flight temporary files excluded); with `day`, only
    those of no other day's partition."""
    other_day = f"dt={day.isoformat()}" if day is not None else None
    return sorted(
        p
        for p in lake_dir.rglob("*.parquet")
        if not p.name.startswith(".")
        and (other_day is None or all(not part.startswith("dt=") or part == other_day for part in p.parts))
    )


def read_seconds(reader: str, files: list[Path]) -> float:
    """Read every input file once, the cheapest honest way for its format (`reader`: crypto_lake,
    tardis or capture; see the module doc)."""
    from market_pipeline.vendors.binance.capture_stream import CaptureParser

    started = time.perf_counter()
    for path in files:
        if reader == "crypto_lake":
            for _ in parquet_io.open_file(path, pre_buffer=False).iter_batches():
                pass
        elif reader == "tardis":
            _read_tardis(path)
        elif reader == "capture":
            for _ in CaptureParser([path]).chunks():
                pass
        else:
            raise ValueError(f"unknown reader {reader!r}")
    return time.perf_counter() - started


def _read_tardis(path: Path) -> None:
    """A Tardis file read as the import reads it: by its numba line reader when it has one and the
    file is in Tardis's shape throughout, else by Arrow's streaming CSV reader."""
    import pyarrow.csv as pacsv

    from market_pipeline.vendors.tardis.csv_format import DATA_TYPES, line_reader
    from market_pipeline.vendors.tardis.csv_stream import TextStream

    # {exchange}_{data_type}_{YYYY-MM-DD}_{SYMBOL}.csv.gz, as the tardis-dev client names it
    stem = path.name.removesuffix(".gz").removesuffix(".csv")
    for data_type in DATA_TYPES.values():
        exchange, found, rest = stem.partition(f"_{data_type}_")
        lines = line_reader(path, data_type, exchange, rest.split("_", 1)[-1]) if found else None
        if lines is not None:
            for _ in lines.frames():
                pass
            if lines.whole:
                return
    with TextStream(path) as text:
        for _ in pacsv.open_csv(text):
            pass


def writer_options(metadata, schema) -> dict[str, object]:
    """The compression, dictionary and delta encodings a file's columns were written with (first
    row group). pyarrow delta-encodes only integer Arrow columns: a decimal stored as INT64 with
    DELTA_BINARY_PACKED is written plain (the floor is then a little slower than the graph's write)."""
    import pyarrow as pa

    compression: dict[str, str] = {}
    dictionary: list[str] = []
    encodings: dict[str, str] = {}
    if not metadata.num_row_groups:
        return {}
    group = metadata.row_group(0)
    for i in range(group.num_columns):
        column = group.column(i)
        name = column.path_in_schema
        codec = column.compression.lower()
        compression[name] = "lz4" if codec.startswith("lz4") else codec.replace("uncompressed", "none")
        if any("DICTIONARY" in e for e in column.encodings):
            dictionary.append(name)
        elif "DELTA_BINARY_PACKED" in column.encodings and pa.types.is_integer(schema.field(name).type):
            encodings[name] = "DELTA_BINARY_PACKED"
    return {"compression": compression, "use_dictionary": dictionary, "column_encoding": encodings or None}


def write_seconds(files: list[Path]) -> float:
    """Every file of `files` written once more, row group by row group from memory, with its own
    codecs; only the writes are timed."""
    seconds = 0.0
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        target = Path(scratch) / "rewritten.parquet"
        for path in files:
            reader = parquet_io.open_file(path)
            options = writer_options(reader.metadata, reader.schema_arrow)
            writer = None
            for group in range(reader.metadata.num_row_groups):
                table = reader.read_row_group(group)
                started = time.perf_counter()
                if writer is None:
                    writer = parquet_io.parquet_writer(target, reader.schema_arrow, **options)
                writer.write_table(table, row_group_size=max(1, table.num_rows))
                seconds += time.perf_counter() - started
            if writer is not None:
                started = time.perf_counter()
                writer.close()
                seconds += time.perf_counter() - started
    return seconds
