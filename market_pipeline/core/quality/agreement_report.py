"""The day's source agreement as HTML (`reports/dt=D/source_agreement.html`, beside the validation
report): per instrument its day figures and hourly charts of what the reference saw and the primary
vendor lacks or shows differently."""

from __future__ import annotations

import datetime as dt
import html
from pathlib import Path

import polars as pl

from market_pipeline.core.lake.files import write_text_atomic
from market_pipeline.core.quality.report import bar_chart, figure_text, report_path

REPORT_FILE = "source_agreement.html"
# (hourly column, chart title, unit)
CHARTS = (
    ("messages_missing", "reference messages the vendor lacks, per hour (UTC)", "messages"),
    ("trades_missing", "reference trades the vendor lacks, per hour (UTC)", "trades"),
    ("tickers_differing", "bookTickers the vendor's book differs from, per hour (UTC)", "tickers"),
    ("snapshots_differing", "vendor snapshots differing from the bookTicker of their update id", "snapshots"),
    ("delay_p99_ms", "vendor receive time minus the capture's, p99 per hour (UTC)", "ms"),
)
DAY_FIGURES = (
    "status",
    "note",  # why the day was not compared, or was matched otherwise than asked
    "primary",
    "reference",
    "messages_reference",
    "messages_missing",
    "messages_extra",
    "delayed_messages",
    "delay_max_ms",
    "trades_reference",
    "trades_missing",
    "trades_extra",
    "trades_price_differs",
    "trades_size_differs",
    "trades_side_differs",
    "tickers",
    "ticker_agreement_share",
    "tickers_unsynced",
    "tickers_same_time",
    "snapshots_differing",
    "book_instants",
    "book_instants_differing",
    "hours_with_damage",
)


def agreement_report_path(data_dir: Path, day: dt.date) -> Path:
    return report_path(data_dir, day).with_name(REPORT_FILE)


def _section(row: dict[str, object], hourly: pl.DataFrame) -> str:
    figures = "".join(
        f"<tr><th>{name}</th><td>{figure_text(row.get(name))}</td></tr>"
        for name in DAY_FIGURES
        if name != "note" or row.get(name)
    )
    charts = ""
    if hourly.height:
        charts = "".join(
            bar_chart(hourly[c].cast(pl.Float64).to_list(), title, unit)
            for c, title, unit in CHARTS
            if hourly[c].null_count() < hourly.height  # not measured by this matching: no chart
        )
    return f"<h2>{html.escape(str(row['instrument']))}</h2><table>{figures}</table>{charts}"


def write_agreement_report(data_dir: Path, day: dt.date, days: list[tuple[dict[str, object], pl.DataFrame]]) -> Path:
    """The day's report over (day row, hourly rows) of each instrument with a reference source."""
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}figure{margin:.3em 0}"
    )
    sections = "".join(_section(row, hourly) for row, hourly in days)
    text = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Source agreement {day}</title>"
        f"<style>{style}</style></head><body><h1>Source agreement {day} (UTC)</h1>"
        "<p>The primary vendor's day against its reference source (docs/data-formats.md, 'Source agreement').</p>"
        f"{sections}</body></html>\n"
    )
    path = agreement_report_path(data_dir, day)
    write_text_atomic(path, text)
    return path
