"""Small files derived from a lake file and stored beside its day, tagged with the rows and bytes
of the file they were made from: a reader takes one only while that file is unchanged, and
otherwise derives the figures again from the file itself.

Used for the books' shape rows (`quality/book_shape.py`) and the deltas' exact skew quantiles
(`quality/skew.py`). The tag is the same identity the day statistics are checked with
(`DayStats.matches`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from market_pipeline.core.lake import parquet_io
from market_pipeline.core.lake.files import atomic_path


def _tag(source: Path, name: bytes, extra: dict[bytes, bytes] | None) -> dict[bytes, bytes]:
    return {
        name + b"_rows": str(parquet_io.num_rows(source)).encode(),
        name + b"_bytes": str(source.stat().st_size).encode(),
        **(extra or {}),
    }


def write_derived(
    table: pa.Table, path: Path, source: Path, name: bytes, extra: dict[bytes, bytes] | None = None
) -> None:
    """Store `table` at `path`, atomically, tagged as made from `source` (`name`: the tag's prefix)
    and with `extra`, further figures of what it was made from that a reader must find equal."""
    with atomic_path(path) as tmp:
        tagged = table.replace_schema_metadata(_tag(source, name, extra))
        parquet_io.write_table(tagged, tmp, **parquet_io.delta_writer_options(tagged.schema))


def read_derived(path: Path, source: Path, name: bytes, extra: dict[bytes, bytes] | None = None) -> pa.Table | None:
    """The table stored at `path` for `source` as it is now (and `extra`), or None when there is
    none or it was made from another version of `source` (rewritten since, or a crash between the
    two writes)."""
    if not path.is_file() or not source.is_file():
        return None
    tag = parquet_io.read_schema(path).metadata or {}
    expected = _tag(source, name, extra)
    if any(tag.get(key) != value for key, value in expected.items()):
        return None
    return parquet_io.read_table(path).replace_schema_metadata(None)
