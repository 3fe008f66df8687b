"""Schedules of the pipeline (filled in by the automation work)."""

raw_jobs: list = []
raw_schedules: list = []
