"""Scratch is bounded (issue 36): a successful run removes the S3 vendor's downloads of its days, a
failed one keeps them for inspection, and `market-pipeline cleanup` lists and removes what is kept."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from market_pipeline.cli.main import main
from market_pipeline_tests.support.cli_env import write_deltas
from market_pipeline_tests.support.s3_server import LoopbackS3

PREFIX = "market-data/cryptofeed"  # the default s3.prefix
GOOD, BAD = dt.date(2024, 3, 2), dt.date(2024, 3, 1)


@pytest.fixture
def s3_source(env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A vendor bucket with book deltas for GOOD and a file BAD's import refuses (no vendor column of
    the table), and the S3 source pointed at it; yields the data dir."""
    root = tmp_path / "vendor"
    write_deltas(root, GOOD, 20)
    bad = write_deltas(root, BAD, 20)
    pl.DataFrame({"not_a_vendor_column": [1, 2]}).write_parquet(bad)
    server = LoopbackS3()
    try:
        server.create_bucket("vendor")
        server.upload_tree("vendor", PREFIX, root)
        for name, value in {
            "PIPELINE_SOURCE": "s3",
            "PIPELINE_S3__BUCKET": "vendor",
            "PIPELINE_S3__ENDPOINT_URL": server.url,
            "PIPELINE_S3__MAX_ATTEMPTS": "1",
            "PIPELINE_INSTRUMENTS": "BINANCE:BTC-USDT",
            "AWS_ACCESS_KEY_ID": "reader",
            "AWS_SECRET_ACCESS_KEY": "reader-secret",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            monkeypatch.setenv(name, value)
        yield env["data"]
    finally:
        server.stop()


def downloaded_days(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "sources" / "s3").glob("*/exchange=*/symbol=*/dt=*"))


@pytest.mark.slow  # two small Dagster runs of one raw asset
def test_a_failed_run_keeps_its_downloads_a_good_one_removes_them_and_cleanup_removes_the_rest(s3_source, capsys):
    data = s3_source
    run = ["run", "--select", "raw_book_deltas", "--no-progress", "--start-date"]
    assert main([*run, str(BAD), "--end-date", str(BAD)]) != 0
    assert downloaded_days(data) == [f"dt={BAD}"]  # kept for inspection
    capsys.readouterr()

    assert main([*run, str(GOOD), "--end-date", str(GOOD)]) == 0
    out = capsys.readouterr().out
    assert (
        f"removed s3 download scratch {data}/sources/s3/book_delta_v2/exchange=BINANCE/symbol=BTC-USDT/dt={GOOD}" in out
    )
    assert (data / "lake/raw/book_delta_v2/exchange=BINANCE/symbol=BTC-USDT" / f"dt={GOOD}/data.parquet").is_file()
    assert downloaded_days(data) == [f"dt={BAD}"]  # the failed run's, not this run's day

    leftover = data / "runs" / "0f1e2d3c-dead-run" / "tmp"  # a failed run's own data dir (PIPELINE_SCRATCH_PER_RUN)
    leftover.mkdir(parents=True)
    (leftover / "spill").write_bytes(b"x" * 100)
    assert main(["cleanup", "--dry-run"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in listed[:-1]] == [
        ["would", "remove", "run", str(data / "runs" / "0f1e2d3c-dead-run")],
        ["would", "remove", "s3", "download"],
    ]
    assert listed[-1].startswith("would remove 2 scratch directories, ")
    assert downloaded_days(data) == [f"dt={BAD}"] and leftover.is_dir()

    assert main(["cleanup", "--older-than", "1"]) == 0  # all of it written just now
    assert capsys.readouterr().out.splitlines()[-1] == "removed 0 scratch directories, 0 bytes"
    assert main(["cleanup"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("removed 2 scratch directories, ")
    assert downloaded_days(data) == [] and not any((data / "runs").iterdir())
    assert not (data / "sources" / "s3" / "book_delta_v2" / "exchange=BINANCE").exists()  # no empty shells left


def test_keep_scratch_keeps_a_successful_runs_scratch(env, monkeypatch):
    from market_pipeline.defs.automation.scratch import remove_succeeded_run_scratch, run_days
    from market_pipeline.settings import load_settings

    data = env["data"]
    day = data / "sources" / "s3" / "trades" / "exchange=X" / "symbol=Y" / "dt=2024-03-01"
    day.mkdir(parents=True)
    (day / "part.parquet").write_bytes(b"1234")
    (data / "runs" / "r1").mkdir(parents=True)
    days = run_days({"dagster/partition": "2024-03-01"})
    monkeypatch.setenv("PIPELINE_KEEP_SCRATCH", "true")
    assert remove_succeeded_run_scratch(load_settings(), "r1", days) == [] and day.is_dir()
    monkeypatch.delenv("PIPELINE_KEEP_SCRATCH")
    removed = remove_succeeded_run_scratch(load_settings(), "r1", days)
    assert [line.split()[1:4] for line in removed] == [
        ["run", "scratch", str(data / "runs" / "r1")],
        ["s3", "download", "scratch"],
    ]
    assert not (data / "runs" / "r1").exists() and not day.exists()
    assert run_days(
        {"dagster/asset_partition_range_start": "2024-03-01", "dagster/asset_partition_range_end": "2024-03-03"}
    ) == [dt.date(2024, 3, 1), dt.date(2024, 3, 2), dt.date(2024, 3, 3)]
    assert run_days({}) == [] and run_days({"dagster/partition": "BINANCE"}) == []
