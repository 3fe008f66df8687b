"""What a run recorded in the Dagster instance: each step's start and end, and the metadata of
the materializations of an asset per partition."""

from __future__ import annotations


def step_windows(instance, run_id: str) -> dict[str, tuple[float, float]]:
    import dagster as dg

    starts: dict[str, float] = {}
    windows: dict[str, tuple[float, float]] = {}
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE}
    for entry in instance.all_logs(run_id, of_type=kinds):
        step = entry.step_key
        if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
            starts[step] = entry.timestamp
        elif step in starts:
            windows[step] = (starts[step], entry.timestamp)
    return windows


def materializations(instance, asset_name: str, run_id: str) -> dict[str, dict]:
    """partition -> metadata values of the materializations one run recorded for an asset."""
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetKey(asset_name), limit=1000).records
    result: dict[str, dict] = {}
    for record in records:
        if record.event_log_entry.run_id != run_id:
            continue
        mat = record.asset_materialization
        assert mat.partition not in result, f"two materializations of {asset_name} {mat.partition}"
        result[mat.partition] = {k: v.value for k, v in mat.metadata.items()}
    return result
