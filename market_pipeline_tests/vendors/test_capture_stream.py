"""The streaming capture parse: equal to the whole-file reference parser, whatever the chunk size,
and the capture source's cached day tables identical with tiny and huge chunks.

A tiny chunk costs a fixed overhead (~13 ms of polars frames), so the tiny chunks parse the first
lines of each capture file (`support/capture_prefix.py`), where chunk ends already fall before and
after every kind of line; the whole captures are parsed in one chunk a file, as production does."""

from __future__ import annotations

import gzip
import io
import zlib

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from market_pipeline.core.telemetry.memory import HEAP_PIECE_BYTES
from market_pipeline.vendors import capture_files
from market_pipeline.vendors.binance import capture_stream
from market_pipeline.vendors.capture_files import CHUNK_LINES as PRODUCTION_CHUNK_LINES
from market_pipeline.vendors.capture_files import CaptureFormatError, open_capture
from market_pipeline_tests.support.binance_capture import SPOT, SYNTHETIC_SPOT, TRADE, USDM, parse_capture, real_paths
from market_pipeline_tests.support.binance_capture import write_capture_lines as _write
from market_pipeline_tests.support.capture_prefix import file_prefixes
from market_pipeline_tests.support.capture_reference import reference_parse

TABLES = ("trades", "book_delta_v2", "depth_snapshot", "book", "book_ticker")
# A prime number of lines: over a real capture, chunk ends fall between every kind of line (around
# the REST snapshot too); the synthetic tests go down to one line a chunk.
TINY, HUGE = 97, 10**7
# Lines of each capture file the tiny chunks parse (~40 chunk ends a file; the REST snapshot is
# line 8 of the spot capture, 55 of the USD-M one).
PREFIX_LINES = 4000
KINDS = ("@bookTicker", "@trade", "@depth")


@pytest.fixture(scope="module")
def references():
    """reference(names) -> the whole-file reference parse of a whole real capture, once a module."""
    parsed = {}

    def reference(names):
        if names not in parsed:
            parsed[names] = reference_parse(real_paths(names))
        return parsed[names]

    return reference


def _kind(line: bytes) -> str:
    return next((kind for kind in KINDS if kind.encode() in line[:80]), "snapshot")


def assert_chunk_ends_between_every_kind(paths, chunk_lines) -> None:
    """Every kind of line (bookTicker, trade, diff) comes last in some chunk and first in another."""
    before, after = set(), set()
    for path in paths:
        kinds = [_kind(line) for line in gzip.open(path, "rb")]
        before.update(kinds[end - 1] for end in range(chunk_lines, len(kinds), chunk_lines))
        after.update(kinds[end] for end in range(chunk_lines, len(kinds), chunk_lines))
    assert set(KINDS) <= before and set(KINDS) <= after


def assert_same_tables(expected, actual) -> None:
    assert (actual.market, actual.exchange, actual.symbol) == (expected.market, expected.exchange, expected.symbol)
    for name in TABLES:
        assert_frame_equal(getattr(actual, name), getattr(expected, name), check_exact=True)


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
@pytest.mark.parametrize("chunk_lines", [TINY, HUGE], ids=["tiny", "huge"])
def test_streaming_parse_equals_the_reference_on_real_captures(names, chunk_lines, references, tmp_path):
    paths = real_paths(names)
    if chunk_lines == HUGE:  # the whole capture, a chunk a file
        assert_same_tables(references(names), parse_capture(paths, chunk_lines))
        return
    prefix = file_prefixes(paths, tmp_path, PREFIX_LINES)
    assert_chunk_ends_between_every_kind(prefix, chunk_lines)
    tables = parse_capture(prefix, chunk_lines)
    assert_same_tables(reference_parse(prefix), tables)
    assert tables.depth_snapshot.height and tables.book.height  # the REST snapshot is among them


@pytest.mark.parametrize("chunk_lines", [1, 2, 4, HUGE])
def test_streaming_parse_equals_the_reference_on_a_synthetic_capture(tmp_path, chunk_lines):
    path = _write(tmp_path / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)
    assert_same_tables(reference_parse([path]), parse_capture([path], chunk_lines))


def test_bad_line_past_the_first_chunk_names_its_line(tmp_path):
    lines = [TRADE] * 10 + [TRADE.replace('"10.50"', '"ten"')] + [TRADE] * 5
    path = _write(tmp_path / "capture.txt", lines)
    for chunk_lines in (1, 4, HUGE):
        with pytest.raises(CaptureFormatError) as caught:
            parse_capture([path], chunk_lines)
        assert (caught.value.line_number, caught.value.reason) == (
            11,
            "bad trade message: could not convert string to float: 'ten'",
        )


