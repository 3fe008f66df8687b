"""Metric recording API used by every stage (stub: the observability work backs it with OpenTelemetry)."""

from __future__ import annotations


def count(name: str, value: float = 1, **attributes: object) -> None:
    """Add to a counter, e.g. count("mdp_alerts_sent_total", 1, channel="webhook")."""


def observe(name: str, value: float, **attributes: object) -> None:
    """Record one value of a histogram, e.g. observe("mdp_stage_duration_seconds", 3.2, stage="raw")."""


def gauge(name: str, value: float, **attributes: object) -> None:
    """Set a gauge, e.g. gauge("mdp_peak_memory_bytes", rss, stage="books")."""
