"""Atomic file writes: readers see the old file or the new one, never half of either.

Every file written here is private (mode 0600, in directories created 0700) and, inside an
`audit_scope`, recorded in the audit trail (market_pipeline/core/security/audit.py).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from market_pipeline.core.lake.paths import make_private_dirs
from market_pipeline.core.security.audit import audit_write

PRIVATE_FILE_MODE = 0o600


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling of `final`; on success rename it over `final`.

    The temporary file lives in the same directory so the rename never crosses a filesystem.
    On failure the temporary file is removed and `final` is left as it was.

    `final` gets mode 0600 whatever the writer did. While it is written the temporary file has the
    process umask's mode (0600 under the pipeline's entry points, which set umask 077) inside a
    directory created 0700. The writer creates the temporary file itself (some open it O_EXCL).
    """
    make_private_dirs(final.parent)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        os.chmod(tmp, PRIVATE_FILE_MODE)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    audit_write(final, final.stat().st_size)


def write_atomic(final: Path, writer: Callable[[Path], None]) -> int:
    """Write `final` through `writer(tmp_path)` atomically; returns the bytes written."""
    with atomic_path(final) as tmp:
        writer(tmp)
    return final.stat().st_size


def write_parquet_atomic(df: pl.DataFrame, final: Path) -> int:
    return write_atomic(final, lambda tmp: df.write_parquet(tmp, compression="zstd", statistics=True))


def write_text_atomic(final: Path, text: str) -> int:
    return write_atomic(final, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def copy_file_atomic(source: Path, final: Path) -> int:
    """Copy `source` to `final` atomically (private mode, audited); returns the bytes written."""
    return write_atomic(final, lambda tmp: shutil.copyfile(source, tmp))
