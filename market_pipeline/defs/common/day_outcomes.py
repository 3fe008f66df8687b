"""The run history's word on instrument-days, for the lake read API (`market_pipeline.lake`).

A day is usable for a lake table when, for every asset the table depends on
(`core/read/verdicts.TABLE_ASSETS`), the latest materialization of the day's partition exists, did
not skip the day, its run has no failed blocking check on that asset for the day
(`blocked.blocked_days`, the rule the downstream stages follow), and the instrument's raw import did
not fail that day (`recorded.skipped_instruments`). Read through the public DagsterInstance API only.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

import dagster as dg

from market_pipeline.core.read.verdicts import TABLE_ASSETS
from market_pipeline.defs.common.blocked import blocked_days
from market_pipeline.defs.common.recorded import latest_materialization, skipped_instruments


class RunHistory:
    """`DayVerdicts` from a Dagster instance (the one of DAGSTER_HOME by default)."""

    available = True

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance

    def unusable(self, table: str, instrument_key: str, days: list[dt.date]) -> dict[dt.date, str]:
        reasons: dict[dt.date, list[str]] = defaultdict(list)
        assets = TABLE_ASSETS.get(table, ())
        for asset in assets:
            key = dg.AssetKey(asset)
            runs: dict[str, list[dt.date]] = defaultdict(list)
            for day in days:
                record = latest_materialization(self.instance, key, day.isoformat())
                if record is None:
                    reasons[day].append(f"{asset}: no materialization in the run history (DAGSTER_HOME)")
                else:
                    runs[record.run_id].append(day)
            for run_id, run_days in runs.items():
                for day, why in blocked_days(self.instance, run_id, run_days, checked=[key], skipped_by=[key]).items():
                    if why not in reasons[day]:  # a downstream asset's skip repeats the upstream check's reason
                        reasons[day].append(why)
        never = f"not materialized: no run in the run history (DAGSTER_HOME) covered it ({', '.join(assets)})"
        for day in days:
            if len(reasons[day]) == len(assets) and all("no materialization" in why for why in reasons[day]):
                reasons[day] = [never]
            failed_import = skipped_instruments(self.instance, day).get(instrument_key)
            if failed_import is not None:
                reasons[day].append(f"raw import failed for {instrument_key}: {failed_import}")
        return {day: "; ".join(lines) for day, lines in sorted(reasons.items()) if lines}
