"""Days a downstream asset leaves out of a range run because an upstream blocking check failed.

Our per-day checks (`defs/common/checks.py`) are blocking in our sense: a day whose blocking check
failed with ERROR is not processed by the downstream stages. They are not blocking in Dagster's
sense, which would fail the check step and skip every downstream step, i.e. every day of a range
run: Dagster 1.13 has no public way for one step to materialize only part of its partition range
or to record some partitions as failed (dagster-io/dagster#17836). So the check step succeeds and
each downstream asset calls `days_to_run(context)` first, which

- reads this run's check evaluations of the asset's direct upstream assets, and this run's
  materializations of them (a day an upstream asset skipped carries `skipped` metadata), from
  the instance (`blocked_days`);
- records each blocked day in the asset's per-partition metadata as `skipped: <reason>` (the day
  is still materialized in Dagster's sense: the step covers the whole range), logs it, and
- returns the days left to process; when no day is left it fails the step with the reasons, so a
  single-day run whose day is blocked fails as before.

The checks on a downstream asset do not evaluate the days it skipped (there is nothing to judge).

The blocking checks still declare `blocking=True` on their specs, so Dagster keeps ordering the
downstream steps after the check step, which is what makes the evaluations readable here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import dagster as dg

from market_pipeline.defs.common.json_logs import stage_log_fields

SKIPPED = "skipped"  # per-partition metadata of a day a downstream asset left out: the reason
BLOCKS_DOWNSTREAM = "blocks_downstream"  # check evaluation metadata: our notion of blocking


def _value(metadata: dict[str, dg.MetadataValue], name: str) -> object:
    value = metadata.get(name)
    return getattr(value, "value", value)


def blocked_days(
    instance: dg.DagsterInstance,
    run_id: str,
    days: Iterable[dt.date],
    *,
    checked: Iterable[dg.AssetKey] = (),
    skipped_by: Iterable[dg.AssetKey] = (),
) -> dict[dt.date, str]:
    """The days among `days` that results of run `run_id` block, each with its reason.

    A day is blocked when, in that run, a check on a `checked` asset evaluated it as failed with
    ERROR and the check blocks downstream (metadata `blocks_downstream`), or a `skipped_by` asset
    recorded it as `skipped`. Reasons are "<asset> <check>: <description>", one per line.
    """
    checked, skipped_by, wanted = set(checked), set(skipped_by), {day.isoformat(): day for day in days}
    reasons: dict[dt.date, list[str]] = {}

    def add(partition: str | None, reason: str) -> None:
        day = wanted.get(partition or "")
        if day is not None and reason not in reasons.setdefault(day, []):
            reasons[day].append(reason)

    kinds = {dg.DagsterEventType.ASSET_CHECK_EVALUATION, dg.DagsterEventType.ASSET_MATERIALIZATION}
    cursor = None
    while True:
        page = instance.get_records_for_run(run_id, cursor=cursor, of_type=kinds, limit=1000)
        for record in page.records:
            entry = record.event_log_entry
            evaluation = entry.asset_check_evaluation
            if evaluation is not None and evaluation.asset_key in checked:
                failed = not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
                if failed and _value(evaluation.metadata, BLOCKS_DOWNSTREAM) is True:
                    why = (evaluation.description or "failed").strip()
                    add(evaluation.partition, f"{evaluation.asset_key.to_user_string()} {evaluation.check_name}: {why}")
            materialization = entry.asset_materialization
            if materialization is not None and materialization.asset_key in skipped_by:
                reason = _value(materialization.metadata, SKIPPED)
                if isinstance(reason, str):
                    for line in reason.splitlines():
                        add(materialization.partition, line)
        if not page.has_more:
            break
        cursor = page.cursor
    return {day: "\n".join(lines) for day, lines in sorted(reasons.items())}


def days_to_run(context: dg.AssetExecutionContext, checks_block: bool = True) -> list[dt.date]:
    """The run's days (`context.partition_keys`) minus those an upstream blocking check failed
    (with `checks_block`; always minus those an upstream asset skipped).

    Each left-out day gets `skipped: <reason>` in the partition metadata of every asset the step
    materializes. Fails the step (`dg.Failure`) when every day is blocked.
    """
    days = [dt.date.fromisoformat(key) for key in context.partition_keys]
    own = set(context.assets_def.keys)
    upstream = {key for key in context.assets_def.dependency_keys if key not in own}
    checked = upstream if checks_block else set()
    blocked = blocked_days(context.instance, context.run.run_id, days, checked=checked, skipped_by=upstream)
    if not blocked:
        return days
    outputs = sorted(context.selected_asset_keys, key=lambda key: key.to_user_string())
    for day, reason in blocked.items():
        context.log.warning(
            f"{', '.join(k.to_user_string() for k in outputs)} {day}: skipped: {reason}",
            extra=stage_log_fields(outputs, day),
        )
        for key in outputs:
            context.add_asset_metadata({SKIPPED: reason}, asset_key=key, partition_key=day.isoformat())
    left = [day for day in days if day not in blocked]
    if not left:
        raise dg.Failure(
            description="every day of the run failed an upstream blocking check:\n"
            + "\n".join(f"- {day}: {reason}" for day, reason in blocked.items()),
            metadata={SKIPPED: {day.isoformat(): reason for day, reason in blocked.items()}},
        )
    return left
