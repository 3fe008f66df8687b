"""`make bench BENCH_ARGS=--read-api`: how fast the research read API (`market_pipeline.lake`) reads the
bench day's rebuilt books: `books()` of the day with 5 columns collected (rows/s), and `book_at` for
1 M instants spread over the day (instants/s). Best of two runs each; no run history is asked (the
bench's graph runs in a DAGSTER_HOME of its own)."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import numpy as np
import polars as pl

from market_pipeline.core.day_clock import NS_PER_DAY, day_start_ns
from market_pipeline.core.read.verdicts import NoRunHistory
from market_pipeline.lake import Lake

BOOKS_COLUMNS = ["received_time", "bid_0_price", "bid_0_size", "ask_0_price", "ask_0_size"]
BOOK_AT_INSTANTS = 1_000_000


def measure_read_api(data_dir: Path, instrument: str, day: dt.date) -> dict[str, float]:
    lake = Lake(data_dir, NoRunHistory())
    rows, books_seconds = 0, float("inf")
    for _ in range(2):
        started = time.perf_counter()
        rows = lake.books(instrument, day, columns=BOOKS_COLUMNS).collect().height
        books_seconds = min(books_seconds, time.perf_counter() - started)
    start = day_start_ns(day)
    instants = pl.Series("time", np.random.default_rng(0).integers(start, start + NS_PER_DAY, BOOK_AT_INSTANTS))
    book_at_seconds = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        lake.book_at(instrument, instants)
        book_at_seconds = min(book_at_seconds, time.perf_counter() - started)
    return {
        "read_books_rows": rows,
        "read_books_seconds": round(books_seconds, 3),
        "read_books_rows_per_s": round(rows / books_seconds),
        "read_book_at_instants": BOOK_AT_INSTANTS,
        "read_book_at_seconds": round(book_at_seconds, 3),
        "read_book_at_per_s": round(BOOK_AT_INSTANTS / book_at_seconds),
    }
