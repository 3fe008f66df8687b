"""The midnight carry: a capture replayed day by day resumes exactly where the previous day stopped,
also when the book is out of sync at midnight (diffs buffered for a REST snapshot, or a snapshot
waiting for the diff that brackets it)."""

from __future__ import annotations

import datetime as dt
import heapq
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from market_pipeline.core.book import delta_replay as lr
from market_pipeline.core.book.ladder import EMPTY, ST_BASE, ST_BEST_ASK, ST_BEST_BID, Book, new_book
from market_pipeline.core.book.rebuild import Grid
from market_pipeline.vendors.binance import sync_carry as sc
from market_pipeline.vendors.binance import sync_kernel as br
from market_pipeline.vendors.binance.carry import read_sync_carry, write_sync_carry
from market_pipeline_tests.support import reference_book
from market_pipeline_tests.support.binance_capture import DOCUMENTED, SPOT, real_paths
from market_pipeline_tests.support.midnight_capture import DEPTH, MIDNIGHT
from market_pipeline_tests.support.midnight_capture import shifted_capture as _shifted_capture
from market_pipeline_tests.support.midnight_capture import write_day_tables as _write_day

# --- the kernel: buffering across a cut, at every cut position --------------------------------

# Synthetic captures, one event a line: ("diff", U, u, pu, levels), ("snap", lastUpdateId, levels)
# or ("ticker", u, bid tick, bid lots, ask tick, ask lots); a level is (is_bid, tick, lots).
# The comments give the whole replay's verdict; a cut before line L leaves the state shown there.
SPOT_EVENTS = [
    ("diff", 99, 100, -1, [(True, 100, 5)]),  # stale at the first snapshot
    ("diff", 101, 102, -1, [(True, 101, 3)]),  # brackets lastUpdateId + 1
    ("snap", 100, [(True, 100, 1), (False, 110, 2)]),  # cut before it: WAITING, never synced
    ("ticker", 104, 101, 3, 111, 1),  # before its diff: checked when the diff applies
    ("diff", 103, 104, -1, [(False, 110, 0), (False, 111, 1)]),
    ("diff", 106, 107, -1, [(True, 102, 1)]),  # U != 105: gap
    ("diff", 108, 109, -1, [(True, 103, 4)]),  # cut before or after it: WAITING with a buffer
    ("snap", 108, [(True, 99, 1), (False, 112, 1)]),  # 107 stale, 108 <= 109 <= 109 resyncs
    ("diff", 110, 110, -1, [(False, 112, 0), (False, 113, 2)]),
    ("snap", 111, [(True, 90, 1), (False, 120, 1)]),  # in sync: ignored
    ("diff", 112, 113, -1, [(True, 104, 1)]),  # U != 111: gap
    ("snap", 113, [(True, 98, 2), (False, 114, 1)]),  # the buffered diff is stale: FIRST
    ("ticker", 115, 98, 2, 113, 6),  # checked: the size mismatches
    ("diff", 114, 115, -1, [(False, 113, 7)]),  # cut before it: FIRST; brackets 114
    ("diff", 116, 116, -1, [(True, 99, 0)]),
]
FUTURES_EVENTS = [
    ("diff", 90, 95, 89, [(True, 100, 5)]),  # u < lastUpdateId: stale
    ("diff", 96, 100, 95, [(True, 101, 3)]),  # U <= 98 <= u: first applied
    ("snap", 98, [(True, 100, 1), (False, 110, 2)]),
    ("diff", 101, 105, 100, [(False, 111, 1)]),
    ("ticker", 105, 101, 3, 110, 2),  # after its diff: checked, matches
    ("diff", 110, 112, 108, [(True, 102, 1)]),  # pu != 105: gap
    ("diff", 113, 115, 112, [(True, 103, 4)]),
    ("snap", 113, [(True, 99, 1), (False, 112, 1)]),  # 112 < 113 stale; 113 <= 113 <= 115 resyncs
    ("diff", 116, 118, 115, [(False, 113, 2)]),
    ("diff", 119, 121, 117, [(True, 104, 1)]),  # pu != 118: gap
    ("snap", 121, [(True, 98, 2), (False, 114, 1)]),  # u == lastUpdateId is not stale: resyncs
    ("diff", 122, 125, 121, [(False, 113, 7)]),
    ("diff", 137, 138, 135, [(True, 105, 1)]),  # pu != 125: gap
    ("snap", 140, [(True, 97, 3), (False, 115, 1)]),  # the buffered diff is stale: FIRST
    ("ticker", 140, 97, 3, 114, 5),  # for the diff ending at lastUpdateId: checked, matches
    ("diff", 139, 140, 138, [(False, 114, 5)]),  # cut before it: FIRST; U <= 140 <= u
]
WINDOW = 1 << 10  # ticks: a small ladder, cheap to copy between the parts
FIGURES = ("diffs", "skipped_before_sync", "applied", "gaps", "resyncs", "snapshots", "dropped_after_gap")
FIGURES += ("ticker_checks", "ticker_mismatches", "deltas_applied", "crossed_events")


