"""The one place the project leans on a Dagster detail that Dagster does not export.

`AssetCheckEvaluation(target_materialization_data=...)` is a documented parameter of a public
class, but the type of its value is not exported in Dagster 1.13. It is taken from the public
class's signature here, never imported from a private Dagster module. The per-day check evaluations of a
range run need it (defs/common/checks.py: without it the UI shows every day of a range as
missing). `market_pipeline_tests/test_dagster_compat.py` pins what this relies on and fails on a
Dagster upgrade, so the shim is looked at again then.
"""

import inspect
import typing

import dagster as dg

VERIFIED_DAGSTER = "1.13"  # the minor version this module was checked against

# The type of AssetCheckEvaluation's `target_materialization_data` parameter (Optional[T] -> T).
TargetMaterialization = typing.get_args(
    inspect.signature(dg.AssetCheckEvaluation).parameters["target_materialization_data"].annotation
)[0]


def target_materialization(record: dg.EventLogRecord) -> object:
    """The `target_materialization_data` value naming the materialization in `record`."""
    return TargetMaterialization(storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
