"""The metrics' pass over a day's deltas made while the rebuild reads them (`delta_pass_stream`):
the same update ranks, hourly messages and skew sample as `update_ranks.delta_pass`, whatever
the batches and however far the snapshot rows lag the deltas; where the order rules it out, or
the rows waiting would grow without bound, it gives up and stores nothing (the metrics then run
the pass). A stored pass is read only for the files it was made from."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from market_pipeline.core.quality import delta_pass_stream
from market_pipeline.core.quality.delta_pass_stream import DeltaPassStream, read_delta_pass
from market_pipeline.core.quality.update_ranks import delta_pass
from market_pipeline_tests.support.rank_world import HOUR, LEVELS, START, rank_day

TICK = Decimal("0.01")
SAMPLE = 500


def _in_time_order(tmp_path, books, deltas) -> None:
    """The day's snapshots and deltas sorted by time (stably), with two snapshots at one time
    (the later one counts) and 38 deltas at exactly a snapshot's time (ranked against the one
    before it); sequence numbers renumbered in the new order (3 rows a message)."""
    snaps = pl.read_parquet(books).sort("received_time", maintain_order=True)
    times = snaps["received_time"].to_numpy().copy()
    times[100] = times[99]
    snaps.with_columns(pl.Series("received_time", times)).write_parquet(books)
    rows = pl.read_parquet(deltas)
    tied = times[10::5]
    ties = rows.head(len(tied)).with_columns(pl.Series("received_time", tied))
    pl.concat([rows, ties]).sort("received_time", maintain_order=True).with_columns(
        (pl.int_range(pl.len()) // 3).alias("sequence_number")
    ).write_parquet(deltas)


def _snapshot_ticks(books) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The books' snapshot rows as the rebuild hands them: times, (levels, rows) bid and ask ticks, -1 absent."""
    snaps = pl.read_parquet(books).filter(pl.col("trigger") == "snapshot")
    ticks = [
        np.stack(
            [
                snaps.select((pl.col(f"{side}_{i}_price") / float(TICK)).round().cast(pl.Int64).fill_null(-1))
                .to_series()
                .to_numpy()
                for i in range(LEVELS)
            ]
        )
        for side in ("bid", "ask")
    ]
    return snaps["received_time"].to_numpy(), ticks[0], ticks[1]


def _feed(
    stream: DeltaPassStream, deltas, books, delta_rows: int, snapshot_rows: int, lag: int, drop_last=False
) -> int:
    """Hand `stream` the deltas in batches of `delta_rows` and the snapshot rows in parts of
    `snapshot_rows`, each part once the deltas handed reach its last time plus `lag` (negative:
    ahead of the deltas), as the rebuild's reader and writer threads do; the most deltas that
    waited at once."""
    rows = pl.read_parquet(deltas)
    batches = [
        {
            "recv": part["received_time"].to_numpy(),
            "orig": part["origin_time"].to_numpy(),
            "seq": part["sequence_number"].to_numpy(),
            "is_bid": part["side_is_bid"].to_numpy(),
            "price": part["price"].to_numpy(),
        }
        for part in rows.iter_slices(delta_rows)
    ]
    if drop_last:
        batches.pop()
    times, bids, asks = _snapshot_ticks(books)
    parts = [
        (times[i : i + snapshot_rows], bids[:, i : i + snapshot_rows], asks[:, i : i + snapshot_rows])
        for i in range(0, len(times), snapshot_rows)
    ]
    events = sorted(
        [(batch["recv"][0], 0, i) for i, batch in enumerate(batches)]
        + [(min(part[0][-1] + lag, 2**62), 1, j) for j, part in enumerate(parts)]
    )
    handed = waited = 0
    for _, kind, index in events:
        if kind == 0:
            stream.deltas(batches[index])
            handed += 1
            if handed == len(batches):
                stream.end_of_deltas()
        else:
            stream.snapshots(*parts[index])
        waited = max(waited, stream.waiting_rows)
    return waited


def _stream(tmp_path, books, deltas) -> DeltaPassStream:
    return DeltaPassStream(tmp_path / "delta_pass.parquet", deltas, TICK, LEVELS, START, SAMPLE)


# (delta batch rows, snapshot part rows, lag of the snapshot rows behind the deltas)
SCHEDULES = [
    pytest.param(100_000, 1_000, 0, id="one_batch_each"),
    pytest.param(1_500, 7, 0, id="in_step"),
    pytest.param(97, 1, HOUR, id="snapshots_an_hour_behind"),
    pytest.param(1_500, 50, -HOUR, id="snapshots_an_hour_ahead"),
    pytest.param(3, 200, 2**62, id="snapshots_after_every_delta"),
]


