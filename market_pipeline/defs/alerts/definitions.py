"""The alerts stage: sensors that turn failed checks and failed runs into alerts."""

import dagster as dg

from market_pipeline.defs.alerts.sensors import build_alert_sensors


def build_alert_definitions(sensor_interval_seconds: int) -> dg.Definitions:
    """The alert sensors, evaluated every `sensor_interval_seconds` (alerts.sensor_interval_seconds)."""
    return dg.Definitions(sensors=build_alert_sensors(sensor_interval_seconds))
