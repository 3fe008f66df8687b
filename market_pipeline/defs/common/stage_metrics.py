"""What the raw and book stages report per instrument-day: metrics, and the usage metadata that
`pipeline_metrics` later reads back from the event log (keys `<instrument> seconds`,
`<instrument> events_per_second`, `<instrument> peak_rss_mb`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from market_pipeline.core.telemetry.telemetry import StageUsage, count, gauge

if TYPE_CHECKING:
    from market_pipeline.core.book.rebuild import RebuildResult
    from market_pipeline.defs.raw.importer import PartitionStats

USAGE_FIELDS = ("seconds", "events_per_second", "peak_rss_mb")


def usage_metadata(stage: str, instrument: str, usage: StageUsage, events: int) -> dict[str, float]:
    """One stage-day's wall time, throughput and peak memory as metadata; records the throughput gauge."""
    rate = events / usage.seconds if usage.seconds > 0 else 0.0
    gauge("mdp_events_per_second", rate, stage=stage, instrument=instrument)
    return {
        f"{instrument} seconds": round(usage.seconds, 3),
        f"{instrument} events_per_second": round(rate, 1),
        f"{instrument} peak_rss_mb": round(usage.peak_rss_mb, 1),
    }


def record_import(table: str, stats: PartitionStats) -> None:
    count("mdp_source_items_total", stats.rows, table=table, instrument=stats.instrument)
    count("mdp_quarantined_rows_total", stats.quarantined_rows, table=table, instrument=stats.instrument)


def record_rebuild(instrument: str, result: RebuildResult) -> None:
    c = result.counters
    count("mdp_book_deltas_applied_total", c["deltas_applied"], instrument=instrument)
    count("mdp_book_messages_total", c["messages"], instrument=instrument)
    count("mdp_sequence_gaps_total", c["sequence_gaps"], instrument=instrument, kind="sequence_gap")
    count("mdp_sequence_gaps_total", c["divergences"], instrument=instrument, kind="divergence")
    count("mdp_sequence_gaps_total", c["out_of_order_messages"], instrument=instrument, kind="out_of_order")
    count("mdp_gaps_filled_total", c["fills"], instrument=instrument)
    count("mdp_precision_loss_total", result.precision_events, instrument=instrument)
    count("mdp_crossed_books_total", c["crossed_events"], instrument=instrument)