class Part:
    """The kernel's inputs for some lines of a synthetic capture (line numbers kept)."""

    def __init__(self, events: list[tuple], lines: range):
        diffs, snaps, tickers = [], [], []
        d_rows: list[tuple] = []
        s_rows: list[tuple] = []
        for line in lines:
            kind, *fields = events[line]
            if kind == "diff":
                first_u, u, pu, levels = fields
                diffs.append((line, first_u, u, pu, len(d_rows), len(d_rows) + len(levels), line, line))
                d_rows.extend(levels)
            elif kind == "snap":
                lid, levels = fields
                snaps.append((line, lid, len(s_rows), len(s_rows) + len(levels), line, line))
                s_rows.extend(levels)
            else:
                tickers.append(fields)
        self.diffs = br.CaptureDiffs(*_columns(diffs, 8))
        self.diff_rows = _level_rows(d_rows)
        self.snaps = br.new_depth_snapshots(*_columns(snaps, 6))
        self.snap_rows = _level_rows(s_rows)
        self.tickers = [tuple(t) for t in tickers]

    def replay(self, futures, book, sync, cursor, tickers):
        counters = br.new_counters()
        u, bid_tick, bid_lot, ask_tick, ask_lot = _columns(tickers, 5)
        order = np.argsort(u, kind="stable").astype(np.int64)
        ticker_arrays = br.Tickers(u[order], order, bid_tick[order], bid_lot[order], ask_tick[order], ask_lot[order])
        sc.check_resumed_tickers(book, sync, ticker_arrays, counters)
        part = br.CapturePart(futures, self.snap_rows, ticker_arrays, book, sync, counters)
        run = br.CaptureRun(self.diffs, self.diff_rows, self.snaps, cursor)
        br.replay_capture(part, run, lr.new_sampling(lr.new_replay_state(0, False, 0, False), 1), lr.no_rows(), 0)
        br.finish(sync, counters, cursor, len(self.diffs.line))
        return counters


def _columns(records: list[tuple], width: int) -> list[np.ndarray]:
    return [np.array([r[i] for r in records], np.int64) for i in range(width)]


def _level_rows(levels: list[tuple]) -> br.LevelRows:
    is_bid, tick, lot = _columns(levels, 3)
    return br.LevelRows(is_bid.astype(bool), tick, lot)


def _book_state(book: Book) -> dict[str, object]:
    """Every level (tick: lots) and the best prices, in ticks."""
    bid, ask, st = book
    base = int(st[ST_BASE])
    state: dict[str, object] = {
        side: {base + int(i): int(a[i]) for i in np.flatnonzero(a)} for side, a in (("bid", bid), ("ask", ask))
    }
    for name, index in (("best_bid", ST_BEST_BID), ("best_ask", ST_BEST_ASK)):
        state[name] = None if st[index] == EMPTY else base + int(st[index])
    return state


def _sync_state(sync: np.ndarray) -> dict[str, int]:
    return {name: int(sync[0][name]) for name in ("state", "lid", "last_u", "ever_synced")}


