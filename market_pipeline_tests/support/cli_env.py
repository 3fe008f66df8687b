"""For the CLI called in-process: a throwaway DAGSTER_HOME and data dir (fixture `env`), a local
vendor lake of book deltas over two days (fixture `local_source`), and `market-pipeline` run in
this process as a subprocess given an environment would run (`cli_in_process`)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
from collections.abc import Mapping
from pathlib import Path

import polars as pl
import pytest

from market_pipeline_tests.support.vendor_lake import NS


def cli_in_process(argv: list[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `market-pipeline <argv>` through main(argv) in this process,
    with the PIPELINE_* and DAGSTER_* variables a subprocess given `env` would have: no second
    interpreter importing Dagster and the pipeline again. The CLI sets its process's umask (077):
    this process's is put back after."""
    from market_pipeline.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    umask = os.umask(0o022)
    os.umask(umask)
    try:
        with pytest.MonkeyPatch.context() as mp:
            for name in [n for n in os.environ if n.startswith("PIPELINE_") and n not in env]:
                mp.delenv(name)
            for name, value in env.items():
                if name.startswith(("PIPELINE_", "DAGSTER_")):
                    mp.setenv(name, value)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
    finally:
        os.umask(umask)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Path]:
    """A tmp DAGSTER_HOME (with a quiet dagster.yaml) and a tmp PIPELINE_DATA_DIR."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    data = tmp_path / "data"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(data))
    return {"home": home, "data": data}


def write_deltas(root: Path, day: dt.date, rows: int) -> Path:
    """One vendor-like book_delta_v2 file for BINANCE:BTC-USDT, times inside `day`."""
    start = int(dt.datetime.combine(day, dt.time(), dt.UTC).timestamp()) * NS
    received = [start + (i + 1) * 60 * NS for i in range(rows)]
    frame = pl.DataFrame(
        {
            "origin_time": [t - 1_000_000 for t in received],
            "received_time": received,
            "sequence_number": [1_000 + i for i in range(rows)],
            "side_is_bid": [i % 2 == 0 for i in range(rows)],
            "price": [60_000.0 + (-1 if i % 2 == 0 else 1) * (1 + i % 5) * 0.01 for i in range(rows)],
            "size": [0.0 if i % 7 == 6 else 0.25 * (1 + i % 3) for i in range(rows)],
        },
        schema={
            "origin_time": pl.Int64,
            "received_time": pl.Int64,
            "sequence_number": pl.Int64,
            "side_is_bid": pl.Boolean,
            "price": pl.Float64,
            "size": pl.Float64,
        },
    )
    path = root / "book_delta_v2" / "exchange=BINANCE" / "symbol=BTC-USDT" / f"dt={day.isoformat()}" / "x.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.write_parquet(path)
    return path


@pytest.fixture
def local_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, Path]) -> dict[str, object]:
    """A local vendor lake with book deltas for 2024-03-01 (30 rows) and 2024-03-02 (45 rows)."""
    root = tmp_path / "vendor"
    rows = {dt.date(2024, 3, 1): 30, dt.date(2024, 3, 2): 45}
    for day, n in rows.items():
        write_deltas(root, day, n)
    monkeypatch.setenv("PIPELINE_SOURCE", "local")
    monkeypatch.setenv("PIPELINE_LOCAL_DIR", str(root))
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", "BINANCE:BTC-USDT")
    return {"root": root, "rows": rows, **env}
