"""Daily-partitioned asset checks that report one evaluation per day of a single-run backfill.

A Dagster 1.13 check step accepts one `AssetCheckResult` per check and run, and such a result
carries no partition. A run over a range of days is one step, so the checks here yield one
`AssetCheckEvaluation` per day with `partition=<day>` instead (the specs are partitioned by
`daily_partitions` and declared subsettable, which makes the step's output optional). Each day
is judged on its own and the UI shows the check per partition.

Blocking: after the step, Dagster fails it if any yielded evaluation of a blocking check failed
with ERROR severity, and every downstream step of the run is skipped, so one bad day stops
the downstream assets for all the days of that run. WARN failures never stop anything.
"""


import datetime as dt
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import dagster as dg
from dagster._core.definitions.metadata import normalize_metadata  # not exported by dagster 1.13

from market_pipeline.defs.common.partitions import daily_partitions
from market_pipeline.defs.common.recorded import missing_instruments
from market_pipeline.defs.common.resources import PipelineResource
from market_pipeline.settings import Instrument, PipelineSettings

ERROR = dg.AssetCheckSeverity.ERROR
WARN = dg.AssetCheckSeverity.WARN


@dataclass
class Finding:
    """One instrument-day's verdict: severity None means it passed."""

    severity: dg.AssetCheckSeverity | None
    summary: str
    figures: dict[str, float | int | str | None] = field(default_factory=dict)
    worst_rows: list[dict[str, object]] = field(default_factory=list)


InstrumentDayCheck = Callable[[dg.AssetCheckExecutionContext, PipelineSettings, Instrument, dt.date], Finding]


def day_evaluation(
    asset_key: dg.AssetKey, check_name: str, blocking: bool, day: dt.date, findings: dict[str, Finding]
) -> dg.AssetCheckEvaluation:
    """Combine the instruments of one day: the worst severity wins, every figure is kept."""
    failed = {key: f for key, f in findings.items() if f.severity is not None}
    severity = ERROR if any(f.severity == ERROR for f in failed.values()) else WARN
    metadata: dict[str, object] = {"dt": day.isoformat(), "failing_instruments": sorted(failed)}
    for key, finding in findings.items():
        for name, value in finding.figures.items():
            if value is not None:
                metadata[f"{key} {name}"] = value
        if finding.worst_rows:
            metadata[f"{key} worst_rows"] = dg.MetadataValue.json(finding.worst_rows)
    description = "; ".join(f"{key}: {f.summary}" for key, f in (failed or findings).items())
    return dg.AssetCheckEvaluation(
        asset_key=asset_key,
        check_name=check_name,
        passed=not failed,
        severity=severity if failed else ERROR,
        description=description[:2000],
        metadata=normalize_metadata(metadata),  # the event takes MetadataValue objects
        blocking=blocking,
        partition=day.isoformat(),
    )


def daily_check(
    asset: dg.AssetsDefinition | dg.AssetKey,
    name: str,
    *,
    blocking: bool,
    description: str,
    additional_deps: Iterable[dg.AssetsDefinition] = (),
    pool: str | None = None,
) -> Callable[[InstrumentDayCheck], dg.AssetChecksDefinition]:
    """Make `fn(context, settings, instrument, day) -> Finding` a per-day partitioned check."""
    asset_key = asset.key if isinstance(asset, dg.AssetsDefinition) else asset
    spec = dg.AssetCheckSpec(
        name,
        asset=asset_key,
        description=description,
        blocking=blocking,
        partitions_def=daily_partitions,
        additional_deps=[dep.key for dep in additional_deps],
    )

    def wrap(fn: InstrumentDayCheck) -> dg.AssetChecksDefinition:
        @dg.multi_asset_check(
            specs=[spec], name=f"{asset_key.to_python_identifier()}_{name}", can_subset=True, pool=pool,
            description=description,
        )
        def _check(
            context: dg.AssetCheckExecutionContext, pipeline: PipelineResource
        ) -> Iterator[dg.AssetCheckEvaluation]:
            if not (context.has_partition_key or context.has_partition_key_range):
                raise dg.Failure(f"check {name} on {asset_key.to_user_string()} needs a partition or a range of days")
            settings = pipeline.settings()
            for key in context.partition_keys:
                day = dt.date.fromisoformat(key)
                missing = missing_instruments(context.instance, day)
                findings = {
                    i.key: Finding(None, "no data at the source this day (recorded by raw_book_deltas)")
                    if i.key in missing else fn(context, settings, i, day)
                    for i in settings.universe
                }
                evaluation = day_evaluation(asset_key, name, blocking, day, findings)
                if not evaluation.passed:
                    context.log.warning(f"{asset_key.to_user_string()} {name} {key} {evaluation.severity.value}: "
                                        f"{evaluation.description}")
                yield evaluation

        _check.evaluate = fn  # type: ignore[attr-defined]  # the plain function, for tests and tools
        return _check

    return wrap
