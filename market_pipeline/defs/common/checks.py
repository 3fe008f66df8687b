"""Daily-partitioned asset checks that report one evaluation per day of a single-run backfill.

A Dagster 1.13 check step accepts one `AssetCheckResult` per check and run, and such a result
carries no partition. A run over a range of days is one step, so the checks here yield one
`AssetCheckEvaluation` per day with `partition=<day>` instead (the specs are partitioned by the
code location's daily partitions, given to `build_daily_checks`, and declared subsettable, which
makes the step's output optional). Each day is judged on its own and the UI shows the check per
partition.

Each evaluation also names the materialization it judged (`target_materialization_data`: the day's
latest materialization of the checked asset; its type comes from `dagster_compat`). Dagster fills
that in itself only for an
`AssetCheckResult` of a single-partition step; the UI's per-partition check status (the check's
Partitions tab, `AssetCheck.partitionStatuses` in GraphQL) counts an evaluation only when it
targets the partition's latest materialization, so without it every day of a range run shows as
missing although the evaluations are stored.

Blocking, in our sense: a day whose blocking check failed with ERROR is left out by the downstream
assets of the run, and only that day (`defs/common/blocked.py`: each downstream asset gets its days
from `days_to_run`); the other days of a range run complete. WARN failures never stop anything.
Dagster's own notion is narrower: after a check step it fails the step when any yielded evaluation
with `blocking=True` failed with ERROR, and then skips every downstream step of the run, i.e. every
day of a range (dagster/_core/execution/plan/execute_step.py). So the specs keep `blocking=True`,
which makes Dagster run the downstream steps after the check step, but a failed ERROR evaluation
goes out with `blocking=False` (it would fail the step) and says `blocks_downstream: true` in its
metadata instead; every evaluation carries that flag.
"""

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import dagster as dg

from market_pipeline.core.instruments import Instrument
from market_pipeline.core.quality.lake_day import DayFiles
from market_pipeline.core.security.audit import audit_scope
from market_pipeline.defs.common.blocked import BLOCKS_DOWNSTREAM, blocked_days
from market_pipeline.defs.common.dagster_compat import target_materialization
from market_pipeline.defs.common.json_logs import stage_log_fields
from market_pipeline.defs.common.lake_reads import reads_lake
from market_pipeline.defs.common.recorded import latest_materialization, missing_instruments
from market_pipeline.defs.common.resources import PipelineSettings
from market_pipeline.vendors.registry import build_source, source_of

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
    asset_key: dg.AssetKey,
    check_name: str,
    blocking: bool,
    day: dt.date,
    findings: dict[str, Finding],
    target: dg.EventLogRecord | None = None,
) -> dg.AssetCheckEvaluation:
    """Combine the instruments of one day: the worst severity wins, every figure is kept.

    `target` is the day's materialization the evaluation judged (see the module docstring).
    `blocking` is ours: a failed ERROR evaluation of a blocking check says so in its metadata
    (`blocks_downstream`) and is declared non-blocking to Dagster, so that the check step succeeds
    and only this day is left out downstream (see the module docstring)."""
    failed = {key: f for key, f in findings.items() if f.severity is not None}
    severity = ERROR if any(f.severity == ERROR for f in failed.values()) else WARN
    metadata: dict[str, object] = {
        "dt": day.isoformat(),
        "failing_instruments": sorted(failed),
        BLOCKS_DOWNSTREAM: blocking,
    }
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
        metadata=metadata,  # raw values: AssetCheckEvaluation wraps them in MetadataValue itself
        # Dagster fails the check step on a failed ERROR evaluation with blocking=True (all days).
        blocking=blocking and not (failed and severity == ERROR),
        partition=day.isoformat(),
        target_materialization_data=None if target is None else target_materialization(target),
    )


@dataclass(frozen=True)
class DailyCheck:
    """A per-day check on one asset, by key: `build_daily_checks` makes its Dagster definition.

    Calling it (or `.evaluate`) runs the plain function `(context, settings, instrument, day) -> Finding`,
    for tests and tools.
    """

    asset_key: dg.AssetKey
    name: str
    blocking: bool
    description: str
    evaluate: InstrumentDayCheck
    additional_deps: tuple[dg.AssetKey, ...] = ()
    pool: str | None = None

    def __call__(self, *args: object) -> Finding:
        return self.evaluate(*args)  # type: ignore[arg-type]

    def spec(self, partitions_def: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            self.name,
            asset=self.asset_key,
            description=self.description,
            blocking=self.blocking,
            partitions_def=partitions_def,
            additional_deps=list(self.additional_deps),
        )


