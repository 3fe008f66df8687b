"""The Tardis reader streams: its cached tables equal those of the whole-file reader it replaced
(kept here as the reference) on real rows and synthetic days, whatever the block and batch sizes, and a
problem past the first block is still named by its line, leaving no cache file."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from polars.testing import assert_frame_equal

from market_pipeline.core.lake.schemas import BOOK_DELTA_SCHEMA, BOOK_LEVELS, BOOK_SCHEMA, TRADES_SCHEMA
from market_pipeline.core.telemetry.memory import HEAP_PIECE_BYTES
from market_pipeline.vendors.tardis import csv_stream, line_blocks
from market_pipeline.vendors.tardis.config import DEFAULT_EXCHANGES, tardis_names
from market_pipeline.vendors.tardis.csv_format import (
    L2_COLUMNS,
    TRADES_COLUMNS,
    US,
    TardisFormatError,
    day_sequence_base,
    iter_book_snapshot_25,
    iter_incremental_book_l2,
    iter_trades,
    line_reader,
    snapshot_columns,
)
from market_pipeline.vendors.tardis.message_heads import HeadsAbandoned, MessageHeads, MessageHeadsWriter
from market_pipeline.vendors.tardis.source import TardisRejected, TardisSource
from market_pipeline_tests.support.tardis_files import REAL, SPOT, needs_real

DAY = dt.date(2024, 3, 1)
DAY_US = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
L2, SNAPSHOTS, TRADES = "incremental_book_L2", "book_snapshot_25", "trades"
SMALL_BLOCK = 1 << 16  # ~1,000 L2 rows: a synthetic day in tens of blocks

# ---------------------------------------------------------------------------------------
# The reference: the whole-file reader the streaming one replaced (its error handling left out:
# the error tests below check the streaming reader)
# ---------------------------------------------------------------------------------------

_TYPES = {
    "exchange": pl.String(),
    "symbol": pl.String(),
    "timestamp": pl.Int64(),
    "local_timestamp": pl.Int64(),
    "is_snapshot": pl.Boolean(),
    "side": pl.String(),
    "price": pl.Float64(),
    "amount": pl.Float64(),
    "id": pl.String(),
}


def _whole(path: Path, columns: list[str], tmp: Path) -> pl.DataFrame:
    plain = path
    if path.name.endswith(".gz"):
        plain = tmp / path.name.removesuffix(".gz")
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    overrides = {name: _TYPES.get(name, pl.Float64()) for name in columns}
    return pl.read_csv(plain, has_header=True, columns=columns, schema_overrides=overrides, infer_schema=False)


def reference_l2(path: Path, day: dt.date, tmp: Path) -> tuple[pl.DataFrame, tuple[np.ndarray, ...]]:
    df = _whole(path, L2_COLUMNS, tmp)
    keys = [pl.col("local_timestamp"), pl.col("timestamp"), pl.col("is_snapshot")]
    starts = pl.any_horizontal(k.ne_missing(k.shift(1)) for k in keys).fill_null(True)
    df = df.with_columns(
        (pl.lit(day_sequence_base(day)) + starts.cast(pl.Int64).cum_sum()).alias("sequence_number"),
        starts.alias("_start"),
    )
    heads = df.filter(pl.col("_start"))
    messages = (
        np.maximum.accumulate(heads["local_timestamp"].to_numpy()) if heads.height else np.empty(0, np.int64),
        heads["timestamp"].to_numpy(),
        heads["sequence_number"].to_numpy(),
    )
    deltas = df.select(
        (pl.col("timestamp") * US).alias("origin_time"),
        (pl.col("local_timestamp") * US).alias("received_time"),
        "sequence_number",
        (pl.col("side") == "bid").alias("side_is_bid"),
        "price",
        pl.col("amount").alias("size"),
        "is_snapshot",
    )
    return deltas.cast({**BOOK_DELTA_SCHEMA, "is_snapshot": pl.Boolean()}), messages


def reference_sequence(messages: tuple[np.ndarray, ...], local: np.ndarray, stamp: np.ndarray, base: int) -> np.ndarray:
    msg_l, msg_t, msg_seq = messages
    if not len(msg_seq):
        return np.full(len(local), base, np.int64)
    lo = np.searchsorted(msg_l, local, side="left")
    chosen = np.searchsorted(msg_l, local, side="right") - 1
    later = (chosen >= lo) & (msg_t[np.clip(chosen, 0, None)] > stamp)
    for k in np.nonzero(later)[0]:
        j = chosen[k]
        while j >= lo[k] and msg_t[j] > stamp[k]:
            j -= 1
        chosen[k] = j
    return np.where(chosen >= 0, msg_seq[np.clip(chosen, 0, None)], base).astype(np.int64)


def reference_book(path: Path, day: dt.date, messages: tuple[np.ndarray, ...], tmp: Path) -> pl.DataFrame:
    df = _whole(path, snapshot_columns(BOOK_LEVELS), tmp)
    base = day_sequence_base(day)
    sequence = reference_sequence(messages, df["local_timestamp"].to_numpy(), df["timestamp"].to_numpy(), base)
    levels = [
        pl.col(f"{tardis_side}[{i}].{tardis_field}").alias(f"{side}_{i}_{field}")
        for side, tardis_side in (("bid", "bids"), ("ask", "asks"))
        for i in range(BOOK_LEVELS)
        for field, tardis_field in (("price", "price"), ("size", "amount"))
    ]
    book = df.select(
        (pl.col("timestamp") * US).alias("origin_time"),
        (pl.col("local_timestamp") * US).alias("received_time"),
        pl.Series("sequence_number", sequence, dtype=pl.Int64),
        *levels,
    )
    return book.cast(BOOK_SCHEMA)  # type: ignore[arg-type]


def reference_trades(path: Path, tmp: Path) -> pl.DataFrame:
    trades = _whole(path, TRADES_COLUMNS, tmp).select(
        (pl.col("timestamp") * US).alias("origin_time"),
        (pl.col("local_timestamp") * US).alias("received_time"),
        "side",
        "price",
        pl.col("amount").alias("quantity"),
        pl.col("id").alias("trade_id"),
    )
    return trades.cast(TRADES_SCHEMA)  # type: ignore[arg-type]


def reference_day(files: dict[str, Path], day: dt.date, tmp: Path) -> dict[str, pl.DataFrame]:
    deltas, messages = reference_l2(files[L2], day, tmp)
    return {
        "book_delta_v2": deltas,
        "book": reference_book(files[SNAPSHOTS], day, messages, tmp),
        "trades": reference_trades(files[TRADES], tmp),
    }


# ---------------------------------------------------------------------------------------
# Streaming equals the reference
# ---------------------------------------------------------------------------------------


def _streamed_day(tardis_dir: Path, instrument, cache: Path) -> dict[str, pl.DataFrame]:
    source = TardisSource(tardis_dir, cache / "sources", cache / "lake", DEFAULT_EXCHANGES, {})
    manifest = source.day_manifest(instrument, DAY)
    assert manifest["rejected"] == []
    return {table: pl.read_parquet(source.fetch(table, instrument, DAY)[0]) for table in manifest["tables"]}


def _assert_day_equal(streamed: dict[str, pl.DataFrame], reference: dict[str, pl.DataFrame]) -> None:
    assert sorted(streamed) == sorted(reference)
    for table, frame in reference.items():
        assert_frame_equal(streamed[table], frame)


# A line block shorter than any line: the numba line readers hand every file to Arrow's reader.
ARROW_ONLY = 60


@pytest.mark.parametrize(
    ("block_bytes", "batch_blocks", "line_block_bytes"),
    [
        (SMALL_BLOCK, 1, ARROW_ONLY),
        (SMALL_BLOCK, 5, ARROW_ONLY),
        (1 << 30, 1, ARROW_ONLY),
        (csv_stream.BLOCK_BYTES, csv_stream.BATCH_BLOCKS, line_blocks.BLOCK_BYTES),  # as the source reads
    ],
)
def test_synthetic_days_stream_to_the_whole_file_tables(
    synthetic_tardis, tmp_path, monkeypatch, block_bytes, batch_blocks, line_block_bytes
):
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(csv_stream, "BATCH_BLOCKS", batch_blocks)
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", line_block_bytes)
    for instrument, day in synthetic_tardis["days"].values():
        reference = reference_day(day.files, DAY, tmp_path)
        assert reference["book_delta_v2"].height > 20_000 and reference["book"].height > 1_000
        streamed = _streamed_day(synthetic_tardis["dir"], instrument, tmp_path / instrument.exchange)
        _assert_day_equal(streamed, reference)


def test_the_synthetic_files_are_read_whole_by_the_numba_line_readers(synthetic_tardis):
    """So the test above checks those readers' rows (`line_blocks`: they stop at a line in another shape)."""
    for instrument, day in synthetic_tardis["days"].values():
        names = tardis_names(instrument.exchange, instrument.symbol, DEFAULT_EXCHANGES, {})
        lines = line_reader(day.files[L2], L2, *names)
        assert sum(frame.height for frame in lines.frames()) > 20_000 and lines.whole
        snapshots = line_reader(day.files[SNAPSHOTS], SNAPSHOTS, *names)
        assert sum(frame.height for frame in snapshots.frames()) > 1_000 and snapshots.whole