def _whole(events, futures):
    part = Part(events, range(len(events)))
    book, sync = new_book(WINDOW), br.new_sync()
    counters = part.replay(futures, book, sync, br.new_cursor(), part.tickers)
    return _book_state(book), _sync_state(sync), br.counter_dict(counters)


def _cut(events, futures, cut, tmp_path, carry=True):
    """Lines before `cut` as day 1, the rest as day 2, the carry going through its file."""
    first, second = Part(events, range(cut)), Part(events, range(cut, len(events)))
    book, sync, cursor = new_book(WINDOW), br.new_sync(), br.new_cursor()
    c1 = first.replay(futures, book, sync, cursor, first.tickers)
    grid = Grid(Decimal("0.01"), Decimal("1"))
    path = tmp_path / f"carry-{cut}.parquet"
    write_sync_carry(path, sc.carry_out(sync, cursor, first.diffs, first.diff_rows), grid)
    loaded = read_sync_carry(path, grid)
    if not carry:  # the buffer and the sync state lost at midnight, as before the carry existed
        loaded = sc.unbuffered_carry(br.new_sync())
    book = Book(*(a.copy() for a in book))  # the checkpoint's copy
    second.diffs, second.diff_rows, cursor = sc.resume(loaded, second.diffs, second.diff_rows)
    pending = [t for t in first.tickers if t[0] >= sc.first_checkable_u(loaded)]
    sync = loaded.sync.copy()  # `loaded` stays as read from the file
    c2 = second.replay(futures, book, sync, cursor, pending + second.tickers)
    counters = {name: int(c1[0][name] + c2[0][name]) for name in br.COUNTER_NAMES}
    return _book_state(book), _sync_state(sync), counters, loaded


@pytest.mark.parametrize(
    ("events", "futures", "figures"),
    [(SPOT_EVENTS, False, (2, 2, 2, 1)), (FUTURES_EVENTS, True, (3, 3, 2, 0))],
    ids=["spot", "futures"],
)
def test_a_replay_cut_anywhere_resumes_exactly_with_the_carry(events, futures, figures, tmp_path):
    """Every cut between two lines, replayed as two days with the carry written to its file and
    read back, gives the book, sync state and counters of the uncut replay."""
    whole_book, whole_sync, whole = _whole(events, futures)
    assert whole_sync["state"] == br.LIVE
    assert (whole["gaps"], whole["resyncs"], whole["ticker_checks"], whole["ticker_mismatches"]) == figures
    states = set()
    for cut in range(len(events) + 1):
        book, sync, counters, carry = _cut(events, futures, cut, tmp_path)
        states.add(int(carry.sync[0]["state"]) * 10 + min(len(carry.diffs.line), 2))
        assert (book, sync) == (whole_book, whole_sync), cut
        assert {k: counters[k] for k in FIGURES} == {k: whole[k] for k in FIGURES}, cut
    # The cuts met every state: WAITING with 0, 1 and 2 buffered diffs, FIRST, LIVE.
    assert states >= {br.WAITING * 10, br.WAITING * 10 + 1, br.WAITING * 10 + 2, br.FIRST * 10, br.LIVE * 10}


def test_carried_buffer_keeps_diff_structure_and_without_it_the_snapshot_cannot_be_joined(tmp_path):
    cut = 7  # just before the resync snapshot: diffs 106..107 and 108..109 are buffered
    _, _, _, carry = _cut(SPOT_EVENTS, False, cut, tmp_path)
    assert carry.sync[0]["state"] == br.WAITING and carry.sync[0]["ever_synced"]
    assert carry.diffs.first_u.tolist() == [106, 108] and carry.diffs.last_u.tolist() == [107, 109]
    assert (carry.diffs.start.tolist(), carry.diffs.end.tolist()) == ([0, 1], [1, 2])
    assert carry.rows.tick.tolist() == [102, 103] and carry.rows.lot.tolist() == [1, 4]
    whole_book, _, whole = _whole(SPOT_EVENTS, False)
    book, _, counters, _ = _cut(SPOT_EVENTS, False, cut, tmp_path, carry=False)
    # Without them the diff after the snapshot cannot bracket it (a gap): the snapshot is lost.
    assert counters["applied"] == whole["applied"] - 1 and book != whole_book


