"""The capture source's books: Binance's sync rules over the raw capture tables of one day."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.day_clock import day_start_ns
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    books_delta_pass_path,
    books_partition_dir,
    books_shape_path,
    capture_fidelity_dir,
    checkpoint_path,
    raw_partition_dir,
)
from market_pipeline.core.quality.delta_pass_stream import DeltaPassStream
from market_pipeline.core.quality.microstructure import SKEW_SAMPLE_ROWS
from market_pipeline.vendors.base import BookDay, WrappedBookResult, book_day_metadata
from market_pipeline.vendors.binance.capture_format import LAKE_EXCHANGES
from market_pipeline.vendors.binance.rebuild import CaptureRebuildResult, rebuild_capture_day

REQUIRED_TABLES = ("book_delta_v2", "depth_snapshot", "book_ticker")


@dataclass
class CaptureBookResult(WrappedBookResult):
    """A `CaptureRebuildResult` as the books stage reports it."""

    result: CaptureRebuildResult

    @property
    def events(self) -> int:
        return self.result.counters["diffs"]

    @property
    def totals(self) -> dict[str, int]:
        c = self.result.counters
        return {"deltas_applied": c["deltas_applied"], "gaps": c["gaps"], "fills": 0}

    def metadata(self, key: str) -> dict[str, object]:
        r, c = self.result, self.result.counters
        figures = {
            "messages": c["diffs"],
            "diffs_applied": c["applied"],
            "deltas_applied": c["deltas_applied"],
            "gaps": c["gaps"],
            "resyncs": c["resyncs"],
            "ticker_checks": c["ticker_checks"],
            "ticker_mismatches": c["ticker_mismatches"],
            "crossed_events": c["crossed_events"],
            "precision_loss_events": r.precision_events,
        }
        detail = {
            "counters": c,
            "trades": r.trades,
            "continuous_at_start": r.continuous_at_start,
            "in_sync_at_end": r.in_sync_at_end,
            "final_best_bid": r.final_best_bid,
            "final_best_ask": r.final_best_ask,
            "precision_examples": r.precision_examples[:20],
            "seconds": round(r.seconds, 3),
            "output": str(r.output),
        }
        return book_day_metadata(key, figures, r.delta_rows, r.seconds, r.peak_rss_bytes, r.start_mode, detail)

    def summary(self) -> str:
        c, r = self.result.counters, self.result
        return (
            f"{c['applied']} of {c['diffs']} diffs applied, {c['gaps']} gaps, "
            f"{c['ticker_mismatches']} ticker mismatches, {c['rows_written']} rows, "
            f"start={r.start_mode}, {r.seconds:.1f}s"
        )


def rebuild_capture_books(
    job: BookDay, covered: bool, capture_files: int, fidelity_interval_ms: int
) -> CaptureBookResult | None:
    """Rebuild one instrument-day from its raw capture partitions; None when no capture covers it
    (`covered` is False and the raw stage wrote no diffs for it). Beside the books it writes the
    fidelity table (rebuilt and bookTicker tops on a `fidelity_interval_ms` grid) that
    validation_reports reads; `capture_files` is how many capture files hold data of the day."""
    lake, instrument, day = job.lake_dir, job.instrument, job.day
    ex, sym = instrument.exchange, instrument.symbol
    raw = {
        t: raw_partition_dir(lake, t, ex, sym, day) / PARTITION_FILE
        for t in ("book_delta_v2", "depth_snapshot", "book_ticker", "book", "trades")
    }
    if not raw["book_delta_v2"].is_file() and not covered:
        return None
    for table in REQUIRED_TABLES:
        if not raw[table].is_file():
            raise FileNotFoundError(f"{instrument.key} {day}: raw partition missing: {raw[table]}")
    result = rebuild_capture_day(
        fidelity_path=capture_fidelity_dir(lake, ex, sym, day) / PARTITION_FILE,
        fidelity_interval_ms=fidelity_interval_ms,
        capture_files=capture_files,
        deltas_path=raw["book_delta_v2"],
        snapshots_path=raw["depth_snapshot"],
        tickers_path=raw["book_ticker"],
        book_path=raw["book"],
        trades_path=raw["trades"],
        output_path=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
        checkpoint_in=checkpoint_path(lake, ex, sym, day - dt.timedelta(days=1)),
        checkpoint_out=checkpoint_path(lake, ex, sym, day),
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        futures=instrument.exchange != LAKE_EXCHANGES["spot"],
        depth=job.depth,
        interval_ms=job.interval_ms,
        shape_path=books_shape_path(lake, ex, sym, day),
        spill_dir=job.spill_dir,
        delta_pass=DeltaPassStream(
            books_delta_pass_path(lake, ex, sym, day),
            raw["book_delta_v2"],
            instrument.tick_size,
            job.depth,
            day_start_ns(day),
            SKEW_SAMPLE_ROWS,
        ),
    )
    return CaptureBookResult(result)
