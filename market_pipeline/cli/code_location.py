"""The code location the CLI runs: built from the command's settings, the asset selection resolved,
the range checked against the partitions."""

from __future__ import annotations

import datetime as dt
from functools import reduce
from typing import TYPE_CHECKING, Any

from market_pipeline.cli.common import EXIT_USAGE, CliError

if TYPE_CHECKING:
    import dagster as dg

    from market_pipeline.settings import PipelineSettings

    # What `dg.Definitions.resolve_asset_graph()` returns; `dagster` does not export its class.
    AssetGraph = Any


def load_defs(settings: PipelineSettings) -> dg.Definitions:
    """The code location's Definitions for `settings`, built once (importing the module builds
    nothing: its `defs` is Dagster's lazy entry point). Imported late: the CLI's other commands
    never load Dagster's definitions."""
    from market_pipeline.settings import SettingsError

    try:
        from market_pipeline.definitions import build_definitions

        # Built from the settings this command loaded (the demo's differ from the environment's).
        defs = build_definitions(settings)
    except SettingsError:
        raise
    except Exception as exc:  # a broken module in the code location: say so, not a traceback
        raise CliError(
            f"cannot load the Dagster definitions (market_pipeline.definitions): {type(exc).__name__}: {exc}"
        ) from exc
    return defs


def resolve_selection(defs: dg.Definitions, selections: list[str] | None) -> list[dg.AssetKey]:
    """Asset keys (materializable, in dependency order) matched by Dagster selection strings.

    None or [] selects every asset of the code location.
    """
    import dagster as dg

    graph = defs.resolve_asset_graph()
    if selections:
        parts = []
        for text in selections:
            try:
                selection = dg.AssetSelection.from_string(text)
                if not selection.resolve(graph):
                    raise CliError(f"--select {text!r} matches no asset", EXIT_USAGE)
            except CliError:
                raise
            except Exception as exc:
                raise CliError(f"--select {text!r}: {exc}", EXIT_USAGE) from None
            parts.append(selection)
        # An asset written by a multi-asset together with others (validation_reports and its
        # hourly table) can only be materialized with them.
        selection = reduce(lambda a, b: a | b, parts).required_multi_asset_neighbors()
    else:
        selection = dg.AssetSelection.all()
    keys = {k for k in selection.resolve(graph) if graph.get(k).is_materializable}
    if not keys:
        raise CliError("the selection contains no materializable asset", EXIT_USAGE)
    return [k for k in graph.toposorted_asset_keys if k in keys]


def check_partitions(graph: AssetGraph, keys: list[dg.AssetKey], start: dt.date, end: dt.date) -> None:
    """Every partitioned asset in the run must have both ends of the range as partitions."""
    by_def: dict[Any, list[str]] = {}
    for key in keys:
        partitions_def = graph.get(key).partitions_def
        if partitions_def is not None:
            by_def.setdefault(partitions_def, []).append(key.to_user_string())
    for partitions_def, names in by_def.items():
        for day, option in ((start, "--start-date"), (end, "--end-date")):
            if partitions_def.has_partition_key(day.isoformat()):
                continue
            first = partitions_def.get_first_partition_key()
            last = partitions_def.get_last_partition_key()
            hint = ""
            if last is not None and day.isoformat() > last:
                hint = f" (a day becomes a partition once it is over in UTC; the latest is {last})"
            raise CliError(
                f"{option} {day} is not a partition of {', '.join(names)}: partitions run from {first} to {last}{hint}",
                EXIT_USAGE,
            )


def multi_day_risks(graph: AssetGraph, keys: list[dg.AssetKey], days: int) -> list[str]:
    risky = []
    for key in keys:
        node = graph.get(key)
        if node.partitions_def is None or days == 1:
            continue
        policy = node.backfill_policy
        limit = policy.max_partitions_per_run if policy is not None else 1
        if limit is not None and limit < days:
            risky.append(key.to_user_string())
    return risky