def build_daily_checks(
    checks: Sequence[DailyCheck], partitions_def: dg.PartitionsDefinition
) -> list[dg.AssetChecksDefinition]:
    """The Dagster definitions of `checks`: one check step per checked asset (and pool), which
    evaluates the run's selected checks of that asset day by day. What every check of a day needs
    from the event log (the days the asset skipped, the instruments without raw data, the judged
    materialization) is read once per asset and day instead of once per check, and a run executing
    a process per step starts one per checked asset instead of one per check. Each check keeps its
    own spec, evaluations, severity and blocking flag; a check that raises fails the step after the
    asset's other checks have yielded their evaluations."""
    groups: dict[tuple[dg.AssetKey, str | None], list[DailyCheck]] = {}
    for check in checks:
        groups.setdefault((check.asset_key, check.pool), []).append(check)
    return [_asset_checks(group, partitions_def) for group in groups.values()]


def _asset_checks(checks: list[DailyCheck], partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    asset_key, pool = checks[0].asset_key, checks[0].pool
    by_key = {dg.AssetCheckKey(asset_key, check.name): check for check in checks}
    label = asset_key.to_user_string()

    @dg.multi_asset_check(
        specs=[check.spec(partitions_def) for check in checks],
        name=f"{asset_key.to_python_identifier()}_checks",
        can_subset=True,
        pool=pool,
        description=f"The daily checks of {label}.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, pipeline: dg.ResourceParam[PipelineSettings]
    ) -> Iterator[dg.AssetCheckEvaluation]:
        if not (context.has_partition_key or context.has_partition_key_range):
            names = ", ".join(check.name for check in checks)
            raise dg.Failure(f"checks {names} on {label} need a partition or a range of days")
        selected = [check for key, check in by_key.items() if key in context.selected_asset_check_keys]
        yield from evaluate_days(context, pipeline, selected)

    @reads_lake
    def evaluate_days(
        context: dg.AssetCheckExecutionContext, settings: PipelineSettings, selected: list[DailyCheck]
    ) -> Iterator[dg.AssetCheckEvaluation]:
        days = [dt.date.fromisoformat(key) for key in context.partition_keys]
        # Days the checked asset left out in this run (an upstream blocking check failed): nothing to judge.
        skipped = blocked_days(context.instance, context.run.run_id, days, skipped_by=[asset_key])
        raised: list[BaseException] = []
        for day in days:
            key = day.isoformat()
            if day in skipped:
                context.log.info(
                    f"{label} {', '.join(c.name for c in selected)} {key}: not evaluated, the asset skipped it",
                    extra=stage_log_fields(asset_key, day),
                )
                continue
            missing = missing_instruments(context.instance, day)
            target = latest_materialization(context.instance, asset_key, key)
            for check in selected:
                try:
                    findings = {
                        i.key: Finding(None, "no data at the source this day (recorded by raw_book_deltas)")
                        if i.key in missing
                        else judged(check, context, settings, i, day)
                        for i in settings.universe
                    }
                except Exception as error:  # the asset's other checks still report; the step fails below
                    context.log.error(
                        f"{label} {check.name} {key} raised {error!r}", extra=stage_log_fields(asset_key, day)
                    )
                    raised.append(error)
                    continue
                evaluation = day_evaluation(asset_key, check.name, check.blocking, day, findings, target)
                if not evaluation.passed:
                    context.log.warning(
                        f"{label} {check.name} {key} {evaluation.severity.value}: {evaluation.description}",
                        extra=stage_log_fields(asset_key, day),
                    )
                yield evaluation
        if raised:
            raise raised[0]

    def judged(
        check: DailyCheck,
        context: dg.AssetCheckExecutionContext,
        settings: PipelineSettings,
        instrument: Instrument,
        day: dt.date,
    ) -> Finding:
        # A measure may store what it derived beside the day (e.g. the skew quantiles): audited.
        with audit_scope("quality.check", settings.data_dir, dt=day, instrument=instrument.key):
            return check.evaluate(context, settings, instrument, day)

    return _check


def daily_check(
    asset: dg.AssetKey | str,
    name: str,
    *,
    blocking: bool,
    description: str,
    additional_deps: Iterable[dg.AssetKey | str] = (),
    pool: str | None = None,
) -> Callable[[InstrumentDayCheck], DailyCheck]:
    """Make `fn(context, settings, instrument, day) -> Finding` a per-day check on the asset `asset`
    (a key: stages refer to each other's assets by key); `build_daily_checks` defines it."""

    def wrap(fn: InstrumentDayCheck) -> DailyCheck:
        return DailyCheck(
            asset_key=dg.AssetKey.from_coercible(asset),
            name=name,
            blocking=blocking,
            description=description,
            evaluate=fn,
            additional_deps=tuple(dg.AssetKey.from_coercible(dep) for dep in additional_deps),
            pool=pool,
        )

    return wrap


def day_files(settings: PipelineSettings, instrument: Instrument, day: dt.date) -> DayFiles:
    """The lake files of one instrument-day, with what its primary source's data can prove."""
    source = source_of(build_source(settings), instrument)
    return DayFiles.of(
        settings.lake_dir,
        instrument,
        day,
        has_agreement=source.book_agreement,
        contiguous=source.sequence_semantics(instrument) == "contiguous",
    )
