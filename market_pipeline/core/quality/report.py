"""The human-readable daily validation report: one self-contained HTML page that opens with the
verdict of every asset check of the day, then per instrument its figures and inline SVG plots."""

from __future__ import annotations

import datetime as dt
import html
import json
from dataclasses import dataclass
from decimal import Decimal
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
    ("chain_breaks", "capture chain breaks"),
    ("unsynced_rows", "book rows out of sync"),
    ("unsynced_share", "share of book rows out of sync"),
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
    ("checksums_checked", "exchange checksums checked"),
    ("checksum_mismatches", "exchange checksum mismatches"),
    ("checksums_unchecked", "exchange checksums not checkable"),
    ("first_checksum_mismatch_file", "first checksum mismatch: file"),
    ("first_checksum_mismatch_line", "first checksum mismatch: line"),
)


def report_path(data_dir: Path, day: dt.date) -> Path:
    return data_dir / "reports" / f"dt={day.isoformat()}" / REPORT_FILE


def figure_text(value: object) -> str:
    """A figure as the warehouse holds it, never rounded: a float as its shortest text that reads
    back as the same float (`repr`; a whole one without ".0", as a count reads), None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)
    return html.escape(str(value))


def percent_text(share: float) -> str:
    """A share (0..1) as a percentage, the stored value's decimal text moved two places (no float
    multiplication to round it): 0.91376 -> 91.376 %, 0.29 -> 29 %, 1 -> 100 %."""
    return f"{format((Decimal(repr(share)) * 100).normalize(), 'f')} %"


def _figure(column: str, value: object) -> str:
    """A summary figure: shares (columns ending in _share) as percentages, the rest as they are."""
    if column.endswith("_share") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return percent_text(value)
    return figure_text(value)


@dataclass(frozen=True)
class CheckVerdict:
    """One asset check's result for the day, as the run evaluated it."""

    asset: str
    check: str
    passed: bool
    severity: str  # WARN or ERROR (what a failure means)
    description: str

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else self.severity


_VERDICT_ORDER = {"passed": 0, "WARN": 1, "ERROR": 2}
_VERDICT_COLOUR = {"passed": "#2e7d32", "WARN": "#b26a00", "ERROR": "#c62828"}


def _verdicts(verdicts: list[CheckVerdict]) -> str:
    if not verdicts:
        return "<p>No asset check of the day was evaluated in the run that wrote this report.</p>"
    worst = max((v.verdict for v in verdicts), key=lambda x: _VERDICT_ORDER.get(x, 2))
    rows = "".join(
        f"<tr><td>{html.escape(v.asset)}</td><td>{html.escape(v.check)}</td>"
        f'<td style="color:{_VERDICT_COLOUR.get(v.verdict, "#c62828")};font-weight:bold">{html.escape(v.verdict)}</td>'
        f"<td>{html.escape(v.description)}</td></tr>"
        for v in sorted(verdicts, key=lambda v: (-_VERDICT_ORDER.get(v.verdict, 2), v.asset, v.check))
    )
    return (
        f'<p>Verdict: <b style="color:{_VERDICT_COLOUR.get(worst, "#c62828")}">{html.escape(worst)}</b> '
        f"({sum(v.passed for v in verdicts)} of {len(verdicts)} checks passed)</p>"
        f"<table><tr><th>asset</th><th>check</th><th>verdict</th><th>description</th></tr>{rows}</table>"
    )


def _axis_value(value: float, unit: str) -> str:
    """`value` with its unit: "2158 ms", "12.5 %", "1 tick", "3 ticks"; a count has none ("3")."""
    if not unit:
        return f"{value:.4g}"
    if value == 1 and len(unit) > 2 and unit.endswith("s"):  # a word: one tick, not "1 ticks"
        unit = unit[:-1]
    return f"{value:.4g} {unit}"


