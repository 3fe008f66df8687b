"""Where the raw stage writes a partition in the lake."""

from __future__ import annotations

import datetime as dt
from pathlib import Path


def lake_file(data_dir: Path, table: str, exchange: str, symbol: str, day: dt.date) -> Path:
    return (
        data_dir
        / "lake"
        / "raw"
        / table
        / f"exchange={exchange}"
        / f"symbol={symbol}"
        / f"dt={day.isoformat()}"
        / "data.parquet"
    )
