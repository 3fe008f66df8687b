"""The Binance capture replay's bookTickers, sorted by u on disk and read in windows (`ticker_store`):
a window holds every ticker of its range of u, in (u, line) order, each with its row in the part's
line order (the previous day's pending ones first), whatever the order of the file's rows, of u
along the lines, of the windows and the size of the row groups. The day's tops go to the fidelity
table in line order, and the scratch goes when the windows close or the sort fails.

The fidelity table's grid (`fidelity_table.GridTops`) keeps a top per grid time and gives what an
as-of join over all the tops gives, whatever batches and order they come in."""

from __future__ import annotations

from functools import partial

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from market_pipeline.vendors.binance import ticker_store
from market_pipeline.vendors.binance.fidelity_table import GridTops, fidelity_table

# Prices on steps of 0.5 and sizes on steps of 1, made from each ticker's row in the part's line
# order, so that a window's columns say which ticker they came from.
STEPS = {"bid_price": 0.5, "bid_size": 1.0, "ask_price": 0.5, "ask_size": 1.0}


def _tickers(u: list[int], rows: list[int], line_no: list[int] | None = None) -> pl.DataFrame:
    row = np.array(rows, np.int64)
    frame = pl.DataFrame(
        {
            "received_time": row * 1_000 + 5,
            "update_id": np.array(u, np.int64),
            "bid_price": row * 0.5,
            "bid_size": row.astype(np.float64),
            "ask_price": (row + 1) * 0.5,
            "ask_size": row + 7.0,
        }
    )
    return frame if line_no is None else frame.with_columns(line_no=pl.Series(line_no, dtype=pl.Int64))


