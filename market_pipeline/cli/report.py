"""The summary printed after a range run (`run` and `demo`): assets, rows, checks, failures, outputs."""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
import textwrap
from collections import defaultdict
from typing import TYPE_CHECKING

from market_pipeline.cli.agreement_summary import agreement_rows
from market_pipeline.cli.common import EXIT_FAILED, WIDTH, CliError, days_between, fmt_int, format_table, print_lines
from market_pipeline.core.errors import kind_of
from market_pipeline.core.lake.paths import quarantine_dir
from market_pipeline.core.lake.warehouse import WarehouseTarget
from market_pipeline.core.security.scrub import scrub_text
from market_pipeline.settings import PipelineSettings

if TYPE_CHECKING:
    import dagster as dg

    from market_pipeline.cli.execution import RangeRun

# The vendor tables the raw stage exposes as DuckDB views raw.<table> (hive columns exchange,
# symbol, dt). Views that do not exist yet are skipped.
RAW_VIEWS = ("trades", "book", "book_delta_v2")
BARS_SUMMARY = "ohlcv_bars_summary"  # the bars stage's warehouse table


def print_run_summary(run: RangeRun, settings: PipelineSettings, verbosity: int = 0) -> None:
    """Everything a user wants to know after a range run, readable in 100 columns."""
    result = run.result
    status = "SUCCESS" if run.success else "FAILURE"
    days = f"{run.days} day" + ("s" if run.days != 1 else "")
    print()
    print(f"run {result.run_id}: {status}")
    print(f"  {run.start}..{run.end} ({days}), {len(run.asset_keys)} asset(s) in one run")
    checks = run.check_evaluations
    if checks:  # first: what failed is what a user reads the summary for
        print()
        print_lines(check_summary(checks, verbosity))
    print()
    print("Assets")
    print_lines(_asset_rows(run))
    print()
    print(f"Rows per day and instrument in the warehouse ({run.start}..{run.end})")
    print_lines(raw_row_counts(settings.warehouse, run.start, run.end))
    bars = bar_counts(settings.warehouse, run.start, run.end)
    if bars:
        print()
        print(f"OHLCV bars per day and instrument (main.{BARS_SUMMARY}; an interval without trades has no bar)")
        print_lines(bars)
    agreement = agreement_rows(settings.warehouse, run.start, run.end)
    if agreement:
        print()
        print("Source agreement (main.source_agreement): the reference's messages and trades the vendor lacks,")
        print("messages it received at another time, share of bookTickers its in-sync book agrees with")
        print_lines(agreement)
    skipped = skipped_days(run)
    if skipped:
        print()
        print(
            "Skipped days and instrument-days (an import was rejected or an upstream blocking check failed; "
            "the rest completed)"
        )
        print_lines(_skipped_rows(skipped))
    print()
    print("Outputs")
    print_lines(output_locations(settings))
    if not run.success:
        print_failures(result, verbosity)
    elif skipped:
        # The run succeeded for the other days; the exit code still says that some did not.
        days = sorted({day for by_day in skipped.values() for day in by_day})
        raise CliError(
            f"{len(days)} day(s) did not complete ({', '.join(days)}; see Skipped days for why): "
            "what was left out was skipped downstream, the rest completed",
            EXIT_FAILED,
        )


def skipped_days(run: RangeRun) -> dict[dg.AssetKey, dict[str, str]]:
    """Per asset, the days it left out (partition metadata `skipped`, defs/common/blocked.py), or
    left some instruments out of (`skipped_instruments` of a raw table), and why."""
    from market_pipeline.defs.common.blocked import SKIPPED
    from market_pipeline.defs.common.recorded import SKIPPED_INSTRUMENTS

    found: dict[dg.AssetKey, dict[str, str]] = defaultdict(dict)
    for mat in run.materializations:
        reason = getattr(mat.metadata.get(SKIPPED), "value", None)
        instruments = getattr(mat.metadata.get(SKIPPED_INSTRUMENTS), "value", None)
        if isinstance(instruments, dict) and instruments:
            reason = "\n".join(f"{key} only: {why}" for key, why in sorted(instruments.items()))
        if isinstance(reason, str) and mat.partition:
            found[mat.asset_key][mat.partition] = reason
    return dict(found)


