"""Books for vendors whose raw tables are lake-shaped deltas and snapshots (Crypto Lake,
synthetic, Tardis): core's generic delta replay, checked against the vendor's snapshots."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from market_pipeline.core.book.fixed_point import Grid
from market_pipeline.core.book.rebuild import RebuildResult, rebuild_day
from market_pipeline.core.day_clock import day_start_ns
from market_pipeline.core.instruments import Instrument, SequenceSemantics
from market_pipeline.core.lake.paths import (
    PARTITION_FILE,
    book_agreement_dir,
    books_delta_pass_path,
    books_partition_dir,
    books_shape_path,
    checkpoint_path,
    raw_partition_dir,
)
from market_pipeline.core.quality.book_shape import ShapeFile
from market_pipeline.core.quality.delta_pass_stream import DeltaPassStream
from market_pipeline.core.quality.microstructure import SKEW_SAMPLE_ROWS
from market_pipeline.core.security.audit import audit_read
from market_pipeline.core.telemetry.telemetry import count
from market_pipeline.vendors.base import BookDay, WrappedBookResult, book_day_metadata


@dataclass
class LakeBookResult(WrappedBookResult):
    """A `RebuildResult` as the books stage reports it."""

    result: RebuildResult

    @property
    def events(self) -> int:
        return self.result.counters["messages"]

    @property
    def totals(self) -> dict[str, int]:
        c = self.result.counters
        gaps = c["sequence_gaps"] + c["divergences"] + c["out_of_order_messages"]
        return {"deltas_applied": c["deltas_applied"], "gaps": gaps, "fills": c["fills"]}

    def metadata(self, key: str) -> dict[str, object]:
        r, c = self.result, self.result.counters
        figures = {
            "messages": c["messages"],
            "deltas_applied": c["deltas_applied"],
            "gaps": self.totals["gaps"],
            "fills": c["fills"],
            "crossed_events": c["crossed_events"],
            "precision_loss_events": r.precision_events,
            "vendor_snapshot_match_share": (
                c["vendor_snapshots_matched"] / c["vendor_snapshots"] if c["vendor_snapshots"] else 0.0
            ),
        }
        detail = {
            "counters": c,
            "hourly": r.hourly,
            "precision_examples": r.precision_examples[:20],
            "batches": r.batches,
            "seconds": round(r.seconds, 3),
            "output": str(r.output),
        }
        return book_day_metadata(key, figures, r.rows_in, r.seconds, r.peak_rss_bytes, r.start_mode, detail)

    def summary(self) -> str:
        c = self.result.counters
        return (
            f"{c['deltas_applied']} deltas, {c['rows_written']} rows, start={self.result.start_mode}, "
            f"{self.result.seconds:.1f}s"
        )


def _record_telemetry(instrument: str, result: RebuildResult) -> None:
    c = result.counters
    count("mdp_book_deltas_applied_total", c["deltas_applied"], instrument=instrument)
    count("mdp_book_messages_total", c["messages"], instrument=instrument)
    count("mdp_sequence_gaps_total", c["sequence_gaps"], instrument=instrument, kind="sequence_gap")
    count("mdp_sequence_gaps_total", c["divergences"], instrument=instrument, kind="divergence")
    count("mdp_sequence_gaps_total", c["out_of_order_messages"], instrument=instrument, kind="out_of_order")
    count("mdp_gaps_filled_total", c["fills"], instrument=instrument)
    count("mdp_precision_loss_total", result.precision_events, instrument=instrument)
    count("mdp_crossed_books_total", c["crossed_events"], instrument=instrument)


def rebuild_lake_books(job: BookDay, semantics: SequenceSemantics) -> LakeBookResult:
    """Replay the day's raw `book_delta_v2` against its `book` snapshots into the books lake."""
    lake, instrument, day = job.lake_dir, job.instrument, job.day
    ex, sym = instrument.exchange, instrument.symbol
    deltas = raw_partition_dir(lake, "book_delta_v2", ex, sym, day) / PARTITION_FILE
    book = raw_partition_dir(lake, "book", ex, sym, day) / PARTITION_FILE
    for needed in (deltas, book):
        if not needed.is_file():
            raise FileNotFoundError(f"{instrument.key} {day}: raw partition missing: {needed}")
    previous = checkpoint_path(lake, ex, sym, day - dt.timedelta(days=1))
    for read in (deltas, book, previous):
        audit_read(read)  # the previous day's checkpoint only if it exists
    result = rebuild_day(
        deltas_path=deltas,
        book_path=book,
        output_path=books_partition_dir(lake, ex, sym, day) / PARTITION_FILE,
        checkpoint_in=previous,
        checkpoint_out=checkpoint_path(lake, ex, sym, day),
        grid=Grid(instrument.tick_size, instrument.lot_size),
        day=day,
        contiguous=semantics == "contiguous",
        depth=job.depth,
        interval_ms=job.interval_ms,
        shape=ShapeFile(books_shape_path(lake, ex, sym, day)),
        agreement_path=book_agreement_dir(lake, ex, sym, day) / PARTITION_FILE,
        delta_pass=DeltaPassStream(
            books_delta_pass_path(lake, ex, sym, day),
            deltas,
            instrument.tick_size,
            job.depth,
            day_start_ns(day),
            SKEW_SAMPLE_ROWS,
        ),
    )
    _record_telemetry(instrument.key, result)
    return LakeBookResult(result)


class LakeShapedBooks:
    """Mixin for sources serving lake-shaped tables: sequence semantics from the instrument's
    configuration and books from the generic delta replay."""

    book_agreement = True

    def sequence_semantics(self, instrument: Instrument) -> SequenceSemantics:
        return instrument.spec.sequence

    def rebuild_books(self, job: BookDay) -> LakeBookResult:
        return rebuild_lake_books(job, self.sequence_semantics(job.instrument))
