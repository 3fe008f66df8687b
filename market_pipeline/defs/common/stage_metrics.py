"""What the raw and book stages report per instrument-day: metrics, and the usage metadata that
`pipeline_metrics` later reads back from the event log (keys `<instrument> seconds`,
`<instrument> events_per_second`, `<instrument> peak_rss_mb`).
"""

from __future__ import annotations

from market_pipeline.core.telemetry.telemetry import StageUsage, gauge

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