def _skipped_rows(skipped: dict[dg.AssetKey, dict[str, str]]) -> list[str]:
    """Per skipped day: the assets that left it out, then each reason in full (wrapped, not clipped)."""
    by_day: dict[tuple[str, str], list[str]] = defaultdict(list)
    for key, days in skipped.items():
        for day, reason in days.items():
            by_day[(day, reason)].append(key.to_user_string())
    lines: list[str] = []
    for (day, reason), assets in sorted(by_day.items()):
        lines += textwrap.wrap(
            f"{day}  {', '.join(sorted(assets))}", width=WIDTH, initial_indent="  ", subsequent_indent=" " * 14
        )
        lines += wrapped(reason, indent=" " * 12, first_indent="    because ")
    return lines


def _node_name(run: RangeRun, key: dg.AssetKey) -> str | None:
    try:
        return run.asset_graph.get(key).assets_def.node_def.name
    except Exception:  # an asset without an op of its own
        return None


def _asset_rows(run: RangeRun) -> list[str]:
    result = run.result
    materialized: dict[dg.AssetKey, set[str | None]] = defaultdict(set)
    rows: dict[dg.AssetKey, float] = defaultdict(float)
    has_rows: set[dg.AssetKey] = set()
    left_out = skipped_days(run)
    for mat in run.materializations:
        if mat.partition in left_out.get(mat.asset_key, {}):
            continue  # materialized in Dagster's sense (the step covers the range), but left out
        materialized[mat.asset_key].add(mat.partition)
        value = mat.metadata.get("rows")
        number = getattr(value, "value", None)
        if isinstance(number, (int, float)) and not isinstance(number, bool):
            rows[mat.asset_key] += number
            has_rows.add(mat.asset_key)
    failed = result.get_failed_step_keys()
    skipped = {e.step_key for e in result.get_step_skipped_events()}
    succeeded = {e.step_key for e in result.get_step_success_events()}

    def steps_of(name: str | None, steps: set[str]) -> bool:
        return name is not None and any(s == name or s.startswith(name + ".") for s in steps)

    table = []
    for key in run.asset_keys:
        name = _node_name(run, key)
        if steps_of(name, failed):
            status = "FAILED"
        elif left_out.get(key):
            status = f"{len(left_out[key])} day(s) skipped"
        elif materialized.get(key) or steps_of(name, succeeded):
            status = "ok"
        elif steps_of(name, skipped):
            status = "skipped"
        else:
            status = "not run"
        partitioned = run.asset_graph.get(key).partitions_def is not None
        count = len(materialized.get(key, ()))
        done = f"{count}/{run.days}" if partitioned else ("yes" if count else "no")
        table.append([key.to_user_string(), status, done, fmt_int(rows[key]) if key in has_rows else "-"])
    return format_table(["asset", "status", "materialized", "rows"], table, right=[False, False, True, True])


