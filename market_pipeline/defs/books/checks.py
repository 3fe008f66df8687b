"""Asset checks on reconstructed books: one evaluation per day of the run (defs/common/checks.py).

`no_crossed_books`, `book_in_sync` and `exchange_checksums` are blocking;
`vendor_snapshot_agreement` (and the freshness checks, defs/automation) are not.
"""

import datetime as dt

import dagster as dg
import polars as pl

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.book_sync import sync_figures
from market_pipeline.core.quality.crossed import crossed_figures, scan_books_touch, scan_snapshot_tops
from market_pipeline.core.quality.snapshot_agreement import agreement_figures
from market_pipeline.defs.common.checks import (
    ERROR,
    WARN,
    DailyCheck,
    Finding,
    build_daily_checks,
    daily_check,
    day_files,
)
from market_pipeline.defs.common.exchange_checksums import day_checksums
from market_pipeline.defs.common.recorded import rebuild_counters
from market_pipeline.defs.common.resources import PipelineSettings


@daily_check(
    "reconstructed_books",
    "no_crossed_books",
    blocking=True,
    description="No rebuilt row has best bid >= best ask (ERROR); WARN when the rebuild had to resolve "
    "crossed or locked books or the vendor's own snapshots were crossed.",
)
def no_crossed_books(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    # Lazy scans of the touch columns: only crossed rows are ever held.
    rebuilt_crossed, rebuilt_rows = crossed_figures(scan_books_touch(files), by_time=True)
    vendor_crossed, vendor_rows = crossed_figures(scan_snapshot_tops(files), by_time=False)
    counters = rebuild_counters(context.instance, instrument.key, day) or {}
    figures = {
        "rebuilt_crossed_rows": rebuilt_crossed,
        "vendor_crossed_snapshots": vendor_crossed,
        "crossed_events": counters.get("crossed_events"),
        "crossed_levels_removed": counters.get("crossed_levels_removed"),
    }
    if figures["rebuilt_crossed_rows"]:
        return Finding(
            ERROR,
            f"{figures['rebuilt_crossed_rows']} rebuilt row(s) crossed or locked",
            figures,
            rebuilt_rows,
        )
    if figures["crossed_events"] or figures["vendor_crossed_snapshots"]:
        return Finding(
            WARN,
            f"{figures['crossed_events'] or 0} crossed book(s) resolved in the rebuild, "
            f"{figures['vendor_crossed_snapshots']} crossed vendor snapshot(s)",
            figures,
            vendor_rows,
        )
    return Finding(None, "no crossed or locked book", figures)


@daily_check(
    "reconstructed_books",
    "vendor_snapshot_agreement",
    blocking=False,
    description="Share of vendor snapshots whose 20 levels the rebuilt book matched exactly: ERROR below "
    "checks.vendor_match_min_share; WARN when a book that was in sync disagreed (a divergence).",
)
def vendor_snapshot_agreement(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    agreement = agreement_figures(files)  # scans of the agreement table, in bounded memory
    figures = dict(agreement.summary)
    figures["mismatches_by_level"] = str(figures["mismatches_by_level"])
    share = figures["snapshot_exact_match_share"]
    minimum = settings.checks.vendor_match_min_share
    if share is not None and share < minimum:
        severity, summary = ERROR, f"{share:.4%} of snapshots match exactly (< {minimum:.2%})"
    elif figures["divergences"]:
        severity, summary = WARN, f"{figures['divergences']} divergence(s): the book was in sync yet disagreed"
    else:
        severity, summary = None, f"{share:.4%} of snapshots match exactly" if share is not None else "no snapshots"
    return Finding(severity, summary, figures, agreement.worst)


@daily_check(
    "reconstructed_books",
    "book_in_sync",
    blocking=True,
    description="Share of the day's rebuilt rows written while the book was out of sync (before the first "
    "sync point, or from a gap until a snapshot repaired it): ERROR above checks.max_unsynced_share.",
)
def book_in_sync(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = day_files(settings, instrument, day)
    sync = sync_figures(files.require(files.books), day)
    counters = rebuild_counters(context.instance, instrument.key, day) or {}
    figures = {
        **sync.daily(),
        # Capture rebuilds count chain gaps and re-syncs; lake-shaped ones sequence gaps and fills.
        "gaps": counters.get("gaps", counters.get("sequence_gaps")),
        "resyncs": counters.get("resyncs", counters.get("fills")),
        "unsynced_at_end": counters.get("unsynced_at_end"),
    }
    hours = sync.hourly.filter(pl.col("unsynced_rows") > 0)  # the hours the book was out of sync, UTC
    rows = [{**r, "hour": f"{r['hour']:02d}:00"} for r in hours.iter_rows(named=True)]
    share, limit = sync.unsynced_share, settings.checks.max_unsynced_share
    if share is None:
        return Finding(None, "no rebuilt rows", figures)
    summary = f"{sync.unsynced_rows:,} of {sync.book_rows:,} rows ({share:.2%}) written out of sync"
    if share > limit:
        return Finding(ERROR, f"{summary} (> {limit:.2%})", figures, rows)
    return Finding(None, summary, figures, rows)


@daily_check(
    "reconstructed_books",
    "exchange_checksums",
    blocking=True,
    description="The exchange's own book checksums (Kraken's top 10, OKX's top 25 before 2026) recomputed by "
    "the verify replay of the day's capture, of the primary source or else the PIPELINE_SOURCES reference. "
    "When any disagrees, naming the first such update (file, line, receive time): ERROR for the primary's "
    "capture (its books are built from it); WARN for a reference's, which only the agreement reads, so a "
    "damaged recording does not block a good bought day. Passes when the sources have no exchange checksum.",
)
def exchange_checksums(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    found = day_checksums(settings, instrument, day)
    if found is None:
        return Finding(None, "not checked: no exchange checksum (the sources have none, or no capture covers the day)")
    checksums = found.figures
    figures: dict[str, float | int | str | None] = {
        "checksums_of": found.reference or "primary",
        "checksums_checked": checksums.checked,
        "checksum_mismatches": checksums.mismatches,
        "checksums_unchecked": checksums.unchecked,
    }
    first = checksums.first_mismatch
    if first is None:
        return Finding(None, checksums.summary(), figures)
    rows = [{"file": first.file, "line": first.line, "received_time": first.received_time}]
    if found.reference is not None:
        return Finding(WARN, f"reference {found.reference}: {checksums.summary()}", figures, rows)
    return Finding(ERROR, checksums.summary(), figures, rows)


BOOK_CHECKS: list[DailyCheck] = [no_crossed_books, vendor_snapshot_agreement, book_in_sync, exchange_checksums]


def build_book_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    return build_daily_checks(BOOK_CHECKS, partitions_def)
