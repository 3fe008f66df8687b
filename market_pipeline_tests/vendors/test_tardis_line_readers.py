"""The numba readers of L2 and snapshot lines (`line_blocks`): the rows Arrow's reader makes of a
file in Tardis's shape, whatever its blocks; at a line in any other shape they stop, and the rows,
errors and lines named are those of Arrow's reader alone."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from market_pipeline.vendors.tardis import csv_stream, line_blocks
from market_pipeline.vendors.tardis.csv_format import (
    L2_COLUMNS,
    SNAPSHOT_LEVELS,
    TardisFormatError,
    iter_book_snapshot_25,
    iter_incremental_book_l2,
    line_reader,
    snapshot_columns,
)
from market_pipeline.vendors.tardis.line_blocks import LineBlocks
from market_pipeline.vendors.tardis.message_heads import MessageHeads, message_heads_writer
from market_pipeline.vendors.tardis.number_text import POWERS, scientific

DAY = dt.date(2024, 3, 1)
DAY_US = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp()) * 1_000_000
ROWS = 3_000


def _lines(rows: int = ROWS) -> list[str]:
    """L2 lines as Tardis and the synthetic writer spell them: messages of 1 to 5 rows, an opening
    snapshot, integer and fractional prices, amounts of 0, tiny ones in exponent form (`4e-6`,
    `1.5e-07`) and up to 15 significant digits."""
    rng = np.random.default_rng(11)
    amounts = ["0", "0.0", "4e-6", "1.5e-07", "2.5E-5", "12", "0.823609", "123456.789012345", "1e2"]
    prices = ["58003.82", "58003", "0.000123", "99999.99999", "7.5e-1"]
    lines, stamp = [], DAY_US
    while len(lines) < rows:
        stamp += int(rng.integers(0, 3))
        snapshot = "true" if len(lines) < 40 else "false"
        for _ in range(int(rng.integers(1, 6))):
            side = "bid" if rng.random() < 0.5 else "ask"
            price, amount = rng.choice(prices), rng.choice(amounts)
            lines.append(f"binance,BTCUSDT,{stamp},{stamp + 17},{snapshot},{side},{price},{amount}\n")
    return lines[:rows]


def _write(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", newline="") as fh:
        fh.write(",".join(L2_COLUMNS) + "\n" + "".join(lines))
    return path


def _read(path: Path, fast: bool) -> pl.DataFrame:
    """The deltas and, beside them, the message heads written for the snapshots; `fast`: as the
    source reads them (the numba reader first), else Arrow's reader alone."""
    names = ("binance", "BTCUSDT") if fast else (None, None)
    with message_heads_writer(path.parent / ("fast" if fast else "arrow")) as writer:
        deltas = pl.concat(iter_incremental_book_l2(path, DAY, writer, *names))
        heads = writer.finish()
        assert heads.directory is not None
        local, stamp = (
            np.fromfile(heads.directory / name, np.int64) for name in ("local_timestamp.i64", "timestamp.i64")
        )
    assert len(local) == heads.count == deltas["sequence_number"].n_unique()
    return deltas.with_columns(
        pl.Series("_head_local", local).extend_constant(None, deltas.height - len(local)),
        pl.Series("_head_stamp", stamp).extend_constant(None, deltas.height - len(stamp)),
    )


def _read_whole(lines: LineBlocks) -> LineBlocks:
    """`lines` once its reader has read as far as it reads."""
    for _ in lines.frames():
        pass
    return lines


def _l2_reader(path: Path) -> LineBlocks:
    return _read_whole(line_reader(path, "incremental_book_L2", "binance", "BTCUSDT"))


@pytest.mark.parametrize("block_bytes", [200, 4_096, line_blocks.BLOCK_BYTES])
def test_lines_in_tardis_shape_are_read_whole_to_arrows_rows(tmp_path, monkeypatch, block_bytes):
    """Blocks of two lines, of tens and the default: lines cut at every place by a block's end."""
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", block_bytes)
    path = _write(tmp_path / "l2.csv.gz", _lines())
    read = _l2_reader(path)
    assert read.whole and read.rows == ROWS
    fast = _read(path, fast=True)
    assert_frame_equal(fast, _read(path, fast=False))
    assert fast.height == ROWS
    assert set(fast["size"].to_list()) >= {0.0, 4e-6, 1.5e-07, 2.5e-5, 100.0}