def raw_row_counts(target: WarehouseTarget, start: dt.date, end: dt.date) -> list[str]:
    """Rows per (dt, instrument) in each raw.* view, read-only, as table lines."""
    if not target.exists():
        return [f"  (no warehouse yet at {target.describe()})"]
    import duckdb

    from market_pipeline.core.lake import warehouse

    counts: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    present: list[str] = []
    try:
        with warehouse.connect(target, read_only=True) as con:
            existing = {
                name
                for (name,) in con.execute(
                    "SELECT table_name FROM information_schema.tables "
                    "WHERE table_catalog = current_database() AND table_schema = 'raw'"
                ).fetchall()
            }
            for view in RAW_VIEWS:
                if view not in existing:
                    continue
                present.append(view)
                query = (
                    f"SELECT CAST(dt AS VARCHAR) AS day, exchange || ':' || symbol AS instrument, "
                    f'count(*) FROM raw."{view}" WHERE {days_between(start, end)} GROUP BY ALL'
                )
                for day, instrument, n in con.execute(query).fetchall():
                    counts[(day, instrument)][view] = n
    except duckdb.Error as exc:
        return [f"  (cannot read {target.describe()}: {exc})"]
    if not present:
        return [f"  (no raw views in {target.describe()} yet)"]
    if not counts:
        return [f"  (no rows between {start} and {end} in raw.{', raw.'.join(present)})"]
    table = []
    totals = dict.fromkeys(present, 0)
    for day, instrument in sorted(counts):
        row = [day, instrument]
        for view in present:
            n = counts[(day, instrument)].get(view)
            totals[view] += n or 0
            row.append(fmt_int(n))
        table.append(row)
    table.append(["total", "", *(fmt_int(totals[v]) for v in present)])
    headers = ["dt", "instrument", *(f"raw.{v}" for v in present)]
    return format_table(headers, table, right=[False, False, *([True] * len(present))])


def wrapped(text: str, indent: str = "      ", first_indent: str | None = None) -> list[str]:
    """`text` whole (secrets scrubbed), wrapped to the summary's width; no break inside BTC-USDT or a
    path (they stay whole to copy). Each paragraph's first line starts with `first_indent` if given."""
    lines: list[str] = []
    for paragraph in scrub_text(text).splitlines():
        lines += textwrap.wrap(
            paragraph,
            width=WIDTH,
            initial_indent=indent if first_indent is None else first_indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )
    return lines


def table_with_notes(headers: list[str], rows: list[list[object]], notes: list[str]) -> list[str]:
    """A table with each row's note (a description) in full on the lines under the row."""
    lines = format_table(headers, rows)
    out = lines[:2]
    for line, note in zip(lines[2:], notes, strict=True):
        out += [line, *wrapped(note)]
    return out


def bar_counts(target: WarehouseTarget, start: dt.date, end: dt.date) -> list[str]:
    """Bars per (dt, instrument) and interval, and the trades in them, from the warehouse summary
    `ohlcv_bars_summary`, read-only, as table lines; none when the table or its rows are absent."""
    if not target.exists():
        return []
    import duckdb

    from market_pipeline.core.lake import warehouse

    query = (
        "SELECT CAST(dt AS VARCHAR), exchange || ':' || symbol, interval, bars, trades "
        f"FROM main.{BARS_SUMMARY} WHERE {days_between(start, end)} ORDER BY ALL"
    )
    try:
        with warehouse.connect(target, read_only=True) as con:
            found = con.execute(query).fetchall()
    except duckdb.CatalogException:  # no bars materialized in this warehouse yet
        return []
    except duckdb.Error as exc:
        return [f"  (cannot read {target.describe()}: {exc})"]
    intervals = sorted({row[2] for row in found}, key=lambda name: (name[-1] == "h", int(name[:-1])))
    table: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for day, instrument, interval, bars, trades in found:
        table[(day, instrument)][interval] = bars
        table[(day, instrument)]["trades"] = trades
    rows = [
        [day, instrument, *(fmt_int(counts.get(i)) for i in intervals), fmt_int(counts["trades"])]
        for (day, instrument), counts in sorted(table.items())
    ]
    headers = ["dt", "instrument", *(f"bars {i}" for i in intervals), "trades"]
    return format_table(headers, rows, right=[False, False, *([True] * (len(intervals) + 1))]) if rows else []


def check_summary(checks: list[dg.AssetCheckEvaluation], verbosity: int = 0) -> list[str]:
    """The failed evaluations in full, the passed ones as counts per asset (every row with -v)."""
    failed = [c for c in checks if not c.passed]
    passed = len(checks) - len(failed)
    lines = [f"Asset checks: {len(failed)} failed, {passed} passed" + ("" if verbosity else " (all rows: --verbose)")]
    if verbosity:
        return lines + _check_rows(checks)
    if failed:
        lines += _check_rows(failed)
    per_asset: dict[str, int] = defaultdict(int)
    for c in checks:
        per_asset[c.asset_key.to_user_string()] += c.passed
    counts = ", ".join(f"{asset} {n}" for asset, n in sorted(per_asset.items()) if n)
    if counts:
        lines += wrapped(f"passed per asset: {counts}", indent="    ", first_indent="  ")
    return lines


