"""Resources shared by every domain, configured in one place from the pipeline settings."""

from __future__ import annotations

import dagster as dg

from market_pipeline.settings import PipelineSettings, load_settings


class PipelineResource(dg.ConfigurableResource):
    """The pipeline settings (config.yaml, .env, PIPELINE_* variables), read when a run starts.

    `data_dir` overrides PIPELINE_DATA_DIR, e.g. for tests and one-off runs.
    """

    data_dir: str | None = None

    def settings(self) -> PipelineSettings:
        overrides = {"data_dir": self.data_dir} if self.data_dir else {}
        return load_settings(**overrides)


DUCKDB_POOL = "duckdb"  # one writer at a time: DuckDB allows one writer per database file
