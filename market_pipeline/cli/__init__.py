"""The `market-pipeline` command line: validate-env, run, demo, verify-capture, health, capture,
encrypt and decrypt.

`main(argv)` lives in market_pipeline.cli.main; Dagster and the definitions are imported
only by the commands that need them, so `--version` and `validate-env` start quickly.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from market_pipeline.cli.main import main as _main

    return _main(argv)


__all__ = ["main"]