def test_the_first_of_two_errors_in_a_chunk_wins(tmp_path):
    """A bad number is found after the chunk's lines are sorted; a bad line after it does not win."""
    lines = [TRADE, TRADE.replace('"10.50"', '"ten"'), TRADE.replace("BTCUSDT", "ETHUSDT")]
    path = _write(tmp_path / "capture.txt", lines)
    with pytest.raises(CaptureFormatError) as caught:
        parse_capture([path])
    assert caught.value.line_number == 2
    lines = [TRADE, TRADE.replace("BTCUSDT", "ETHUSDT"), TRADE.replace('"10.50"', '"ten"')]
    path = _write(tmp_path / "capture.txt", lines)
    with pytest.raises(CaptureFormatError, match="differs") as caught:
        parse_capture([path])
    assert caught.value.line_number == 2


def test_gzip_truncated_mid_file_names_the_first_unread_line(tmp_path):
    body = b"".join(f"{i} {TRADE}\n".encode() for i in range(20_000))
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(body)[: len(gzip.compress(body)) // 2])
    for chunk_lines in (1000, HUGE):
        with pytest.raises(CaptureFormatError, match="unreadable") as caught:
            parse_capture([path], chunk_lines)
        assert 1 < caught.value.line_number < 20_000
        with gzip.open(path, "rb") as whole:
            readable = sum(1 for _ in _lines_until_error(whole))
        assert caught.value.line_number == readable + 1
    with pytest.raises(CaptureFormatError, match="unreadable") as caught:
        list(capture_files.located_lines([path]))  # read a batch of lines at a time
    assert caught.value.line_number == readable + 1


def test_gzip_is_inflated_in_small_pieces_and_a_read_keeps_what_it_inflated_before_an_error(tmp_path, monkeypatch):
    """Reads of 1 MB (as `line_chunks` makes them) get every byte of every member, each inflation
    at most `HEAP_PIECE_BYTES` (ISA-L's output then comes from the C heap, not fresh pages); a
    file cut short gives every byte zlib can inflate, and only the read after them fails."""
    body = b"".join(f"{i} {TRADE}\n".encode() for i in range(30_000))
    first = gzip.compress(body[:1_000_000])
    packed = first + gzip.compress(body[1_000_000:])  # two members
    asked: list[int] = []
    inflated = capture_files._GzipMembers._inflated
    monkeypatch.setattr(
        capture_files._GzipMembers, "_inflated", lambda self, size: asked.append(size) or inflated(self, size)
    )

    def read_all(path):
        got, failure = bytearray(), None
        with open_capture(path) as stream:
            buffer = bytearray(1 << 20)
            try:
                while read := stream.readinto1(buffer):
                    got += buffer[:read]
            except EOFError as exc:
                failure = exc
        return bytes(got), failure

    whole = tmp_path / "whole.gz"
    whole.write_bytes(packed)
    assert read_all(whole) == (body, None)
    assert max(asked) == HEAP_PIECE_BYTES

    cut = tmp_path / "cut.gz"
    end = len(packed) * 3 // 4  # inside the second member
    cut.write_bytes(packed[:end])
    prefix = body[:1_000_000] + zlib.decompressobj(wbits=31).decompress(packed[len(first) : end])
    got, failure = read_all(cut)
    assert isinstance(failure, EOFError) and got == prefix and len(prefix) > 1 << 20


def _lines_until_error(stream):
    try:
        yield from stream
    except EOFError:
        return


def test_a_line_that_is_not_utf8_is_named_by_the_readers_line_by_line(tmp_path):
    lines = [f"{i} {TRADE}\n".encode() for i in range(50)]
    lines[30] = lines[30].replace(b"BTCUSDT", b"BTC\xffUSDT")
    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"".join(lines)))
    with pytest.raises(CaptureFormatError, match="unreadable: 'utf-8' codec can't decode") as caught:
        list(capture_files.located_lines([path]))
    assert caught.value.line_number == 31


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_a_run_without_a_newline_past_the_bound_stops_the_reading_and_names_its_line(tmp_path, monkeypatch, compressed):
    """A damaged capture (a plain file a crash left filled with zeros, a gzip bomb) is read as
    unreadable from the run on, by every reader of lines: each stops within `MAX_LINE_BYTES` of the
    last newline, having given every whole line before it, instead of holding the run whole."""
    monkeypatch.setattr(capture_files, "MAX_LINE_BYTES", 1 << 20)
    good = b"".join(f"{i} {TRADE}\n".encode() for i in range(3_000))
    body = good + b"\0" * (24 << 20)
    packed = gzip.compress(body, compresslevel=1) if compressed else body
    path = tmp_path / ("damaged.gz" if compressed else "damaged.jsonl")
    path.write_bytes(packed)
    for chunk_lines in (1000, HUGE):  # the Binance parser, in chunks of lines
        with pytest.raises(CaptureFormatError, match="unreadable: no newline within 1 MB") as caught:
            parse_capture([path], chunk_lines)
        assert caught.value.line_number == 3_001
    with pytest.raises(CaptureFormatError, match="unreadable: no newline within 1 MB") as caught:
        list(capture_files.located_lines([path]))  # the readers line by line (Kraken, OKX, Bybit, verify)
    assert caught.value.path == path and caught.value.line_number == 3_001

    source = io.BytesIO(packed)
    stream = capture_files._gunzipped(source) if compressed else capture_files._bounded(source)
    lines = []
    with pytest.raises(capture_files.LineTooLong):
        lines.extend(stream)
    assert b"".join(lines) == good
    if not compressed:
        assert source.tell() <= len(good) + (1 << 20) + (64 << 10)  # a buffer past the bound, no more


