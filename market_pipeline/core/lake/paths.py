"""Where things live under PIPELINE_DATA_DIR (hive layout: exchange=X/symbol=Y/dt=YYYY-MM-DD)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

PARTITION_FILE = "data.parquet"
PRIVATE_DIR_MODE = 0o700  # data directories: owner only (docs/operations.md, "File modes and audit")


def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents with mode 0700 (existing directories are left alone).

    `Path.mkdir(parents=True, mode=...)` applies the mode to the last directory only.
    """
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:  # created meanwhile by a concurrent step
            if not directory.is_dir():
                raise


def audit_log_path(data_dir: Path) -> Path:
    return data_dir / "audit" / "audit.jsonl"


def partition_dir(root: Path, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
    return root / table / f"exchange={exchange}" / f"symbol={symbol}" / f"dt={day.isoformat()}"


def raw_partition_dir(lake_dir: Path, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
    return partition_dir(lake_dir / "raw", table, exchange, symbol, day)


def quarantine_dir(lake_dir: Path) -> Path:
    return lake_dir / "quarantine"


def stats_dir(lake_dir: Path) -> Path:
    """Small per-day statistics: the raw import's from its one pass (core/quality/day_stats.py), the
    book rebuild's shape rows (core/quality/book_shape.py)."""
    return lake_dir / "stats"


def stats_partition_dir(lake_dir: Path, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
    """lake/stats/{table}/exchange=X/symbol=Y/dt=D/: the day statistics of one raw table-day."""
    return partition_dir(stats_dir(lake_dir), table, exchange, symbol, day)


def rejected_rows_path(lake_dir: Path, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
    """The rows the latest import of a raw table-day quarantined, with their reasons."""
    return partition_dir(quarantine_dir(lake_dir), table, exchange, symbol, day) / "rejected_rows.parquet"


def table_glob(root: Path, table: str) -> str:
    """Glob over every partition file of a table, for DuckDB views."""
    return str(root / table / "*" / "*" / "*" / "*.parquet")


def books_partition_dir(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    return partition_dir(lake_dir, "books", exchange, symbol, day)


def books_shape_path(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    """lake/stats/books/exchange=X/symbol=Y/dt=D/shape.parquet: the books' spread and depth at vendor
    snapshots, written by the rebuild beside the books (core/quality/book_shape.py)."""
    return stats_partition_dir(lake_dir, "books", exchange, symbol, day) / "shape.parquet"


def books_delta_pass_path(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    """lake/stats/books/exchange=X/symbol=Y/dt=D/delta_pass.parquet: the metrics' pass over the day's
    deltas (update ranks, hourly messages, skew sample), made by the rebuild beside the books
    (core/quality/delta_pass_stream.py)."""
    return stats_partition_dir(lake_dir, "books", exchange, symbol, day) / "delta_pass.parquet"


def bars_partition_dir(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    """lake/bars/exchange=X/symbol=Y/dt=D/: the OHLCV bars of one instrument-day, every interval."""
    return partition_dir(lake_dir, "bars", exchange, symbol, day)


def book_agreement_dir(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    return partition_dir(lake_dir, "book_agreement", exchange, symbol, day)


def capture_fidelity_dir(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    """Written by the Binance capture rebuild beside the day's books: what `quality/fidelity.py` reads."""
    return partition_dir(lake_dir, "capture_fidelity", exchange, symbol, day)


def checkpoint_path(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    return partition_dir(lake_dir, "checkpoints", exchange, symbol, day) / "book.parquet"


def reference_lake_dir(lake_dir: Path, source: str) -> Path:
    """lake/reference/source=<name>/: a reference source's raw tables and books (`source_agreement`), in
    the lake's own layout below it, apart from the primary source's: no view, check or asset of the
    primary source reads below it."""
    return lake_dir / "reference" / f"source={source}"


def agreement_dir(lake_dir: Path, exchange: str, symbol: str, day: dt.date) -> Path:
    """lake/agreement/exchange=X/symbol=Y/dt=D/: the hourly rows of one instrument-day's source agreement."""
    return partition_dir(lake_dir, "agreement", exchange, symbol, day)
