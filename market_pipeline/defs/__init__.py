"""The code location's stages; importing any of them first accepts Dagster's API-stability warnings."""

from market_pipeline.defs.common.dagster_compat import accept_api_stability_warnings

accept_api_stability_warnings()