@pytest.mark.parametrize("names", [USDM, SPOT], ids=["usdm", "spot"])
def test_cached_day_tables_do_not_depend_on_the_chunk_size(names, tmp_path, monkeypatch, references):
    from market_pipeline.vendors.binance.source import BinanceCaptureSource

    def cached_tables(captures, chunk_lines) -> dict:
        monkeypatch.setattr(capture_stream, "CHUNK_LINES", chunk_lines)
        source = BinanceCaptureSource(captures, tmp_path / f"cache-{captures.name}-{chunk_lines}", tmp_path / "lake")
        manifest = source.manifest()
        assert manifest["rejected"] == []
        files = sorted(source.tables_dir.rglob("*.parquet"))
        return {f.relative_to(source.tables_dir): pl.read_parquet(f) for f in files}

    paths = real_paths(names)
    # The first lines of each file, under its name: the spot pair still crosses midnight.
    prefix = tmp_path / "prefix"
    assert_chunk_ends_between_every_kind(file_prefixes(paths, prefix, PREFIX_LINES), TINY)
    cached = {chunk_lines: cached_tables(prefix, chunk_lines) for chunk_lines in (TINY, HUGE)}
    assert cached[TINY].keys() == cached[HUGE].keys()
    days = {p.parent.name for p in cached[TINY]}
    assert len(days) == len(names)  # the spot pair crosses midnight
    for part, frame in cached[HUGE].items():
        assert_frame_equal(cached[TINY][part], frame, check_exact=True)
    if len(paths) == 1:
        # ... and the whole capture's, at the production chunk size, equal to the whole-file
        # reference split by day, one running line order.
        captures = tmp_path / "captures"
        captures.mkdir()
        for path in paths:
            (captures / path.name).symlink_to(path)
        whole = cached_tables(captures, PRODUCTION_CHUNK_LINES)
        for name in TABLES:
            frames = [f for p, f in whole.items() if p.parts[0] == name]
            assert_frame_equal(pl.concat(frames), getattr(references(names), name), check_exact=True)


def test_a_file_with_a_bad_line_past_the_first_chunk_is_quarantined(tmp_path, monkeypatch):
    from market_pipeline.vendors.binance.source import BinanceCaptureSource

    monkeypatch.setattr(capture_stream, "CHUNK_LINES", 4)
    captures = tmp_path / "captures"
    captures.mkdir()
    _write(captures / "binance_spot_btcusdt_20231114.txt", SYNTHETIC_SPOT)
    bad = _write(captures / "binance_spot_btcusdt_20231115.txt", [TRADE] * 9 + ["{"], 1_700_006_400 * 10**9 + 1)
    source = BinanceCaptureSource(captures, tmp_path / "cache", tmp_path / "lake")
    manifest = source.manifest()
    (rejected,) = manifest["rejected"]
    assert rejected["path"] == str(bad)
    assert rejected["reason"].startswith(f"{bad}:10: ")
    assert manifest["instruments"]["BINANCE:BTC-USDT"]["days"] == ["2023-11-14"]
    assert not list(source.root.glob(".scratch-*"))  # the scratch parts are gone


def test_gzip_members_with_zero_padding_read_as_the_stdlib_reads_them(tmp_path):
    """Captures are inflated by ISA-L (`open_capture`): concatenated members with zero padding
    between them give the lines `gzip.open` gives."""
    body = b"".join(f"{1_700_000_000_000_000_000 + i} {TRADE}\n".encode() for i in range(3000))
    cut = body.index(b"\n", len(body) // 3) + 1
    path = tmp_path / "binance_spot_btcusdt_20231114.gz"
    path.write_bytes(gzip.compress(body[:cut]) + b"\0" * 5 + gzip.compress(body[cut:]))
    with open_capture(path) as ours, gzip.open(path, "rb") as stdlib:
        assert list(ours) == list(stdlib) == body.splitlines(keepends=True)
    plain = tmp_path / "binance_spot_btcusdt_20231114.txt"
    plain.write_bytes(body)
    assert_frame_equal(parse_capture([path]).trades, parse_capture([plain]).trades, check_exact=True)


@pytest.mark.parametrize("damage", ["checksum", "trailing garbage"])
def test_a_corrupt_gzip_is_unreadable_naming_the_file(tmp_path, damage):
    body = b"".join(f"{i} {TRADE}\n".encode() for i in range(100))
    packed = bytearray(gzip.compress(body))
    if damage == "checksum":
        packed[-8] ^= 1  # the member's CRC32
    else:
        packed += b"not gzip"
    path = tmp_path / "damaged.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(CaptureFormatError, match="unreadable") as caught:
        parse_capture([path])
    assert caught.value.path == path