def _check_rows(checks: list[dg.AssetCheckEvaluation]) -> list[str]:
    """One row per evaluation, the failed first, each with its description."""
    with_partition = any(getattr(c, "partition", None) for c in checks)
    table, notes = [], []
    for c in sorted(checks, key=lambda c: (c.passed, c.asset_key.to_user_string(), c.check_name, str(c.partition))):
        # A passed evaluation still carries the check's default severity; show it only on failure.
        severity = "" if c.passed else getattr(c.severity, "value", str(c.severity))
        row = [c.asset_key.to_user_string(), c.check_name]
        if with_partition:
            row.append(c.partition or "")
        table.append([*row, "passed" if c.passed else "FAILED", severity])
        notes.append(c.description or "")
    headers = ["asset", "check", *(["partition"] if with_partition else []), "result", "severity"]
    return table_with_notes(headers, table, notes)


def output_locations(settings: PipelineSettings) -> list[str]:
    """Where the pipeline writes, with the optional outputs listed only when they exist."""
    data_dir = settings.data_dir.resolve()
    lake = settings.lake_dir.resolve()
    quarantine = quarantine_dir(lake)
    rows = [
        ["data dir", str(data_dir)],
        ["lake", str(lake)],
        [
            "warehouse",
            settings.warehouse.describe() + ("" if settings.warehouse.exists() else " (not created)"),
        ],
    ]
    if quarantine.is_dir():
        files = sum(1 for p in quarantine.rglob("*") if p.is_file())
        rows.append(["quarantine", f"{quarantine} ({files} file{'s' if files != 1 else ''})"])
    else:
        rows.append(["quarantine", f"{quarantine} (empty)"])
    if os.environ.get("DAGSTER_HOME"):
        rows.append(["dagster", f"{os.environ['DAGSTER_HOME']} (run history)"])
    for label, path in (
        ("reports", data_dir / "reports"),
        ("alerts", data_dir / "alerts" / "alerts.jsonl"),
        ("metrics", data_dir / "metrics"),
    ):
        if path.exists():
            rows.append([label, str(path)])
    return [f"  {label:<11} {where}" for label, where in rows]


def _error_lines(error, verbosity: int) -> list[str]:
    """The messages of an error and its causes, without Dagster's framework stack traces; from a
    PipelineError on, its message alone (it names the setting, file or row and what to check; its
    causes are the library errors it translated)."""
    if verbosity >= 2:
        return error.to_string().rstrip().splitlines()
    lines: list[str] = []
    seen = error
    while seen is not None:
        if kind_of([seen.cls_name]) is not None:
            return _without_class(seen.message.strip(), seen.cls_name).splitlines()
        message = seen.message.strip()
        if message and message not in lines:
            lines.append(message)
        seen = seen.cause
    return "\n".join(lines).splitlines()


def _without_class(message: str, cls_name: str) -> str:
    """A serialized error's message without the `module.Class: ` Dagster puts before it."""
    head, found, rest = message.partition(f"{cls_name}: ")
    return rest if found and re.fullmatch(r"[\w.]*", head) else message


def print_failures(result: dg.ExecuteInProcessResult, verbosity: int = 0) -> None:
    """Each failed step's message on stderr (a dg.Failure's description lists quarantined files)."""
    err = sys.stderr
    print(file=err)
    print("error: the run failed", file=err)
    failures = result.get_step_failure_events()
    for event in failures:
        data = event.step_failure_data
        user = data.user_failure_data
        if user is not None and user.description:
            lines = user.description.rstrip().splitlines()
        elif data.error is not None:
            lines = _error_lines(data.error, verbosity)
        else:
            lines = ["(no error message)"]
        print(f"  step {event.step_key} failed:", file=err)
        for line in lines:
            print(textwrap.indent(scrub_text(line), "    "), file=err)  # print() bypasses the log filter
    if not failures:
        try:
            event = result.get_run_failure_event()
            message = event.message or ""
        except Exception:
            message = "the run did not succeed and Dagster reported no step failure"
        print(textwrap.indent(scrub_text(message.rstrip()), "  "), file=err)