class _Steps:
    """`ticks` and `lots` on STEPS (`both`), noting where each batch of each column starts."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, int]]] = {name: [] for name in STEPS}

    def both(self) -> tuple[ticker_store.ToSteps, ticker_store.ToSteps]:
        return partial(self._steps, "_price"), partial(self._steps, "_size")

    def _steps(self, kind: str, values: np.ndarray, name: str, first_row: int, u: np.ndarray) -> np.ndarray:
        assert name.endswith(kind) and len(u) == len(values)  # prices go to `ticks`, sizes to `lots`
        self.calls[name].append((first_row, len(values)))
        return np.rint(values / STEPS[name]).astype(np.int64)


def _write(tmp_path, carried_u: list[int], day_u: list[int], on_disk: list[int]):
    """A pending file of `carried_u` and a day file of `day_u` (in line order) whose rows are
    stored in the order `on_disk`; (carried path or None, day path)."""
    n_carried = len(carried_u)
    carried = None
    if carried_u:
        carried = tmp_path / "book_ticker_pending.parquet"
        _tickers(carried_u, list(range(n_carried))).write_parquet(carried)
    rows = list(range(n_carried, n_carried + len(day_u)))
    day = _tickers(day_u, rows, [10 * r + 3 for r in range(len(day_u))])  # line numbers with gaps
    day[on_disk].write_parquet(tmp_path / "book_ticker.parquet", row_group_size=4)
    return carried, tmp_path / "book_ticker.parquet"


def _assert_window(window, all_u: list[int], lo: int, hi: int) -> None:
    u, row = window.u_sorted, window.row
    keys = list(zip(u.tolist(), row.tolist(), strict=True))
    assert keys == sorted(keys)  # by u, then line
    expected = sorted((x, r) for r, x in enumerate(all_u) if lo <= x <= hi)
    assert [key for key in keys if lo <= key[0] <= hi] == expected
    assert np.array_equal(window.bid_tick, row) and np.array_equal(window.bid_lot, row)
    assert np.array_equal(window.ask_tick, row + 1) and np.array_equal(window.ask_lot, row + 7)
    assert np.array_equal(u, np.array(all_u, np.int64)[row])


@settings(max_examples=60, deadline=None)
@given(
    carried_u=st.lists(st.integers(0, 30), max_size=5),
    day=st.lists(st.integers(0, 30), max_size=40).flatmap(
        lambda u: st.tuples(st.just(u), st.permutations(list(range(len(u)))))
    ),
    rising=st.booleans(),
    batch_rows=st.sampled_from([1, 3, 64]),
    windows=st.lists(st.tuples(st.integers(-2, 33), st.integers(0, 12)), min_size=1, max_size=6),
)
def test_a_window_holds_every_ticker_of_its_range(tmp_path_factory, carried_u, day, rising, batch_rows, windows):
    tmp_path = tmp_path_factory.mktemp("tickers")
    day_u, on_disk = day
    if rising:  # as one connection sends them: no sort needed
        carried_u, day_u = sorted(carried_u), sorted(day_u)
        day_u = [u + (carried_u[-1] if carried_u else 0) for u in day_u]
    carried, day_path = _write(tmp_path, carried_u, day_u, on_disk)
    steps, tops = _Steps(), []
    spill = tmp_path / "spill"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ticker_store, "BATCH_ROWS", batch_rows)
        tickers = ticker_store.sort_tickers(carried, day_path, spill, *steps.both(), lambda *a: tops.append(a))
    all_u = carried_u + day_u
    with tickers:
        assert tickers.count == len(all_u)
        for lo, width in windows:  # rising, falling, overlapping, empty ranges alike
            _assert_window(tickers.window(lo, lo + width), all_u, lo, lo + width)
    assert not any(spill.iterdir())
    # Every column put on the grid once, batch after batch in the part's line order.
    for calls in steps.calls.values():
        assert [first for first, _ in calls] == list(np.cumsum([0] + [n for _, n in calls])[:-1])
        assert sum(n for _, n in calls) == len(all_u)
    # The day's tops, in line order: received_time, bid and ask tick of each.
    if tops:
        recv, bid, ask = (np.concatenate(parts) for parts in zip(*tops, strict=True))
        day_rows = np.arange(len(carried_u), len(all_u))
        assert np.array_equal(recv, day_rows * 1_000 + 5) and np.array_equal(bid, day_rows)
        assert np.array_equal(ask, day_rows + 1)
    else:
        assert not day_u


def test_a_run_meets_the_tickers_between_its_lowest_and_highest_final_u(tmp_path, monkeypatch):
    from market_pipeline.vendors.binance import sync_kernel as br

    monkeypatch.setattr(ticker_store, "BATCH_ROWS", 1)  # a row group a ticker: a window is its range
    carried, day = _write(tmp_path, [], [9, 4, 7, 12, 4], [4, 2, 0, 1, 3])
    with ticker_store.sort_tickers(carried, day, tmp_path / "spill", *_Steps().both()) as tickers:
        none = np.empty(0, np.int64)
        final_u = np.array([7, 4, 5], np.int64)  # a buffered diff (u 7) in front of the batch's
        diffs = br.CaptureDiffs(none, none, final_u, none, none, none, none, none)
        run = br.CaptureRun(diffs, br.LevelRows(none.astype(bool), none, none), None, br.new_cursor())
        _assert_window(tickers.for_run(run), [9, 4, 7, 12, 4], 4, 7)
        assert len(tickers.for_run(run._replace(diffs=diffs._replace(last_u=none))).u_sorted) == 0


@pytest.mark.parametrize("rising", [True, False])
def test_the_scratch_goes_when_the_sort_fails(tmp_path, rising):
    carried, day = _write(tmp_path, [], [1, 2, 3] if rising else [3, 1, 2], [0, 1, 2])

    def refuse(values, name, first_row, u):
        if name == "ask_size":
            raise ValueError("ask_size: not on the grid")
        return np.zeros(len(values), np.int64)

    with pytest.raises(ValueError, match="ask_size: not on the grid"):
        ticker_store.sort_tickers(carried, day, tmp_path / "spill", refuse, refuse)
    assert not any((tmp_path / "spill").iterdir())


def test_the_scratch_of_a_killed_process_goes_at_the_next_sort(tmp_path):
    """A sort's scratch is named by its process; one whose process is gone (killed mid-rebuild)
    is removed by the next sort, one of a running process is kept."""
    import os

    spill = tmp_path / "spill"
    dead = spill / f"{ticker_store.SCRATCH_PREFIX}999999999-abc"  # beyond any pid_max
    running = spill / f"{ticker_store.SCRATCH_PREFIX}{os.getppid()}-abc"
    for left in (dead, running):
        left.mkdir(parents=True)
        (left / "tickers_by_u.parquet").write_bytes(b"left behind")
    carried, day = _write(tmp_path, [], [1, 2], [0, 1])
    with ticker_store.sort_tickers(carried, day, spill, *_Steps().both()) as tickers:
        assert tickers.scratch.name.startswith(f"{ticker_store.SCRATCH_PREFIX}{os.getpid()}-")
        assert sorted(spill.iterdir()) == sorted([running, tickers.scratch])
    assert list(spill.iterdir()) == [running]


@pytest.mark.parametrize("rising", [True, False])
def test_empty_row_groups_are_no_window(tmp_path, rising):
    """A file written chunk by chunk has empty row groups where a chunk had no tickers: they hold no
    range of u, so no window reads them, and a file of only those gives empty windows."""
    import pyarrow.parquet as pq

    day_u = [4, 6, 9] if rising else [9, 4, 6]
    frame = _tickers(day_u, [0, 1, 2], [1, 2, 3]).to_arrow()
    for name, tables in (("some", [frame[:0], frame[:2], frame[:0], frame[2:], frame[:0]]), ("none", [frame[:0]] * 2)):
        path = tmp_path / f"{name}.parquet"
        with pq.ParquetWriter(path, frame.schema) as writer:
            for table in tables:
                writer.write_table(table)
        with ticker_store.sort_tickers(None, path, tmp_path / "spill", *_Steps().both()) as tickers:
            assert tickers.count == (3 if name == "some" else 0)
            _assert_window(tickers.window(0, 10), day_u if name == "some" else [], 0, 10)


def test_a_day_file_without_line_numbers_is_named(tmp_path):
    _tickers([1, 2], [0, 1]).write_parquet(tmp_path / "book_ticker.parquet")
    with pytest.raises(ValueError, match=r"book_ticker\.parquet: book_ticker lacks column\(s\) \['line_no'\]"):
        ticker_store.sort_tickers(None, tmp_path / "book_ticker.parquet", tmp_path / "spill", *_Steps().both())
    assert not any((tmp_path / "spill").iterdir())


@pytest.mark.parametrize("rising", [True, False])
def test_an_encrypted_lake_sorts_its_tickers_into_encrypted_scratch(tmp_path, rising):
    """With the lake encrypted the day's file is read (by DuckDB too, out of line order) and the
    scratch written under the lake key: never plain Parquet on disk."""
    import base64

    import pyarrow.parquet as pq

    from market_pipeline.core import context
    from market_pipeline.core.lake import parquet_io

    day_u = [1, 2, 3, 5, 8] if rising else [8, 1, 5, 3, 2]
    key = base64.b64encode(bytes(range(32))).decode()
    with context.using(context.CoreContext(master_key=key, lake_encrypted=True)):
        day = tmp_path / "book_ticker.parquet"
        parquet_io.write_table(_tickers(day_u, list(range(5)), [10, 20, 30, 40, 50])[[3, 1, 4, 0, 2]].to_arrow(), day)
        with ticker_store.sort_tickers(None, day, tmp_path / "spill", *_Steps().both()) as tickers:
            with pytest.raises(OSError):
                pq.read_table(tickers.scratch / ticker_store._SORTED_FILE)
            _assert_window(tickers.window(0, 9), day_u, 0, 9)


# --- the fidelity table's grid ------------------------------------------------------------------

DAY_START = 1_709_251_200 * 10**9  # 2024-03-01
STEP = 1_000_000_000  # the default grid, 1 s


def _asof_table(book: pl.DataFrame, ticker: pl.DataFrame, step: int) -> pl.DataFrame:
    """What the table was before it was reduced as it came: both sides whole, joined as of each
    grid time over the span both cover."""
    start = max(book["received_time"].min(), ticker["received_time"].min())
    end = min(book["received_time"].max(), ticker["received_time"].max())
    first = -(-start // step) * step  # (it divided in floats: 256 ns apart at today's epoch times)
    if end < first + step:
        return pl.DataFrame()
    grid = pl.DataFrame({"received_time": np.arange(first, end + 1, step, dtype=np.int64)})

    def sample(frame: pl.DataFrame, prefix: str) -> pl.DataFrame:
        return grid.join_asof(frame.sort("received_time"), on="received_time", strategy="backward").rename(
            {"bid": f"{prefix}_bid_ticks", "ask": f"{prefix}_ask_ticks"}
        )

    return sample(book, "book").join(sample(ticker, "ticker"), on="received_time").drop_nulls()


@settings(max_examples=80, deadline=None)
@given(
    book=st.lists(st.integers(0, 40 * STEP), max_size=30, unique=True),
    ticker=st.lists(st.integers(0, 40 * STEP), max_size=30, unique=True),
    cuts=st.lists(st.integers(0, 30), max_size=4),
)
def test_the_grid_gives_the_as_of_join_of_all_tops(book, ticker, cuts):
    sides = {}
    for name, times in (("book", book), ("ticker", ticker)):
        recv = DAY_START + np.array(times, np.int64)
        frame = pl.DataFrame({"received_time": recv, "bid": recv % 97, "ask": recv % 89 + 100})
        tops = GridTops(name, DAY_START, STEP)
        for part in np.split(np.arange(len(recv)), sorted(c for c in cuts if c <= len(recv))):
            tops.add(recv[part], frame["bid"].to_numpy()[part], frame["ask"].to_numpy()[part])
        sides[name] = tops, frame
    table = fidelity_table(sides["book"][0], sides["ticker"][0])
    if not book or not ticker:
        assert table.is_empty()
        return
    expected = _asof_table(sides["book"][1], sides["ticker"][1], STEP)
    assert table.height == expected.height
    if table.height:
        assert table.equals(expected.select(table.columns))


def test_of_equal_receive_times_the_top_handed_last_counts(tmp_path):
    tops = GridTops("books", DAY_START, STEP)
    tops.add(np.array([DAY_START + 10, DAY_START + 10]), np.array([1, 2]), np.array([5, 6]))
    tops.add(np.array([DAY_START + 10, DAY_START + 3]), np.array([3, 4]), np.array([7, 8]))
    assert [a.tolist() for a in tops.at(np.array([DAY_START + STEP]))] == [[True], [3], [7]]


def test_a_top_of_another_day_is_named():
    tops = GridTops("book_ticker.parquet: book_ticker", DAY_START, STEP)
    with pytest.raises(ValueError, match=r"book_ticker\.parquet: book_ticker: received_time .* is outside the day"):
        tops.add(np.array([DAY_START - 1]), np.array([1]), np.array([2]))
