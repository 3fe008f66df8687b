"""A throwaway Dagster instance and data dir (fixtures), and the code location's assets for
`dagster.materialize` in a test."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from market_pipeline_tests.support.project import PROJECT_DAGSTER_YAML


@pytest.fixture
def dagster_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    if PROJECT_DAGSTER_YAML.is_file():
        shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
    else:
        (home / "dagster.yaml").write_text("")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(path))
    return path


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:  # noqa: F821
    import dagster as dg

    inst = dg.DagsterInstance.get()  # reads $DAGSTER_HOME/dagster.yaml of the tmp home
    try:
        yield inst
    finally:
        inst.dispose()


def code_location(settings: object | None = None) -> dg.Definitions:  # noqa: F821
    """The code location built from `settings` (the environment's settings now, when not given),
    as `market_pipeline.definitions.build_definitions` makes it for Dagster and the CLI."""
    from market_pipeline.definitions import build_definitions
    from market_pipeline.settings import load_settings

    return build_definitions(settings if settings is not None else load_settings())


def assets_named(defs: dg.Definitions, *names: str) -> list:  # noqa: F821
    """The AssetsDefinitions of `defs` holding these asset keys, in the order given, as the stages
    built them (not bound to the code location's resources: a test passes its own)."""
    by_key = {key.to_user_string(): asset for asset in defs.assets or [] for key in asset.keys}
    return [by_key[name] for name in names]


def range_tags(start: str, end: str) -> dict[str, str]:
    """Run tags that make a single-run backfill policy asset process a partition range."""
    return {
        "dagster/asset_partition_range_start": start,
        "dagster/asset_partition_range_end": end,
    }


@pytest.fixture(name="range_tags")
def range_tags_fixture() -> Callable[[str, str], dict[str, str]]:
    return range_tags
