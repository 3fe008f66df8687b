"""The synthetic source's settings saved with the data they generated.

`market-pipeline demo` generates its days with settings of its own (the injected fault's day on
top of the environment's seed, profile and scale). It saves them to
`<data_dir>/sources/synthetic/settings.yaml`, next to the generated days, and every later command
on that data dir reads them back (below `.env` and the environment, above config.yaml):
`market-pipeline run`, `dagster asset materialize` and the UI then regenerate a demo day with the
same fault instead of a clean copy that would contradict the demo's reports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from market_pipeline.core.errors import ConfigurationError
from market_pipeline.core.lake.files import write_text_atomic
from market_pipeline.vendors.synthetic.config import SyntheticSettings

SAVED_SETTINGS = Path("sources") / "synthetic" / "settings.yaml"


def saved_settings_path(data_dir: Path) -> Path:
    return data_dir / SAVED_SETTINGS


def save_synthetic_settings(data_dir: Path, settings: SyntheticSettings) -> Path:
    """Write `settings` where the settings of every later command on `data_dir` find them."""
    path = saved_settings_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Written by `market-pipeline demo`: the synthetic source's settings for this data dir. Every command\n"
        "# on it reads them (the environment and .env still win), so re-generated days match the demo's.\n"
    )
    write_text_atomic(path, header + yaml.safe_dump({"synthetic": settings.model_dump(mode="json")}, sort_keys=False))
    return path


class SavedSyntheticSettings(PydanticBaseSettingsSource):
    """The `synthetic:` block of `<data_dir>/sources/synthetic/settings.yaml`, when the file exists."""

    def __init__(self, settings_cls: type[BaseSettings], data_dir: Path):
        super().__init__(settings_cls)
        self.path = saved_settings_path(data_dir)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads the whole file

    def __call__(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            data = yaml.safe_load(self.path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigurationError(f"{self.path}: cannot read the saved synthetic settings: {exc}") from None
        if not isinstance(data, dict) or set(data) != {"synthetic"}:
            raise ConfigurationError(f"{self.path}: expected one mapping `synthetic:` (delete the file to drop it)")
        return data
