"""`freshness` checks: the newest daily partition that should exist by now has been materialized.

Day D is due `checks.freshness_max_lag_hours` after it ends (D+1 00:00 UTC). The check
passes when the newest due day is materialized; it fails with WARN severity otherwise and lists
the due days of the last week that are missing. It is not blocking: stale data is a delay, not
bad data. Dagster's `build_time_partition_freshness_checks` expresses the deadline as a cron
tick within a day, which cannot say "30 hours after the day ends", hence this equivalent.

Freshness judges "now", not the day a run materializes, so it is judged only in the
`freshness_checks` job (hourly schedule, automation/schedules.py). Other runs that select the
assets (backfills, `market-pipeline run`, the demo) include the check but it yields no result there.

Every daily-partitioned asset of the code location gets one: automation/definitions.py derives
the list from the assets `market_pipeline.definitions` merged, so a new asset is judged too.
"""

import datetime as dt
from collections.abc import Iterator, Sequence

import dagster as dg

from market_pipeline.defs.common.resources import PipelineSettings

FRESHNESS = "freshness"
FRESHNESS_JOB = "freshness_checks"
LOOKBACK_DAYS = 7


def newest_due_day(now: dt.datetime, lag_hours: float) -> dt.date:
    """The newest day D whose end (D+1 00:00 UTC) is at least `lag_hours` before `now`."""
    return (now - dt.timedelta(hours=lag_hours)).astimezone(dt.UTC).date() - dt.timedelta(days=1)


def freshness_result(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, now: dt.datetime, lag_hours: float, start: dt.date
) -> dg.AssetCheckResult:
    due = newest_due_day(now, lag_hours)
    meta: dict[str, object] = {"newest_due_partition": due.isoformat(), "max_lag_hours": lag_hours}
    if due < start:
        return dg.AssetCheckResult(
            asset_key=asset_key, check_name=FRESHNESS, passed=True, metadata=meta, description="no partition is due yet"
        )
    materialized = instance.get_materialized_partitions(asset_key)
    recent = [due - dt.timedelta(days=i) for i in range(LOOKBACK_DAYS) if due - dt.timedelta(days=i) >= start]
    missing = [d.isoformat() for d in recent if d.isoformat() not in materialized]
    newest = max(materialized) if materialized else None
    meta.update({"newest_materialized_partition": newest or "none", "missing_recent_partitions": missing})
    if newest is not None:
        newest_end = dt.datetime.combine(dt.date.fromisoformat(newest) + dt.timedelta(days=1), dt.time(), dt.UTC)
        meta["hours_since_newest_partition_ended"] = round((now - newest_end).total_seconds() / 3600, 2)
    passed = due.isoformat() in materialized
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=FRESHNESS,
        passed=passed,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=meta,
        description=None if passed else f"partition {due} is overdue (due {lag_hours} h after the day ends)",
    )


def build_freshness_checks(name: str, assets: Sequence[dg.AssetsDefinition | dg.AssetKey]) -> dg.AssetChecksDefinition:
    """One `freshness` check per asset key (of the given assets or keys), in one check step."""
    keys = [key for a in assets for key in ([a] if isinstance(a, dg.AssetKey) else a.keys)]
    specs = [
        dg.AssetCheckSpec(
            FRESHNESS, asset=key, blocking=False, description="The newest due daily partition is materialized."
        )
        for key in keys
    ]

    @dg.multi_asset_check(specs=specs, name=name, can_subset=True)
    def _freshness(
        context: dg.AssetCheckExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> Iterator[dg.AssetCheckResult]:
        if context.run.job_name != FRESHNESS_JOB:
            context.log.info(f"freshness is judged by the {FRESHNESS_JOB} job only; no result in this run")
            return
        settings = pipeline
        now = dt.datetime.now(dt.UTC)
        for check_key in context.selected_asset_check_keys:
            yield freshness_result(
                context.instance,
                check_key.asset_key,
                now,
                settings.checks.freshness_max_lag_hours,
                settings.start_date,
            )

    return _freshness
