"""Asset checks on `ohlcv_bars`: one evaluation per day of the run (defs/common/checks.py).

`ohlc_consistency`, `non_negative_volume`, `no_nan` and `missing_bars` are blocking (a failed day
is left out of `ohlcv_bars_summary`); `trades_within_touch` warns only.
"""

import datetime as dt

import dagster as dg
import polars as pl

from market_pipeline.core.bars import figures as f
from market_pipeline.core.instruments import Instrument
from market_pipeline.defs.bars.assets import BARS_ASSET, BarFiles
from market_pipeline.defs.common.checks import ERROR, WARN, DailyCheck, Finding, build_daily_checks, daily_check
from market_pipeline.defs.common.resources import PipelineSettings


def _scan(settings: PipelineSettings, instrument: Instrument, day: dt.date) -> pl.LazyFrame:
    return f.scan_bars(BarFiles.of(settings, instrument, day).bars)


def _bad_bars(bars: pl.LazyFrame, condition: pl.Expr, what: str) -> Finding:
    count, rows = f.worst(bars, condition)
    if count:
        return Finding(ERROR, f"{count} bar(s) {what}", {"bad_bars": count}, rows)
    return Finding(None, f"no bar {what}", {"bad_bars": 0})


@daily_check(
    BARS_ASSET,
    "ohlc_consistency",
    blocking=True,
    description="Every bar has low <= open, close <= high (ERROR otherwise).",
)
def ohlc_consistency(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    return _bad_bars(
        _scan(settings, instrument, day), f.OHLC_INCONSISTENT, "with low > open/close or high < open/close"
    )


@daily_check(
    BARS_ASSET,
    "non_negative_volume",
    blocking=True,
    description="Volume, quote volume, buy volume and trade count are >= 0 and buy volume <= volume (ERROR).",
)
def non_negative_volume(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    return _bad_bars(
        _scan(settings, instrument, day), f.NEGATIVE_VOLUME, "with a negative volume or buy volume > volume"
    )


@daily_check(
    BARS_ASSET,
    "no_nan",
    blocking=True,
    description="No bar lacks a required value (null or NaN); VWAP may be null only when the volume is 0 (ERROR).",
)
def no_nan(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    bars = _scan(settings, instrument, day)
    return _bad_bars(bars, f.missing_value_expr(bars.collect_schema()), "with a null or NaN value")


@daily_check(
    BARS_ASSET,
    "missing_bars",
    blocking=True,
    description="Intervals without trades have no bar (absent, never empty): ERROR when a configured interval "
    "has no bars, a bar is empty, duplicated or off its grid, or the bars do not hold every trade of the day.",
)
def missing_bars(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = BarFiles.of(settings, instrument, day)
    figures = f.completeness(files.bars, files.trades, day, settings.bars.bar_intervals)
    problems: list[str] = figures.pop("problems")  # type: ignore[assignment]
    if problems:
        return Finding(ERROR, "; ".join(problems), figures)  # type: ignore[arg-type]
    absent = ", ".join(f"{i.name}: {figures[f'{i.name} absent_bars']}" for i in settings.bars.bar_intervals)
    return Finding(None, f"every trade in a bar; intervals without trades (absent bars) {absent}", figures)  # type: ignore[arg-type]


@daily_check(
    BARS_ASSET,
    "trades_within_touch",
    blocking=False,
    description="WARN when a trade is priced outside the last in-sync rebuilt touch at or before its origin_time "
    "by more than bars.touch_tolerance_bps (the books are sampled, so the touch can be up to one sample old).",
)
def trades_within_touch(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
    files = BarFiles.of(settings, instrument, day)
    tolerance = settings.bars.touch_tolerance_bps
    figures = f.off_touch_trades(files.trades, files.books, day, tolerance)
    rows: list[dict[str, object]] = figures.pop("worst_rows")  # type: ignore[assignment]
    outside = figures["off_touch_trades"]
    if outside:
        summary = f"{outside} of {figures['trades']} trade(s) priced more than {tolerance} bps outside the touch"
        return Finding(WARN, summary, figures, rows)  # type: ignore[arg-type]
    return Finding(None, f"every trade within {tolerance} bps of the touch", figures)  # type: ignore[arg-type]


BARS_CHECKS: list[DailyCheck] = [ohlc_consistency, non_negative_volume, no_nan, missing_bars, trades_within_touch]


def build_bars_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    return build_daily_checks(BARS_CHECKS, partitions_def)