# --- a real capture cut so that its REST snapshot falls just after midnight -------------------

DAY1, DAY2 = dt.date(2024, 8, 8), dt.date(2024, 8, 9)


class _RecordingReplay(reference_book._Replay):
    """The Decimal reference replay, keeping the top levels after every applied diff, by its u."""

    def __init__(self, market: str | None) -> None:
        super().__init__(market)
        self.tops: dict[int, tuple] = {}

    def _apply(self, diff) -> None:
        super()._apply(diff)
        self.tops[self.last_u] = (
            [(p, self.bids[p]) for p in heapq.nlargest(DEPTH, self.bids)],
            [(p, self.asks[p]) for p in heapq.nsmallest(DEPTH, self.asks)],
        )


def _reference_tops(paths: list[Path]) -> dict[int, tuple]:
    from market_pipeline.vendors.binance.capture_format import iter_messages

    state = _RecordingReplay("spot")
    for _, _, kind, payload in iter_messages(paths):
        if kind == "diff":
            state.diff(payload)
        elif kind == "snapshot":
            state.snapshot(payload)
    return state.tops


def test_a_snapshot_after_midnight_syncs_the_diffs_buffered_before_it(tmp_path):
    from market_pipeline.settings import load_settings
    from market_pipeline.vendors.binance.rebuild import START_CARRIED, rebuild_capture_day
    from market_pipeline_tests.support.binance_capture import parse_capture, split_by_day

    paths = real_paths(SPOT)
    _shifted_capture(paths, tmp_path / "cut")
    days = split_by_day(parse_capture(sorted((tmp_path / "cut").iterdir())))
    assert list(days) == [DAY1, DAY2]
    instrument = next(i for i in load_settings().universe if i.key == "BINANCE:BTC-USDT")
    grid = Grid(instrument.tick_size, instrument.lot_size)
    checkpoints = {day: tmp_path / "checkpoints" / str(day) / "book.parquet" for day in days}
    results = {}
    for day, tables in days.items():
        raw = _write_day(tables, day, tmp_path / "raw")
        results[day] = rebuild_capture_day(
            raw["book_delta_v2"],
            raw["depth_snapshot"],
            raw["book_ticker"],
            raw["book"],
            raw["trades"],
            tmp_path / "books" / f"{day}.parquet",
            checkpoints.get(day - dt.timedelta(days=1)),
            checkpoints[day],
            grid,
            day,
            False,
            DEPTH,
            0,
        )
    first, second = results[DAY1].counters, results[DAY2].counters
    buffered = days[DAY1].book_delta_v2.get_column("line_no").n_unique()

    # Day 1 only buffers: no snapshot came, and its diffs are carried into day 2.
    assert buffered >= 3 and (first["diffs"], first["applied"]) == (buffered, 0)
    assert first["diffs_carried_out"] == first["unsynced_at_end"] == buffered
    assert not results[DAY1].in_sync_at_end

    # Day 2 resumes the buffer: the snapshot drops the stale diffs and applies the rest.
    assert results[DAY2].start_mode == START_CARRIED and second["diffs_carried_in"] == buffered
    assert second["skipped_before_sync"] == DOCUMENTED[SPOT]["skipped_before_sync"]
    assert second["applied"] == DOCUMENTED[SPOT]["applied"] and results[DAY2].in_sync_at_end
    total = {name: first[name] + second[name] for name in ("diffs", "gaps", "ticker_checks", "ticker_mismatches")}
    assert total == {name: DOCUMENTED[SPOT][name] for name in total}

    # Day 2's rows: the snapshot row first, in sync from it on; none for the carried diffs.
    books = pq.read_table(tmp_path / "books" / f"{DAY2}.parquet").to_pylist()
    assert books[0]["trigger"] == "snapshot" and all(row["synced"] for row in books)
    assert len(books) == 1 + second["diffs"] and min(row["received_time"] for row in books) >= MIDNIGHT
    lid = days[DAY2].depth_snapshot.get_column("last_update_id")[0]
    assert books[0]["sequence_number"] > lid  # the buffered diffs after lastUpdateId are applied

    # Every row shows the exact book of the uncut capture at the same update id.
    tops = _reference_tops(paths)
    for row in books:
        bids, asks = tops[row["sequence_number"]]
        for side, levels in (("bid", bids), ("ask", asks)):
            got = [(row[f"{side}_{i}_price"], row[f"{side}_{i}_size"]) for i in range(DEPTH)]
            assert got == levels, (row["sequence_number"], side)