@pytest.mark.parametrize(("delta_rows", "snapshot_rows", "lag"), SCHEDULES)
def test_the_stream_gives_the_pass_figures_exactly(tmp_path, delta_rows, snapshot_rows, lag):
    books, deltas, _ = rank_day(tmp_path)
    _in_time_order(tmp_path, books, deltas)
    stream = _stream(tmp_path, books, deltas)
    _feed(stream, deltas, books, delta_rows, snapshot_rows, lag)
    assert not stream.snapshot_parts or stream.waiting  # no snapshot row held for deltas that will not come
    got = stream.finish()
    expected = delta_pass(books, deltas, TICK, LEVELS, START, SAMPLE)

    assert got is not None, stream.gave_up
    assert got.rank_counts == expected.rank_counts
    assert 0 < sum(got.rank_counts) < pl.read_parquet(deltas).height  # the first deltas precede every snapshot
    assert got.hourly.equals(expected.hourly)
    assert got.skew_sample_seconds == expected.skew_sample_seconds
    assert len(got.skew_sample_seconds) == SAMPLE


def test_a_delta_at_a_snapshot_time_ranks_against_the_snapshot_before_across_batches(tmp_path):
    """A delta at exactly the first time of a part of snapshot rows ranks in the part before, also
    when the delta before it, at the same time, was ranked in an earlier batch (the parts kept
    between batches must reach back to it)."""
    books, deltas, _ = rank_day(tmp_path)  # only the file's row count matters here
    stream = DeltaPassStream(tmp_path / "delta_pass.parquet", deltas, TICK, 1, START, SAMPLE)
    stream.rows_expected = 2

    def batch(time):
        one = np.array([time], np.int64)
        return {"recv": one, "orig": one, "seq": one, "is_bid": np.array([True]), "price": np.array([0.05])}

    ladder = np.array([[7]], np.int64)  # one bid level at 7 ticks, above the deltas' 5: rank 1
    stream.deltas(batch(START + 10))
    stream.snapshots(np.array([START + 5]), ladder, ladder)
    stream.snapshots(np.array([START + 10, START + 12]), np.array([[1, 1]]), np.array([[9, 9]]))
    stream.deltas(batch(START + 10))
    stream.end_of_deltas()
    assert not stream.snapshot_parts  # every delta ranked: no snapshot row is needed any more
    stream.snapshots(np.array([START + 1]), ladder, ladder)  # back in time, but no delta needs it
    assert not stream.snapshot_parts and stream.gave_up is None

    assert stream.finish().rank_counts == [0, 2]


def _few_snapshot_rows(books, keep: int) -> np.ndarray:
    """The books with their first `keep` snapshot rows only (a capture's: a snapshot row at each
    REST snapshot); their times."""
    rows = pl.read_parquet(books).sort("received_time", maintain_order=True).head(keep)
    rows.write_parquet(books)
    return rows["received_time"].to_numpy()


def test_announced_snapshot_times_rank_the_deltas_as_they_come(tmp_path):
    """Books with three snapshot rows in the day, the rebuild having announced their times: the
    stream ranks each delta as it comes, none waiting for a snapshot row (without the times, every
    delta after the third row would wait to the end), and the figures are the pass's."""
    books, deltas, _ = rank_day(tmp_path)
    _in_time_order(tmp_path, books, deltas)
    announced = _few_snapshot_rows(books, 3)
    stream = _stream(tmp_path, books, deltas)
    stream.snapshot_rows_only_at(announced)
    waited = _feed(stream, deltas, books, 1_500, 1, 0)
    got = stream.finish()
    expected = delta_pass(books, deltas, TICK, LEVELS, START, SAMPLE)

    assert got is not None, stream.gave_up
    assert waited <= 1_500
    assert (got.rank_counts, got.skew_sample_seconds) == (expected.rank_counts, expected.skew_sample_seconds)
    assert got.hourly.equals(expected.hourly)
    assert 0 < sum(got.rank_counts) < pl.read_parquet(deltas).height