def bar_chart(values: list[float | None], title: str, unit: str, width: int = 480, height: int = 110) -> str:
    """An SVG bar chart of 24 hourly values (None is an empty bar), the hours of the UTC day across.

    The y axis runs from 0 to the largest value, with its unit ("" for a count, which the title
    names: "1 gaps" read wrong); a chart without any value above 0 says so instead of inventing a
    scale of 1. Values in "%" are shares already multiplied by 100. The right margin holds half of
    the last hour label, "24:00".
    """
    left, right, bottom, top_margin = 46, 16, 16, 16
    plot_w, plot_h = width - left - right, height - bottom - top_margin
    finite = [v for v in values if v is not None]
    top = max(finite, default=0.0)
    bar = plot_w / max(len(values), 1)
    parts = [
        f'<text x="0" y="10" font-size="10">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{top_margin}" x2="{left}" y2="{top_margin + plot_h}" stroke="#888"/>',
        f'<line x1="{left}" y1="{top_margin + plot_h}" x2="{left + plot_w}" y2="{top_margin + plot_h}" stroke="#888"/>',
        f'<text x="{left - 3}" y="{top_margin + plot_h}" font-size="9" text-anchor="end">0</text>',
    ]
    if top > 0:
        parts.append(
            f'<text x="{left - 3}" y="{top_margin + 8}" font-size="9" text-anchor="end">'
            f"{html.escape(_axis_value(top, unit))}</text>"
        )
    else:
        note = "0 in every hour" if finite else "no values"
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top_margin + plot_h / 2:.1f}" font-size="10" '
            f'text-anchor="middle" fill="#666">{note}</text>'
        )
    for hour in range(0, 25, 6):
        x = left + hour * bar
        parts.append(f'<text x="{x:.1f}" y="{height - 3}" font-size="9" text-anchor="middle">{hour:02d}:00</text>')
    for i, v in enumerate(values):
        if v is None or top <= 0:
            continue
        h = (v / top) * plot_h
        parts.append(
            f'<rect x="{left + i * bar + 1:.1f}" y="{top_margin + plot_h - h:.1f}" width="{bar - 2:.1f}" '
            f'height="{h:.1f}" fill="#4a78b0"><title>{i:02d}:00-{i + 1:02d}:00 UTC: '
            f"{figure_text(v)}{' ' + unit if unit else ''}</title></rect>"
        )
    return (
        f'<figure><svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="{html.escape(title)}">{"".join(parts)}</svg></figure>'
    )


def _rows_table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "<p>none</p>"
    head = "".join(f"<th>{html.escape(k)}</th>" for k in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{figure_text(v)}</td>" for v in r.values()) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(v: DayValidation) -> str:
    summary = "".join(f"<tr><th>{label}</th><td>{_figure(col, v.row.get(col))}</td></tr>" for col, label in SUMMARY)
    hourly = v.hourly
    mid = (
        dict(v.details["hourly_mid_dev_ticks"].iter_rows())
        if isinstance(v.details.get("hourly_mid_dev_ticks"), pl.DataFrame)
        else {}
    )
    charts = "".join(
        [
            bar_chart(hourly["gaps_detected"].cast(pl.Float64).to_list(), "gaps detected per hour (UTC)", ""),
            bar_chart(
                hourly.select(
                    pl.when(pl.col("book_rows") > 0).then(pl.col("unsynced_rows") * 100 / pl.col("book_rows"))
                )
                .to_series()
                .to_list(),
                "book rows out of sync per hour (UTC)",
                "%",
            ),
            bar_chart(hourly["skew_p99_ms"].to_list(), "clock skew p99 per hour (UTC)", "ms"),
            bar_chart([mid.get(h) for h in range(24)], "max mid deviation per hour (UTC)", "ticks"),
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


def render_report(day: dt.date, validations: list[DayValidation], verdicts: list[CheckVerdict]) -> str:
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:left}figure{margin:.3em 0}"
    )
    sections = "".join(_section(v) for v in validations)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Validation {day}</title>"
        f"<style>{style}</style></head><body><h1>Validation report {day} (UTC)</h1>"
        f"<h2>Checks</h2>{_verdicts(verdicts)}{sections}</body></html>\n"
    )


def write_report(data_dir: Path, day: dt.date, validations: list[DayValidation], verdicts: list[CheckVerdict]) -> Path:
    path = report_path(data_dir, day)
    write_text_atomic(path, render_report(day, validations, verdicts))
    return path
