"""The human-readable daily validation report: one self-contained HTML page with inline SVG plots."""

from __future__ import annotations

import datetime as dt
import html
import json
from pathlib import Path

import polars as pl

from market_pipeline.core.lake.files import write_text_atomic
from market_pipeline.core.quality.validation import DayValidation

REPORT_FILE = "validation.html"

# Figures in the summary table, in order: (column, label).
SUMMARY = (
    ("gaps_detected", "gaps detected"),
    ("gaps_filled", "gaps filled"),
    ("gaps_unrepaired", "gaps unrepaired"),
    ("snapshot_exact_match_share", "snapshots matching exactly"),
    ("max_mid_dev_ticks", "max mid deviation (ticks)"),
    ("p99_mid_dev_bps", "p99 mid deviation (bps)"),
    ("skew_p50_ms", "skew p50 (ms)"),
    ("skew_p99_ms", "skew p99 (ms)"),
    ("skew_max_ms", "skew max (ms)"),
    ("skew_negative_share", "share of negative skew"),
    ("off_grid_values", "values off grid"),
    ("precision_loss_events", "precision-loss values"),
    ("crossed_events", "crossed/locked events (rebuild)"),
    ("trades_at_or_inside_touch_share", "trades at or inside the touch"),
    ("capture_ticker_agreement_share", "capture bookTicker agreement"),
    ("ks_spread_pvalue", "KS p-value, spread (capture)"),
    ("ks_mid_return_pvalue", "KS p-value, mid returns (capture)"),
)


def report_path(data_dir: Path, day: dt.date) -> Path:
    return data_dir / "reports" / f"dt={day.isoformat()}" / REPORT_FILE


def _fmt(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    return html.escape(str(value))


def bar_chart(values: list[float | None], title: str, width: int = 480, height: int = 80) -> str:
    """A small SVG bar chart of 24 hourly values (None is an empty bar)."""
    finite = [v for v in values if v is not None]
    top = max(finite) if finite and max(finite) > 0 else 1.0
    bar = width / max(len(values), 1)
    bars = []
    for i, v in enumerate(values):
        if v is None:
            continue
        h = (v / top) * (height - 14)
        bars.append(
            f'<rect x="{i * bar + 1:.1f}" y="{height - h:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" fill="#4a78b0">'
            f"<title>{i:02d}:00 {v:.4g}</title></rect>"
        )
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">'
        f'<text x="0" y="10" font-size="10">{html.escape(title)} (max {top:.4g})</text>{"".join(bars)}</svg></figure>'
    )


def _rows_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(v: DayValidation) -> str:
    summary = "".join(f"<tr><th>{label}</th><td>{_fmt(v.row.get(col))}</td></tr>" for col, label in SUMMARY)
    hourly = v.hourly
    mid = (
        dict(v.details["hourly_mid_dev_ticks"].iter_rows())
        if isinstance(v.details.get("hourly_mid_dev_ticks"), pl.DataFrame)
        else {}
    )
    charts = "".join(
        [
            bar_chart(hourly["gaps_detected"].cast(pl.Float64).to_list(), "gaps detected per hour"),
            bar_chart(hourly["skew_p99_ms"].to_list(), "clock skew p99 per hour (ms)"),
            bar_chart([mid.get(h) for h in range(24)], "max mid deviation per hour (ticks)"),
        ]
    )
    worst = "".join(
        f"<h3>{html.escape(name)}</h3>{_rows_table(v.details.get(name, []))}"
        for name in ("gaps", "skew", "precision", "agreement")
    )
    levels = json.dumps(v.row.get("mismatches_by_level"))
    return (
        f"<h2>{html.escape(v.instrument.key)}</h2><table>{summary}</table>{charts}"
        f"<p>snapshots by first mismatching level (0 = touch): <code>{html.escape(levels)}</code></p>"
        f"<h3>worst rows</h3>{worst}"
    )


def render_report(day: dt.date, validations: list[DayValidation]) -> str:
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}figure{margin:.3em 0}"
    )
    sections = "".join(_section(v) for v in validations)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Validation {day}</title>"
        f"<style>{style}</style></head><body><h1>Validation report {day} (UTC)</h1>{sections}</body></html>\n"
    )


def write_report(data_dir: Path, day: dt.date, validations: list[DayValidation]) -> Path:
    path = report_path(data_dir, day)
    write_text_atomic(path, render_report(day, validations))
    return path
