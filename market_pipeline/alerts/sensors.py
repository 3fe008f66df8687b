"""Sensors that turn failed checks and runs into alerts (filled in by the alerts work)."""

alert_sensors: list = []
