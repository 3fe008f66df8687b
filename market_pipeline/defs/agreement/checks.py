"""Asset checks on `source_agreement`, one evaluation per day (defs/common/checks.py), thresholds in
`PIPELINE_AGREEMENT__*`; blocking only with `PIPELINE_AGREEMENT__BLOCKING=true`.

An instrument without a reference source, or a day one of the sources lacks, passes: there is
nothing to compare (the `status` of its `source_agreement` row says which).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import dagster as dg

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.agreement_status import COMPARED, NO_COMMON_IDS
from market_pipeline.defs.agreement.assets import DAILY, read_day_row
from market_pipeline.defs.common.checks import ERROR, WARN, DailyCheck, Finding, build_daily_checks
from market_pipeline.defs.common.resources import PipelineSettings

Judge = Callable[[PipelineSettings, dict[str, object]], Finding]


def _with_row(judge: Judge):
    def evaluate(context, settings: PipelineSettings, instrument: Instrument, day: dt.date) -> Finding:
        if settings.reference_source(instrument.key) is None:
            return Finding(None, "no reference source configured")
        row = read_day_row(settings, instrument, day)
        if row is None:
            return Finding(None, "source_agreement wrote no row for this day")
        if row["status"] not in COMPARED:
            return Finding(None, f"not compared: {row['status']}", {"status": str(row["status"])})
        return judge(settings, row)

    return evaluate


def _ticker_agreement(settings: PipelineSettings, row: dict[str, object]) -> Finding:
    share, floor = row["ticker_agreement_share"], settings.agreement.min_ticker_agreement_share
    figures = {k: row[k] for k in ("tickers", "tickers_matched", "tickers_differing", "tickers_unsynced")}
    figures["ticker_agreement_share"] = share  # type: ignore[assignment]
    if share is not None and share < floor:  # type: ignore[operator]
        return Finding(ERROR, f"the vendor's book agrees with {share:.4%} of the bookTickers (< {floor:.4%})", figures)  # type: ignore[arg-type]
    return Finding(None, f"ticker agreement {share}", figures)  # type: ignore[arg-type]


def _count_at_most(column: str, limit: Callable[[PipelineSettings], int], what: str) -> Judge:
    def judge(settings: PipelineSettings, row: dict[str, object]) -> Finding:
        if column == "messages_missing" and row.get("note") and (row["status"] == NO_COMMON_IDS or row[column] is None):
            # Not a damaged day but a primary whose sequence numbers are not the exchange's update
            # ids, or whose exchange times are not the reference's messages' (the note says which).
            return Finding(WARN, f"not measured: {row['note']}", {"status": str(row["status"])})
        if row[column] is None:  # e.g. messages by exchange time: not measurable
            return Finding(None, f"not measured when matching by {row['status']}", {"status": str(row["status"])})
        value, most = int(row[column]), limit(settings)  # type: ignore[call-overload]
        figures = {column: value, "hours_with_damage": row["hours_with_damage"]}
        if value > most:
            return Finding(ERROR, f"{value} {what} (more than {most})", figures)  # type: ignore[arg-type]
        return Finding(None, f"{value} {what}", figures)  # type: ignore[arg-type]

    return judge


CHECKS: tuple[tuple[str, str, Judge], ...] = (
    (
        "ticker_agreement",
        "ERROR when the vendor's book agrees with less than agreement.min_ticker_agreement_share of the "
        "reference's bookTickers (best bid/ask and sizes, where the vendor's book is in sync).",
        _ticker_agreement,
    ),
    (
        "trades_missing",
        "ERROR when the vendor lacks more than agreement.max_trades_missing of the reference's trades (by trade id).",
        _count_at_most("trades_missing", lambda s: s.agreement.max_trades_missing, "reference trade(s) missing"),
    ),
    (
        "messages_missing",
        "ERROR when the vendor lacks more than agreement.max_messages_missing of the reference's messages "
        "(by update id, or by exchange time where the reference stamps its messages: a Kraken capture); WARN "
        "when the vendor's messages share no update id with the reference's at all (status no_common_ids: "
        "its sequence numbers are not the exchange's ids; matched by exchange time), or by exchange time no "
        "instant with the reference's messages (its origin_time is not their exchange time).",
        _count_at_most("messages_missing", lambda s: s.agreement.max_messages_missing, "reference message(s) missing"),
    ),
)


def build_agreement_checks(partitions_def: dg.PartitionsDefinition, blocking: bool) -> list[dg.AssetChecksDefinition]:
    checks = [DailyCheck(DAILY, name, blocking, description, _with_row(judge)) for name, description, judge in CHECKS]
    return build_daily_checks(checks, partitions_def)