# --- the carry file ---------------------------------------------------------------------------


def test_a_checkpoint_written_before_carry_files_resumes_only_in_sync(monkeypatch, data_dir, tmp_path):
    from market_pipeline.core.lake.paths import checkpoint_path
    from market_pipeline_tests.support.capture_source import (
        CONTINUOUS_DAY2,
        DAY1,
        DAY2,
        SPOT_KEY,
        USDM_KEY,
        write_capture,
    )
    from market_pipeline_tests.support.capture_source import current_settings as _settings
    from market_pipeline_tests.support.capture_source import import_and_rebuild as _import_and_rebuild
    from market_pipeline_tests.support.capture_source import instrument_of as _instrument

    monkeypatch.setenv("PIPELINE_SOURCE", "capture")
    monkeypatch.setenv("PIPELINE_CAPTURE_DIR", str(write_capture(tmp_path / "captures", CONTINUOUS_DAY2)))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", f"{SPOT_KEY},{USDM_KEY}")
    settings = _settings()
    spot = _instrument(settings, SPOT_KEY)
    assert _import_and_rebuild(settings, spot, DAY1).in_sync_at_end
    carry = checkpoint_path(settings.lake_dir, spot.exchange, spot.symbol, DAY1).with_name("sync_carry.parquet")
    carry.unlink()
    second = _import_and_rebuild(settings, spot, DAY2)
    assert second.start_mode == "previous_day_checkpoint" and second.continuous_at_start is True
    assert (second.counters["applied"], second.counters["diffs_carried_in"]) == (3, 0)


def test_an_unreadable_carry_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "sync_carry.parquet"
    pq.write_table(pa.table({"line_no": [1]}), path)
    with pytest.raises(ValueError, match="sync_carry.parquet: not a sync carry file"):
        read_sync_carry(path, Grid(Decimal("0.01"), Decimal("1")))


def test_the_pending_tickers_are_the_carried_then_the_days_in_line_order_from_the_first_checkable(tmp_path):
    """What the next day may still check (`_pending_tickers`, read again at the end of the
    rebuild): the carried-in tickers, then the day's in line order (the file's rows shuffled
    here), with update_id at or past the first checkable one."""
    import polars as pl

    from market_pipeline.vendors.binance.rebuild import _pending_tickers
    from market_pipeline.vendors.binance.ticker_store import TICKER_COLUMNS

    def tickers(update_ids, line_nos):
        n = len(update_ids)
        return pl.DataFrame(
            {
                "received_time": np.arange(n, dtype=np.int64) * 1_000 + 7,
                "update_id": np.array(update_ids, np.int64),
                "bid_price": np.full(n, 100.5),
                "bid_size": np.arange(n) + 0.25,
                "ask_price": np.full(n, 100.75),
                "ask_size": np.arange(n) + 0.5,
                "line_no": np.array(line_nos, np.int64),
            }
        )

    day = tickers([30, 10, 25, 40, 20], [5, 1, 4, 2, 9])  # in line order: 10, 40, 25, 30, 20
    day.write_parquet(tmp_path / "book_ticker.parquet")
    carried = tickers([18, 26], [0, 0]).select(TICKER_COLUMNS)
    carried.write_parquet(tmp_path / "book_ticker_pending.parquet")
    pending = _pending_tickers(tmp_path / "book_ticker_pending.parquet", tmp_path / "book_ticker.parquet", 20)

    expected = pl.concat([carried, day.sort("line_no").select(TICKER_COLUMNS)]).filter(pl.col("update_id") >= 20)
    assert pending.equals(expected)
    assert pending["update_id"].to_list() == [26, 40, 25, 30, 20]
