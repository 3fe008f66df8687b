"""Master-key rotation of the encrypted lake: Parquet modular encryption files (`parquet_io`).

The lake's files are not of the crypto module's format: each is Parquet whose footer and columns
are encrypted with the lake key derived from the master key (`parquet_io.lake_key`), recognised by
the magic `PARE` at both ends. Rotating one means reading it with the old lake key and writing it
again with the new one, row group by row group (memory: one row group), keeping its schema (with
its metadata), row groups, compression and one page per column chunk (`parquet_io`), then
reading the copy back with the new key and comparing every row group with the original before it
replaces the file (`files.atomic_path`).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe

from market_pipeline.core.lake import parquet_io, storage
from market_pipeline.core.lake.files import atomic_path
from market_pipeline.core.security.crypto import DecryptionError, derive_key

PARQUET_MAGIC = b"PARE"


def is_encrypted_parquet(head: bytes) -> bool:
    return head[: len(PARQUET_MAGIC)] == PARQUET_MAGIC


def _lake_key(master_key: bytes) -> bytes:
    return derive_key(master_key, None, parquet_io.LAKE_KEY_INFO)


def _open(path: Path, master_key: bytes) -> pq.ParquetFile:
    """The file (a local one, or an object of a remote lake) decrypted with the master key's lake key."""
    fs, where = storage.arrow_location(path)
    source = where if fs is None else fs.open_input_file(where)
    return pq.ParquetFile(source, decryption_properties=pqe.create_decryption_properties(_lake_key(master_key)))


def parquet_opens_with(path: Path, master_key: bytes) -> DecryptionError | None:
    """None when the file's footer decrypts under the master key's lake key, else the error."""
    try:
        _open(path, master_key).close()
    except OSError as exc:
        return DecryptionError(path, f"the lake key does not open it ({exc})")
    return None


def rotate_parquet(path: Path, old_key: bytes, new_key: bytes) -> None:
    """Re-encrypt the lake file `path` from `old_key`'s lake key to `new_key`'s, atomically and verified."""
    with _open(path, old_key) as source, atomic_path(path) as tmp:
        metadata = source.metadata
        compression = {}
        if metadata.num_row_groups:
            first = metadata.row_group(0)
            columns = (first.column(j) for j in range(first.num_columns))
            # The footer says UNCOMPRESSED where the writer wants NONE; the other codec names match.
            compression = {c.path_in_schema: c.compression.replace("UNCOMPRESSED", "NONE") for c in columns}
        options = parquet_io.encrypted_writer_options(_lake_key(new_key))
        with pq.ParquetWriter(tmp, source.schema_arrow, compression=compression or "zstd", **options) as writer:
            for group in range(metadata.num_row_groups):
                table = source.read_row_group(group)
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
        with _open(tmp, new_key) as copy:
            same = copy.metadata.num_row_groups == metadata.num_row_groups and all(
                copy.read_row_group(g).equals(source.read_row_group(g), check_metadata=True)
                for g in range(metadata.num_row_groups)
            )
        if not same:
            raise DecryptionError(path, "the re-encrypted copy does not read back the same rows; not replaced")