ODD_SHAPES = {
    "snapshot spelled FALSE": ("false,", "FALSE,"),
    "exchange quoted": ("binance,", '"binance",'),
    "windows line ending": ("\n", "\r\n"),
    "sixteen significant digits": (",58003.82,", ",58003.82000000001,"),
    "leading zeros": (",58003.82,", ",0058003.82,"),
    "symbol in lower case": ("BTCUSDT", "btcusdt"),
    "an exponent past 22": (",58003.82,", ",5800382e-30,"),
}


@pytest.mark.parametrize("shape", ODD_SHAPES, ids=list(ODD_SHAPES))
def test_a_line_in_another_shape_hands_the_rest_to_arrow(tmp_path, monkeypatch, shape):
    """Arrow reads such a line (and the checks pass it): the rows are Arrow's, the numba reader
    having stopped at it, many blocks in."""
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", 4_096)
    monkeypatch.setattr(csv_stream, "BLOCK_BYTES", 4_096)
    lines = _lines()
    odd = next(i for i in range(2_000, ROWS) if ",58003.82," in lines[i] and "true" not in lines[i])
    old, new = ODD_SHAPES[shape]
    lines[odd] = lines[odd].replace(old, new, 1)
    path = _write(tmp_path / "l2.csv.gz", lines)
    read = _l2_reader(path)
    assert not read.whole and read.rows == odd  # every line before the odd one
    assert_frame_equal(_read(path, fast=True), _read(path, fast=False))


BAD = {
    "price": ("-1.5", "line {line}: price is NaN, infinite or not positive"),
    "price 0": ("0", "line {line}: price is NaN, infinite or not positive"),
    "amount": ("-2", "line {line}: amount is NaN, infinite or negative"),
    "unparsable": ("1.5x", "line {line}: column 'price': '1.5x' is not a number"),
}


@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
def test_a_bad_value_many_blocks_in_is_named_by_arrows_reader(tmp_path, monkeypatch, bad):
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", 4_096)
    lines = _lines()
    index = 2_500
    fields = lines[index].rstrip("\n").split(",")
    value, message = BAD[bad]
    if bad == "amount":
        fields[7] = value
    else:
        fields[6] = value
    lines[index] = ",".join(fields) + "\n"
    path = _write(tmp_path / "l2.csv.gz", lines)
    with pytest.raises(TardisFormatError, match=message.format(line=index + 2)):
        list(iter_incremental_book_l2(path, DAY, None, "binance", "BTCUSDT"))


def test_a_line_longer_than_a_block_hands_on_to_arrow(tmp_path, monkeypatch):
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", 60)  # shorter than any line
    path = _write(tmp_path / "l2.csv.gz", _lines(50))
    read = _l2_reader(path)
    assert not read.whole and read.rows == 0
    assert_frame_equal(_read(path, fast=True), _read(path, fast=False))


@settings(max_examples=500, deadline=None)
@given(
    whole=st.integers(0, 10**16),
    fraction=st.text("0123456789", max_size=24),
    dot=st.booleans(),
    exponent=st.one_of(st.none(), st.integers(-40, 40)),
    letter=st.sampled_from("eE"),
    plus=st.booleans(),
)
@example(whole=0, fraction="0" * 17 + "1", dot=True, exponent=None, letter="e", plus=False)  # 19 digits, 1 significant
@example(whole=15, fraction="", dot=False, exponent=-7, letter="e", plus=False)  # 1.5e-06 as polars writes it
def test_a_number_read_is_the_double_float_reads(whole, fraction, dot, exponent, letter, plus):
    text = f"{whole}.{fraction}" if dot else str(whole)
    if exponent is not None:
        text += f"{letter}{'+' if plus and exponent >= 0 else ''}{exponent}"
    digits = f"{whole}{fraction if dot else ''}".lstrip("0")
    shift = (exponent or 0) - (len(fraction) if dot else 0)
    readable = (not dot or 0 < len(fraction) <= 22) and len(digits) <= 15 and abs(shift) <= 22
    buffer = np.frombuffer(text.encode() + b",", dtype=np.uint8)
    past, value = scientific(buffer, 0, len(buffer), POWERS)
    assert (past == len(text)) == readable, text
    if readable:
        assert value == float(text), text
    else:
        assert past < 0, text