def _head(source: Path, target: Path, lines: int) -> Path:
    """The first `lines` lines of a .csv.gz file (header included) as a new .csv.gz file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(source, "rt") as src, gzip.open(target, "wt") as dst:
        for _, line in zip(range(lines), src, strict=False):
            dst.write(line)
    return target


def test_tiny_blocks_cut_messages_and_give_the_same_tables(synthetic_tardis, tmp_path, monkeypatch):
    """Blocks of a few rows: boundaries fall inside the opening is_snapshot block, inside messages
    and right after the header (the day's first message at midnight)."""
    instrument, day = synthetic_tardis["days"][SPOT.key]
    tardis_dir = tmp_path / "tardis"
    files = {t: _head(p, tardis_dir / p.name, 3_000 if t == L2 else 200) for t, p in day.files.items()}
    reference = reference_day(files, DAY, tmp_path)
    opening = int(reference["book_delta_v2"]["is_snapshot"].sum())
    messages = reference["book_delta_v2"]["sequence_number"].n_unique()
    assert 100 < opening < 2_900 and 10 < messages < 2_000  # the opening block and messages of several rows
    assert reference["book"]["sequence_number"].n_unique() > 20  # snapshots aligned to many messages

    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", 1)  # each block: twice the header, a few rows
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", ARROW_ONLY)  # Arrow's reader reads every file
    for batch_blocks in (1, 7):  # a batch a block, and batches of several blocks
        monkeypatch.setattr(csv_stream, "BATCH_BLOCKS", batch_blocks)
        rows_per_batch = [b.frame.height for b in csv_stream.iter_csv_batches(files[L2], L2_COLUMNS)]
        assert max(rows_per_batch) <= 3 * batch_blocks and sum(rows_per_batch) == 2_999
        assert len(rows_per_batch) > 2_999 // (3 * batch_blocks)
        _assert_day_equal(_streamed_day(tardis_dir, instrument, tmp_path / f"tiny{batch_blocks}"), reference)


@needs_real
def test_real_rows_stream_to_the_whole_file_frames(tmp_path, monkeypatch):
    l2 = REAL / "tardis_deribit_incremental_book_L2_BTC-PERPETUAL.csv"
    snapshots = REAL / "tardis_binance-futures_book_snapshot_25_BTCUSDT.csv"
    trades = REAL / "tardis_bitmex_trades_XBTUSD.csv"
    for block_bytes in (1, csv_stream.BLOCK_BYTES):
        monkeypatch.setattr(csv_stream, "BLOCK_BYTES", block_bytes)
        day = dt.date(2020, 4, 1)
        writer = MessageHeadsWriter(tmp_path)
        streamed = pl.concat(iter_incremental_book_l2(l2, day, writer, "deribit", "BTC-PERPETUAL"))
        deltas, messages = reference_l2(l2, day, tmp_path)
        assert_frame_equal(streamed, deltas)
        read = line_reader(l2, L2, "deribit", "BTC-PERPETUAL")
        assert sum(frame.height for frame in read.frames()) == deltas.height and read.whole  # the numba reader's
        # The real snapshots sequenced against the real L2 messages (another day's: all before or after).
        book = pl.concat(iter_book_snapshot_25(snapshots, day, writer.finish(), "binance-futures", "BTCUSDT"))
        assert_frame_equal(book, reference_book(snapshots, day, messages, tmp_path))
        book = pl.concat(iter_book_snapshot_25(snapshots, day, MessageHeads.empty(), "binance-futures", "BTCUSDT"))
        empty = (np.empty(0, np.int64),) * 3
        assert_frame_equal(book, reference_book(snapshots, day, empty, tmp_path))
        read = line_reader(snapshots, SNAPSHOTS, "binance-futures", "BTCUSDT")
        assert sum(frame.height for frame in read.frames()) == book.height and read.whole  # the numba reader's
        assert_frame_equal(pl.concat(iter_trades(trades, "bitmex", "XBTUSD")), reference_trades(trades, tmp_path))


def test_snapshots_in_any_order_get_the_whole_file_sequence_numbers(tmp_path):
    """Messages appended in several calls (the running maximum carried across them, a receive time
    going back included), snapshots in shuffled order and on ties: the reference's numbers."""
    rng = np.random.default_rng(7)
    local = np.cumsum(rng.integers(0, 3, 5_000)) + 1_000
    local[1_234] -= 50  # received out of order
    stamp = local - rng.integers(0, 4, local.size)
    writer = MessageHeadsWriter(tmp_path)
    for part in np.array_split(np.arange(local.size), [1, 1_234, 1_235, 4_000]):
        writer.append(local[part], stamp[part])
    messages = writer.finish()
    base = day_sequence_base(DAY)
    reference = (np.maximum.accumulate(local), stamp, base + 1 + np.arange(local.size))
    snap_local = np.concatenate([rng.permutation(local)[:2_000], [0, 999, 10**9]])
    snap_stamp = snap_local - rng.integers(-2, 4, snap_local.size)
    got = messages.sequence(snap_local, snap_stamp, base)
    assert np.array_equal(got, reference_sequence(reference, snap_local, snap_stamp, base))
    assert got[-3] == got[-2] == base and got[-1] == base + local.size  # before the first message; after the last


def _on_a_thread(function, *args) -> Future:
    """`function(*args)` on a daemon thread: a call that never returns fails its test's wait
    instead of hanging the run."""
    done: Future = Future()

    def run() -> None:
        try:
            done.set_result(function(*args))
        except BaseException as exc:
            done.set_exception(exc)

    threading.Thread(target=run, daemon=True).start()
    return done


def test_snapshots_read_beside_the_l2_file_wait_for_the_messages_they_need(tmp_path):
    """The source sequences a batch of snapshots while the L2 messages are still being appended
    (`MessageHeadsWriter.following`, on another thread): the batch waits until a message's running
    maximum is past its latest receive time, and so gets the whole file's numbers, ties included;
    a batch reaching the last message waits for the file to finish."""
    rng = np.random.default_rng(11)
    local = np.cumsum(rng.integers(0, 3, 6_000)) + 1_000
    stamp = local - rng.integers(0, 4, local.size)
    base = day_sequence_base(DAY)
    reference = (np.maximum.accumulate(local), stamp, base + 1 + np.arange(local.size))
    early_local = rng.permutation(local[:3_000])[:800]  # messages 0-2,999, asked for when 100 are written
    late_local = np.concatenate([rng.permutation(local)[:800], [local.max()]])
    early_stamp = early_local - rng.integers(-2, 4, early_local.size)
    late_stamp = late_local - rng.integers(-2, 4, late_local.size)
    writer = MessageHeadsWriter(tmp_path)
    writer.append(local[:100], stamp[:100])
    early = _on_a_thread(writer.following().sequence, early_local, early_stamp, base)
    late = _on_a_thread(writer.following().sequence, late_local, late_stamp, base)
    time.sleep(0.05)  # both batches asked for before their messages are written
    for part in np.array_split(np.arange(100, local.size), 20):
        writer.append(local[part], stamp[part])
    got_early = early.result(timeout=30)  # without the file finished
    assert not late.done()
    writer.finish()
    got_late = late.result(timeout=30)
    assert np.array_equal(got_early, reference_sequence(reference, early_local, early_stamp, base))
    assert np.array_equal(got_late, reference_sequence(reference, late_local, late_stamp, base))


def test_a_snapshot_batch_waiting_on_a_rejected_l2_file_stops(tmp_path):
    """The L2 file rejected (its writer closed without finishing): a batch that waits for messages
    not written raises instead of waiting forever; one whose messages were all written is still
    sequenced (the source drops the book either way)."""
    writer = MessageHeadsWriter(tmp_path)
    writer.append(np.array([10, 20]), np.array([9, 19]))
    waiting = _on_a_thread(writer.following().sequence, np.array([15, 25]), np.array([15, 25]), 0)
    writer.close()
    with pytest.raises(HeadsAbandoned, match="receive time 25"):
        waiting.result(timeout=30)
    assert writer.following().sequence(np.array([15]), np.array([15]), 0).tolist() == [1]


# ---------------------------------------------------------------------------------------
# Errors past the first block
# ---------------------------------------------------------------------------------------


def _damaged_l2(synthetic_tardis, tardis_dir: Path, damage) -> Path:
    """The SPOT day's files in `tardis_dir`, its L2 file rewritten by `damage(lines) -> text`."""
    _, day = synthetic_tardis["days"][SPOT.key]
    tardis_dir.mkdir(parents=True, exist_ok=True)
    for path in day.files.values():
        shutil.copyfile(path, tardis_dir / path.name)
    target = tardis_dir / day.files[L2].name
    with gzip.open(day.files[L2], "rt") as fh:
        text = damage(fh.read().splitlines(keepends=True))
    assert len(text) > 20 * SMALL_BLOCK  # the damage (at line 18,000 or later, or 60% in) is many blocks in
    with gzip.open(target, "wt") as fh:
        fh.write(text)
    return target


def _assert_rejected(tardis_dir: Path, tmp_path: Path, bad: Path, message: str) -> None:
    source = TardisSource(tardis_dir, tmp_path / "cache", tmp_path / "lake", DEFAULT_EXCHANGES, {})
    for table in ("book_delta_v2", "book"):
        with pytest.raises(TardisRejected, match=message) as caught:
            source.fetch(table, SPOT, DAY)
        assert str(bad) in str(caught.value)
    # Nothing of the rejected tables is cached, not even the rows before the problem.
    tables = tmp_path / "cache" / "tables"
    assert sorted(p.relative_to(tables).parts[0] for p in tables.rglob("*") if p.is_file()) == ["trades"]
    assert (tmp_path / "lake" / "quarantine" / "tardis" / bad.name).read_bytes() == bad.read_bytes()
    assert not any((tmp_path / "cache" / ".scratch").iterdir())  # the messages' scratch files are gone


def test_an_unexpected_error_in_the_l2_file_stops_the_snapshots_beside_it(synthetic_tardis, tmp_path, monkeypatch):
    """Not a format problem (a disk error, say) a few batches into the L2 file: the error is raised,
    the snapshots read beside it stop instead of waiting for messages that will not come, and
    nothing of the day is cached, its scratch files removed."""
    from market_pipeline.vendors.tardis import source as tardis_source

    instrument, _ = synthetic_tardis["days"][SPOT.key]
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", SMALL_BLOCK)
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", ARROW_ONLY)  # Arrow's reader: many small batches
    whole = tardis_source.iter_incremental_book_l2

    def failing(*args, **kwargs):
        for i, batch in enumerate(whole(*args, **kwargs)):
            if i == 3:
                raise OSError("the disk went away")
            yield batch

    monkeypatch.setattr(tardis_source, "iter_incremental_book_l2", failing)
    source = TardisSource(synthetic_tardis["dir"], tmp_path / "cache", tmp_path / "lake", DEFAULT_EXCHANGES, {})
    with pytest.raises(OSError, match="the disk went away"):
        source.day_manifest(instrument, DAY)
    assert not [p for p in (tmp_path / "cache" / "tables").rglob("*") if p.is_file()]
    assert not any((tmp_path / "cache" / ".scratch").iterdir())


def _with_line(number: int, text: str):
    def damage(lines: list[str]) -> str:
        lines[number - 1] = text
        return "".join(lines)

    return damage


def test_a_bad_value_far_past_the_first_block_is_named_by_its_line(synthetic_tardis, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", SMALL_BLOCK)
    line = 20_001
    bad = _damaged_l2(
        synthetic_tardis,
        tmp_path / "tardis",
        _with_line(line, f"binance,BTCUSDT,{DAY_US},{DAY_US},false,bid,-1.5,2\n"),
    )
    _assert_rejected(tmp_path / "tardis", tmp_path, bad, f"line {line}: price is NaN, infinite or not positive")


def test_an_unparsable_value_past_the_first_block_is_named_by_its_line(synthetic_tardis, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", SMALL_BLOCK)
    line = 19_003
    bad = _damaged_l2(
        synthetic_tardis, tmp_path / "tardis", _with_line(line, f"binance,BTCUSDT,{DAY_US}x,{DAY_US},false,bid,1,2\n")
    )
    _assert_rejected(
        tmp_path / "tardis", tmp_path, bad, f"line {line}: column 'timestamp': '{DAY_US}x' is not an integer"
    )


def test_a_short_row_past_the_first_block_is_named_by_its_line(synthetic_tardis, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", SMALL_BLOCK)
    line = 18_999
    bad = _damaged_l2(synthetic_tardis, tmp_path / "tardis", _with_line(line, "binance,BTCUSDT,1,2,false,bid\n"))
    _assert_rejected(tmp_path / "tardis", tmp_path, bad, f"line {line}: 6 fields where the header has 8")


def test_a_gzip_truncated_mid_file_is_rejected(synthetic_tardis, tmp_path, monkeypatch):
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", SMALL_BLOCK)
    bad = _damaged_l2(synthetic_tardis, tmp_path / "tardis", lambda lines: "".join(lines))
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) * 3 // 5])  # well past the first blocks
    _assert_rejected(tmp_path / "tardis", tmp_path, bad, "truncated or corrupt gzip")


def test_a_last_line_cut_short_is_rejected(synthetic_tardis, tmp_path):
    bad = _damaged_l2(synthetic_tardis, tmp_path / "tardis", lambda lines: "".join(lines)[:-1])
    _assert_rejected(tmp_path / "tardis", tmp_path, bad, "the last line does not end with a newline")


def test_the_file_ending(tmp_path):
    """The end of the stream: a header alone without its newline has no rows (as whole-file
    reading found); a last row cut short to fewer fields is named as the missing newline."""
    path = tmp_path / "binance_trades_2024-03-01_BTCUSDT.csv"
    path.write_text(",".join(TRADES_COLUMNS), encoding="utf-8")
    assert list(iter_trades(path)) == []
    path.write_text(",".join(TRADES_COLUMNS) + "\nbinance,BTCUSDT,1,2,x,buy,1", encoding="utf-8")
    with pytest.raises(TardisFormatError, match=r"csv: the last line does not end with a newline"):
        list(iter_trades(path))


# ---------------------------------------------------------------------------------------
# The text stream under Arrow's reader
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False])
def test_the_text_stream_gives_the_files_bytes_in_small_inflations_into_arrows_pool(tmp_path, compressed):
    """Every byte, in blocks of any size, each filled by reads of at most `HEAP_PIECE_BYTES`
    (ISA-L's output then comes from the C heap, not from fresh pages a block); Arrow's CSV reader
    asks for its blocks through `read_buffer`, and the end of the file is seen only by a read
    that finds nothing."""
    text = b"".join(b"%d,%d\n" % (i, i * 7) for i in range(60_000))  # ~0.6 MB
    path = tmp_path / ("t.csv.gz" if compressed else "t.csv")
    path.write_bytes(gzip.compress(text) if compressed else text)
    asked: list[int] = []
    for size in (1, 1_000, HEAP_PIECE_BYTES + 3, 1 << 20):
        with csv_stream.TextStream(path) as stream:
            inner_readinto = stream._inner.readinto
            stream._inner.readinto = lambda view, read=inner_readinto: asked.append(len(view)) or read(view)
            blocks = []
            while block := stream.read_buffer(size):
                assert isinstance(block, pa.Buffer) and not stream.ended
                assert stream.last == block.to_pybytes()[-1:]
                blocks.append(block.to_pybytes())
            assert stream.ended and stream.size == len(text)
            assert b"".join(blocks) == text
    assert max(asked) == HEAP_PIECE_BYTES

    with csv_stream.TextStream(path) as stream:
        calls = []
        read_buffer = stream.read_buffer
        stream.read_buffer = lambda size: calls.append(size) or read_buffer(size)
        rows = sum(batch.num_rows for batch in pa_csv.open_csv(stream, pa_csv.ReadOptions(column_names=["a", "b"])))
    assert rows == 60_000 and calls


def test_a_row_longer_than_a_block_or_a_value_past_the_csv_limit_is_named_by_its_line(tmp_path, monkeypatch):
    """Arrow reads no row longer than its block: such a row (a long value, or a damaged file's run
    of zeros without a newline) is named without being read whole; nor does the csv module, which
    locates bad values, read one past 128 KB."""
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", SMALL_BLOCK)
    path = tmp_path / "binance_incremental_book_L2_2024-03-01_BTCUSDT.csv"
    header = ",".join(L2_COLUMNS) + "\n"

    def rows(*fields: tuple[str, str]) -> str:
        return "".join(f"binance,BTCUSDT,{DAY_US},{DAY_US},false,{side},{price},1\n" for side, price in fields)

    path.write_text(header + rows(("bid", "1"), ("x" * (3 * SMALL_BLOCK), "1"), ("bid", "1")), encoding="utf-8")
    with pytest.raises(TardisFormatError, match=r"line 3: not a Tardis row: longer than the 65,536 bytes"):
        list(iter_incremental_book_l2(path, DAY, None, "binance", "BTCUSDT"))
    path.write_text(header + rows(("bid", "1")) + "\0" * (64 * SMALL_BLOCK), encoding="utf-8")  # 4 MB of zeros
    with pytest.raises(TardisFormatError, match=r"line 3: not a Tardis row: longer than the 65,536 bytes"):
        list(iter_incremental_book_l2(path, DAY, None, "binance", "BTCUSDT"))
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", 4 * SMALL_BLOCK)  # the row fits a block; its price does not parse
    path.write_text(header + rows(("bid", "1"), ("bid", "9" * (3 * SMALL_BLOCK) + "x")), encoding="utf-8")
    with pytest.raises(TardisFormatError, match="line 3: not a Tardis row: field larger than field limit"):
        list(iter_incremental_book_l2(path, DAY, None, "binance", "BTCUSDT"))
