"""Atomic file writes: readers see the old file or the new one, never half of either."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import polars as pl


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; on success rename it over `final`.

    The temporary file lives in the same directory so the rename never crosses a filesystem.
    On failure the temporary file is removed and `final` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(final: Path, writer: Callable[[Path], None]) -> int:
    """Write `final` through `writer(tmp_path)` atomically; returns the bytes written."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return final.stat().st_size


def write_parquet_atomic(df: pl.DataFrame, final: Path) -> int:
    return write_atomic(
        final, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True)
    )


def write_text_atomic(final: Path, text: str) -> int:
    return write_atomic(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))
