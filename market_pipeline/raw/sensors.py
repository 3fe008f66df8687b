"""Sensors that notice new days at the source (filled in by the automation work)."""

raw_sensors: list = []
