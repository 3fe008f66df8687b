"""`market_pipeline.lake.open` on a path that is no data directory (issue 36, item 4): an error that
says the directory does not exist and names it (a ConfigurationError that is also a
FileNotFoundError), not EmptyRange; a range with nothing to read names the Python argument."""

from __future__ import annotations

import datetime as dt

import pytest

import market_pipeline.lake as lake_api
from market_pipeline.core.errors import ConfigurationError
from market_pipeline.core.read.errors import EmptyRange, LakeNotFound


def test_open_on_a_missing_directory_says_it_does_not_exist(tmp_path):
    missing = tmp_path / "no-such-data"
    with pytest.raises(LakeNotFound) as info:
        lake_api.open(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ConfigurationError)
    assert not isinstance(info.value, EmptyRange)
    assert str(info.value).startswith(f"{missing} does not exist")

    with pytest.raises(LakeNotFound, match=f"{tmp_path / 'lake'} does not exist"):
        lake_api.open(tmp_path)  # a directory, but no lake in it

    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(LakeNotFound, match=f"{a_file} is not a directory"):
        lake_api.open(a_file)


def test_nothing_to_read_names_the_python_argument(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    books = tmp_path / "lake" / "books" / "exchange=BINANCE" / "symbol=BTC-USDT" / "dt=2024-03-01"
    books.mkdir(parents=True)
    (books / "data.parquet").write_bytes(b"PAR1")
    with pytest.warns(UserWarning, match="DAGSTER_HOME is not set"):
        lake = lake_api.open(tmp_path)
    with pytest.raises(EmptyRange, match=r"include_failed=True returns days that failed") as info:
        lake.books("BINANCE:BTC-USDT", dt.date(2024, 3, 2))
    assert "--include-failed" not in str(info.value)