def _snapshot_lines(rows: int = 400) -> list[str]:
    """Snapshot lines of 25 levels a side, the deepest ones empty on some (a shallow book)."""
    rng = np.random.default_rng(5)
    lines = []
    for i in range(rows):
        stamp = DAY_US + 1_000 * i
        values = []
        for level in range(SNAPSHOT_LEVELS):
            for side in (1, -1):  # asks up, bids down
                if level >= 22 and i % 3 == 0:
                    values += ["", ""]
                    continue
                price = f"{58003.5 + side * (level + 1) * 0.01:.2f}"
                values += [price, rng.choice(["0.5", "1.25e-5", "3", "0.000001"])]
        lines.append(f"binance,BTCUSDT,{stamp},{stamp + 40}," + ",".join(values) + "\n")
    return lines


def _write_snapshots(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", newline="") as fh:
        fh.write(",".join(snapshot_columns()) + "\n" + "".join(lines))
    return path


def _read_snapshots(path: Path, fast: bool) -> pl.DataFrame:
    names = ("binance", "BTCUSDT") if fast else (None, None)
    return pl.concat(iter_book_snapshot_25(path, DAY, MessageHeads.empty(), *names))


def _snapshot_reader(path: Path) -> LineBlocks:
    return _read_whole(line_reader(path, "book_snapshot_25", "binance", "BTCUSDT"))


@pytest.mark.parametrize("block_bytes", [2_000, line_blocks.BLOCK_BYTES])
def test_snapshot_lines_are_read_whole_to_arrows_rows(tmp_path, monkeypatch, block_bytes):
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", block_bytes)
    path = _write_snapshots(tmp_path / "book.csv.gz", _snapshot_lines())
    read = _snapshot_reader(path)
    assert read.whole and read.rows == 400
    fast = _read_snapshots(path, fast=True)
    assert_frame_equal(fast, _read_snapshots(path, fast=False))
    assert fast["ask_19_size"].null_count() == 0 and 1.25e-5 in fast["bid_0_size"].to_list()


def test_a_snapshot_with_a_kept_level_empty_hands_the_rest_to_arrow(tmp_path, monkeypatch):
    """A side of 20 levels or fewer: Arrow reads the empty levels as nulls (the lake's absent levels)."""
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", 2_000)
    lines = _snapshot_lines()
    fields = lines[300].split(",")
    fields[4 + 4 * 19 : 4 + 4 * 20] = ["", "", "", ""]  # level 19 of both sides absent
    lines[300] = ",".join(fields)
    path = _write_snapshots(tmp_path / "book.csv.gz", lines)
    read = _snapshot_reader(path)
    assert not read.whole and read.rows == 300
    fast = _read_snapshots(path, fast=True)
    assert_frame_equal(fast, _read_snapshots(path, fast=False))
    assert fast["ask_19_price"].null_count() == 1


def test_a_gzip_cut_many_blocks_in_is_named_by_arrows_reader(tmp_path, monkeypatch):
    """The line reader hands on the rows before the damage; Arrow's reader, from the start, names it."""
    monkeypatch.setattr(line_blocks, "BLOCK_BYTES", 4_096)
    path = _write(tmp_path / "l2.csv.gz", _lines())
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 3 // 4])
    read = _l2_reader(path)
    assert not read.whole and read.rows > 1_000
    with pytest.raises(TardisFormatError, match="truncated or corrupt gzip"):
        list(iter_incremental_book_l2(path, DAY, None, "binance", "BTCUSDT"))