def test_a_snapshot_row_at_a_time_not_announced_gives_up(tmp_path):
    """Deltas before an announced time may have been ranked without a row before it."""
    books, deltas, _ = rank_day(tmp_path)
    ladder = np.array([[7], [6], [5]], np.int64)
    stream = _stream(tmp_path, books, deltas)
    stream.snapshot_rows_only_at(np.array([START + 10, START + 20]))
    stream.snapshots(np.array([START + 10]), ladder, ladder)
    assert stream.gave_up is None
    stream.snapshots(np.array([START + 15]), ladder, ladder)
    assert stream.gave_up == "a snapshot row comes at a time the rebuild did not announce"
    again = _stream(tmp_path, books, deltas)
    again.snapshot_rows_only_at(np.array([START + 10, START + 20]))
    again.snapshots(np.array([START + 10, START + 10]), ladder[:, [0, 0]], ladder[:, [0, 0]])  # listed once
    assert again.gave_up == "a snapshot row comes at a time the rebuild did not announce"


def test_a_stored_pass_is_read_for_its_own_files_only(tmp_path):
    """The stored pass is tagged with the books and deltas files (rows and bytes) and the figures
    it was made with (tick, levels, day, sample size): any other is not read."""
    books, deltas, _ = rank_day(tmp_path)
    _in_time_order(tmp_path, books, deltas)
    stream = _stream(tmp_path, books, deltas)
    _feed(stream, deltas, books, 1_500, 7, 0)
    stream.write(books)
    expected = delta_pass(books, deltas, TICK, LEVELS, START, SAMPLE)

    def read(levels=LEVELS, sample=SAMPLE, tick=TICK, start=START):
        return read_delta_pass(stream.path, books, deltas, tick, levels, start, sample)

    got = read()
    assert got is not None
    assert (got.rank_counts, got.skew_sample_seconds) == (expected.rank_counts, expected.skew_sample_seconds)
    assert got.hourly.equals(expected.hourly)
    assert read(levels=LEVELS + 1) is None
    assert read(sample=SAMPLE + 1) is None
    assert read(tick=Decimal("0.1")) is None
    assert read(start=START + HOUR) is None
    pl.read_parquet(deltas).head(-1).write_parquet(deltas)
    assert read() is None


def _sequence_down_in_hour_5(deltas) -> None:
    rows = pl.read_parquet(deltas)
    hour = (pl.col("received_time") - START) // HOUR
    rows.with_columns(
        pl.when(hour == 5).then(pl.col("sequence_number") % 7).otherwise(pl.col("sequence_number"))
    ).write_parquet(deltas)


@pytest.mark.parametrize(
    ("case", "why"),
    [
        ("delta_time_back", "a delta's received_time goes back"),
        ("snapshot_time_back", "a snapshot row's received_time goes back"),
        ("sequence_down", "sequence numbers go down in hour 5"),
        ("deltas_wait", "more than 1,000 deltas wait for a later snapshot row"),
        ("snapshots_wait", "more than 10 snapshot rows wait for later deltas"),
        ("rows_missing", "delta rows came of the file's"),
    ],
)
def test_the_stream_gives_up_where_the_pass_alone_is_right(tmp_path, monkeypatch, caplog, case, why):
    """Deltas or snapshot rows out of time order, or an hour's numbers going down (the pass handles
    each), rows piling up waiting (a day whose snapshots stop; snapshots running on past the
    deltas), or fewer rows than the file's: nothing is stored, and what an earlier rebuild stored
    is removed."""
    books, deltas, _ = rank_day(tmp_path)
    original_books = pl.read_parquet(books)
    original_deltas = pl.read_parquet(deltas)
    _in_time_order(tmp_path, books, deltas)
    if case == "deltas_wait":
        monkeypatch.setattr(delta_pass_stream, "MAX_WAITING_ROWS", 1_000)
    if case == "snapshots_wait":
        monkeypatch.setattr(delta_pass_stream, "MAX_HELD_SNAPSHOT_ROWS", 10)
    lag = {"deltas_wait": 2**62, "snapshots_wait": -(2**62)}.get(case, 0)
    if case == "delta_time_back":
        original_deltas.write_parquet(deltas)
    elif case == "snapshot_time_back":
        original_books.write_parquet(books)
    elif case == "sequence_down":
        _sequence_down_in_hour_5(deltas)
    stream = _stream(tmp_path, books, deltas)
    stream.path.write_bytes(b"stored by an earlier rebuild")
    _feed(stream, deltas, books, 500, 7, lag, drop_last=case == "rows_missing")
    with caplog.at_level("INFO", logger=delta_pass_stream.__name__):
        stream.write(books)

    assert stream.gave_up is not None and why in stream.gave_up
    assert not stream.path.exists()
    assert not stream.waiting and not stream.snapshot_parts
    assert f"{stream.path} not stored: {stream.gave_up}" in caplog.text  # says why the metrics read again
