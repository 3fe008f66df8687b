"""The one place the project leans on Dagster details: one it does not export, and the
API-stability warnings it accepts.

`AssetCheckEvaluation(target_materialization_data=...)` is a documented parameter of a public
class, but the type of its value is not exported in Dagster 1.13. It is taken from the public
class's signature here, never imported from a private Dagster module. The per-day check evaluations of a
range run need it (defs/common/checks.py: without it the UI shows every day of a range as
missing). `market_pipeline_tests/defs/test_dagster_compat.py` pins what this relies on and fails on a
Dagster upgrade, so the shim is looked at again then.
"""

import inspect
import typing
import warnings

import dagster as dg

VERIFIED_DAGSTER = "1.13"  # the minor version this module was checked against

# The type of AssetCheckEvaluation's `target_materialization_data` parameter (Optional[T] -> T).
TargetMaterialization = typing.get_args(
    inspect.signature(dg.AssetCheckEvaluation).parameters["target_materialization_data"].annotation
)[0]


def target_materialization(record: dg.EventLogRecord) -> object:
    """The `target_materialization_data` value naming the materialization in `record`."""
    return TargetMaterialization(storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)


def accept_api_stability_warnings() -> None:
    """Silence Dagster's notes that an API the project uses on purpose is not yet stable.

    Every process that loads the code location (code servers, the daemon's reloads, run and step
    workers, `dagster asset materialize`) printed them once per decorated definition: about a
    thousand lines per `make ui` session. Used on purpose, each pinned by tests and by
    VERIFIED_DAGSTER above: per-day asset checks (`partitions_def` on AssetCheckSpec: preview),
    `backfill_policy` (beta: the single-run range backfills), and the superseded spellings Dagster
    still accepts and names in a SupersessionWarning. Only these three categories are filtered:
    Dagster's warnings about real problems (UserWarning, DeprecationWarning, its log messages)
    still show. Installed when `market_pipeline.defs` is imported, before any definition is built.
    """
    for category in (dg.PreviewWarning, dg.BetaWarning, dg.SupersessionWarning):
        warnings.filterwarnings("ignore", category=category)