ALERT_FIGURES_SHOWN = 6  # scalar figures of an alert printed in the summary; alerts.jsonl has them all


def alert_fields(record: dict) -> list[str]:
    """An alert record as readable fields: who, what, when, where to look, then its first figures."""
    webhook = record.get("delivery", {}).get("webhook", {})
    fields = [
        ("kind", record.get("kind")),
        ("severity", record.get("severity")),
        ("asset", record.get("asset")),
        ("check", record.get("check")),
        ("partitions", ", ".join(record.get("partitions") or [])),
        ("occurred at", record.get("occurred_at")),
        ("run", record.get("run_url") or record.get("run_id")),
        ("key", record.get("key")),
        ("webhook", webhook.get("status")),
    ]
    lines = [f"  {name:<12} {value}" for name, value in fields if value not in (None, "")]
    lines.append("  description")
    lines += wrapped(record.get("description") or "")
    figures = record.get("figures") or {}
    scalars = [(k, v) for k, v in figures.items() if isinstance(v, (int, float, str, bool)) or v is None]
    if scalars:
        lines.append(f"  figures      {len(scalars)} value(s), {len(figures) - len(scalars)} table(s); the first:")
        lines += [f"    {k}: {v}" for k, v in scalars[:ALERT_FIGURES_SHOWN]]
    return lines


def print_demo_alerts(settings: PipelineSettings, start: dt.date, end: dt.date, launched_by: str) -> None:
    """After the demo run: its failed checks, the day reports, and the alerts, delivered now
    in-process (no daemon needed) by the same code and with the same keys as the alert sensors."""
    import dagster as dg

    from market_pipeline.cli.dagster_instance import open_instance
    from market_pipeline.cli.dead_runs import LAUNCHED_BY_TAG
    from market_pipeline.core.alerts.jsonl import alerts_path
    from market_pipeline.core.alerts.model import CHECK_FAILED
    from market_pipeline.defs.alerts.sensors import deliver_run_alerts

    with open_instance() as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={LAUNCHED_BY_TAG: launched_by}), limit=1)
        if not runs:
            return
        records = deliver_run_alerts(instance, runs[0].run_id, settings)

    checks = [r for r in records if r["kind"] == CHECK_FAILED]
    print()
    print("Failed checks")
    if checks:
        rows: list[list[object]] = [[r["asset"], r["check"], ",".join(r["partitions"]), r["severity"]] for r in checks]
        notes = [r["description"] for r in checks]
        print_lines(table_with_notes(["asset", "check", "partition", "severity"], rows, notes))
    else:
        print("  (none: every check passed)")

    print()
    print("Reports")
    reports = settings.shared_dir / "reports"
    days = [(start + dt.timedelta(days=i)).isoformat() for i in range((end - start).days + 1)]
    files = sorted(p for p in reports.rglob("*") if p.is_file()) if reports.is_dir() else []
    ours = [p for p in files if any(day in str(p.relative_to(reports)) for day in days)] or files
    print_lines([f"  {p}" for p in ours] or [f"  (none under {reports})"])

    print()
    path = alerts_path(settings.data_dir).resolve()
    print(f"Alerts ({len(records)} new in {path})")
    if not records:
        print("  (none)")
        return
    rows = [
        [
            r["severity"],
            r["asset"] or "",
            r["check"] or "(run failed)",
            ",".join(r["partitions"]),
            r["delivery"]["webhook"]["status"],
        ]
        for r in records
    ]
    print_lines(format_table(["severity", "asset", "check", "partition", "webhook"], rows))
    print()
    print(f"The first alert, as the webhook receives it (its whole JSON line is in {path.name}):")
    print_lines(alert_fields(records[0]))
