"""The demo's world for every later command (issue 28, item 3): the demo saves its synthetic
settings in the data dir, and every command on that data dir generates the same days with the
same fault; the environment still wins, and a broken file is named."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from market_pipeline.cli.common import CliError
from market_pipeline.cli.demo import demo_days, demo_settings
from market_pipeline.core.errors import ConfigurationError
from market_pipeline.settings import load_settings
from market_pipeline.vendors.synthetic.saved_settings import save_synthetic_settings, saved_settings_path

DAY = dt.date(2024, 3, 3)


def test_the_demos_days_end_yesterday_unless_a_start_is_given():
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    assert demo_days(3, None) == (yesterday - dt.timedelta(days=2), yesterday)
    assert demo_days(2, "2024-03-01") == (dt.date(2024, 3, 1), dt.date(2024, 3, 2))
    with pytest.raises(CliError, match="--days must be at least 1"):
        demo_days(0, None)


def test_later_commands_on_the_data_dir_read_the_demos_synthetic_settings(data_dir: Path, monkeypatch):
    monkeypatch.setenv("PIPELINE_SYNTHETIC__SCALE", "0.02")
    demo = demo_settings(DAY - dt.timedelta(days=2), DAY, None)
    save_synthetic_settings(data_dir, demo.synthetic)
    monkeypatch.delenv("PIPELINE_SYNTHETIC__SCALE")

    later = load_settings()  # e.g. the code location that `dagster asset materialize` or the UI loads
    assert later.synthetic == demo.synthetic
    assert later.synthetic.scale == 0.02
    assert later.synthetic.faults.clock_skew_episodes == 1 and later.synthetic.faults.days == [DAY]

    monkeypatch.setenv("PIPELINE_SYNTHETIC__FAULTS__DAYS", "[]")  # the environment still wins
    assert load_settings().synthetic.faults.days == []

    other = data_dir.parent / "elsewhere"
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(other))  # another data dir: the defaults
    assert load_settings().synthetic.faults.clock_skew_episodes == 0


def test_a_new_demo_replaces_the_saved_fault_days(data_dir: Path):
    save_synthetic_settings(data_dir, demo_settings(DAY, DAY, None).synthetic)
    later = dt.date(2024, 4, 1)
    assert demo_settings(later, later, None).synthetic.faults.days == [later]


def test_a_broken_saved_file_is_named(data_dir: Path):
    path = saved_settings_path(data_dir)
    path.parent.mkdir(parents=True)
    path.write_text("synthetic: [1, 2\n")
    with pytest.raises(ConfigurationError, match=str(path)):
        load_settings()
    path.write_text("source: s3\n")
    with pytest.raises(ConfigurationError, match="expected one mapping `synthetic:`"):
        load_settings()
