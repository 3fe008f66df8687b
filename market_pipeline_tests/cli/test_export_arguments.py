"""`market-pipeline export hftbacktest` before it reads anything (issue 36, item 3): an `--out` that is
not a directory is a usage error naming it, and a range with nothing to read suggests the CLI's
`--include-failed`, not the Python argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from market_pipeline.cli.main import main
from market_pipeline.core.errors import EXIT_INPUT_DATA, EXIT_USAGE

INSTRUMENT = "BINANCE:BTC-USDT"


def export(out: Path, day: str = "2024-03-02") -> int:
    return main(["export", "hftbacktest", "--instrument", INSTRUMENT, "--start", day, "--end", day, "--out", str(out)])


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("where", ["existing file", "under a file"])
def test_an_out_that_is_not_a_directory_is_a_usage_error(env, monkeypatch, capsys, tmp_path, where):
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", INSTRUMENT)
    blocker = tmp_path / "taken.npz"
    blocker.write_bytes(b"not a directory")
    out = blocker if where == "existing file" else blocker / "out"
    assert export(out) == EXIT_USAGE
    line = one_error_line(capsys.readouterr().err)
    assert f"--out {out}" in line
    assert blocker.read_bytes() == b"not a directory"


def test_nothing_to_read_names_the_cli_flag(env, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("PIPELINE_INSTRUMENTS", INSTRUMENT)
    books = env["data"] / "lake" / "books" / "exchange=BINANCE" / "symbol=BTC-USDT" / "dt=2024-03-01"
    books.mkdir(parents=True)
    (books / "data.parquet").write_bytes(b"PAR1")  # only its name is read before the range is refused
    assert export(tmp_path / "out") == EXIT_INPUT_DATA
    err = capsys.readouterr().err
    assert "error: nothing to read in 2024-03-02" in err and "2024-03-02: no file" in err
    assert "--include-failed returns days that failed their checks" in err
    assert "include_failed=True" not in err and "Traceback" not in err
