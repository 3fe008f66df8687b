"""Every Parquet read and write of the lake, so one switch encrypts the whole lake.

With lake encryption off (the default) these are the plain calls (`pl.scan_parquet`,
`pq.ParquetFile`, `DataFrame.write_parquet`, DuckDB's `read_parquet`), nothing added.

With it on (`PIPELINE_LAKE_ENCRYPTION=on`, in the core context the entry point built from the
settings, `core/context.py`) every file is Parquet modular encryption,
AES-GCM, uniform: one key encrypts the footer and every column. The key is derived from
PIPELINE_MASTER_KEY with HKDF (`crypto.derive_key`, purpose `LAKE_KEY_INFO`); it is not wrapped
(no KMS key material in the file) because DuckDB reads only files whose footer key is the raw AES
key it was given (`PRAGMA add_parquet_key`). pyarrow's CryptoFactory writes per-file data keys
wrapped by a KMS, which DuckDB cannot unwrap. Each module still gets a fresh random nonce and each
file a random AAD file id, so modules cannot be moved between files unnoticed.

Polars cannot decrypt, so with encryption on lazy reads go through a pyarrow dataset with
decryption properties (`pl.scan_pyarrow_dataset`): still lazy, batched, with projection and
predicate push-down.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pqe

from market_pipeline.core import context
from market_pipeline.core.errors import CryptoError
from market_pipeline.core.lake import storage
from market_pipeline.core.lake.files import remove_dead_owners_dirs, write_atomic
from market_pipeline.core.security import crypto

if TYPE_CHECKING:  # only the caller's connection is used: importing duckdb here would slow every writer's start
    import duckdb

LAKE_KEY_INFO = b"market_pipeline/lake-parquet/v1"
DUCKDB_KEY_NAME = "market_pipeline_lake"
DUCKDB_DISABLED_OPTIMIZERS = "filter_pushdown"  # see register_duckdb_key
# Compression and statistics of every frame the pipeline writes (as `write_parquet_atomic` always did).
FRAME_COMPRESSION = "zstd"

# DuckDB 1.5 fails to authenticate the second and later data pages of a column chunk that pyarrow
# encrypted ("Computed AES tag differs"; one page per chunk reads fine, as do files DuckDB wrote), so
# encrypted files get one data page per column chunk: a reader then decompresses a column of a row
# group at once instead of page by page (row groups here are batches of at most a few hundred MB).
_ONE_PAGE_PER_COLUMN_CHUNK = {
    "data_page_size": 1 << 30,
    "dictionary_pagesize_limit": 1 << 30,  # a dictionary overflowing falls back to plain in a new page
    "max_rows_per_page": (1 << 31) - 1,
}


class LakeDecryptionError(CryptoError, OSError):
    """A lake file that cannot be decrypted with this process's key (or is not encrypted)."""

    def __init__(self, path: Path | str, cause: BaseException) -> None:
        self.path = str(path)
        super().__init__(
            f"{path}: cannot read this lake file with PIPELINE_LAKE_ENCRYPTION=on ({cause}); "
            "it was written with another PIPELINE_MASTER_KEY, without lake encryption, or it is damaged"
        )


def lake_encrypted() -> bool:
    """Whether the lake's files are written encrypted and read decrypted (the core context says)."""
    return context.current().lake_encrypted


def lake_key() -> bytes:
    """The lake's AES-256 key, derived from this process's master key (MasterKeyError without one)."""
    return crypto.derive_key(crypto.default_master_key(), None, LAKE_KEY_INFO)


def encrypted_writer_options(key: bytes) -> dict[str, Any]:
    """Writer options of an encrypted lake file under the lake key `key` (also used by key rotation)."""
    return {**_ONE_PAGE_PER_COLUMN_CHUNK, "encryption_properties": pqe.create_encryption_properties(key)}


def _writer_options(options: dict[str, Any]) -> dict[str, Any]:
    """The caller's writer options; when encrypted, plus the key and one page per column chunk."""
    if not lake_encrypted():
        return options
    return {**options, **encrypted_writer_options(lake_key())}


def decryption_properties() -> pqe.FileDecryptionProperties | None:
    """What pyarrow needs to read a lake file in this process (None when the lake is not encrypted)."""
    return pqe.create_decryption_properties(lake_key()) if lake_encrypted() else None


# --- writing -----------------------------------------------------------------------------------


def delta_writer_options(schema: pa.Schema) -> dict[str, object]:
    """Writer options for the pipeline's own tables of times, counts and flags (the book agreement
    rows, the derived files): integers delta-encoded, then LZ4, no dictionaries. On the bench day's
    agreement rows (864,000) 3.4 MB in 36 ms against 13.2 MB in 110 ms with Parquet's defaults
    (dictionaries, snappy), the shape rows 8.8 MB in 36 ms against 15.4 MB in 73 ms; polars reads
    them back 2-3x as fast."""
    integers = [f.name for f in schema if pa.types.is_integer(f.type)]
    return {
        "compression": "lz4",
        "use_dictionary": False,
        "column_encoding": dict.fromkeys(integers, "DELTA_BINARY_PACKED"),
    }


def write_table(table: pa.Table, where: Path, **options: Any) -> None:
    """`pq.write_table`, encrypted when the lake is."""
    pq.write_table(table, where, **_writer_options(options))


def parquet_writer(where: Path, schema: pa.Schema, **options: Any) -> pq.ParquetWriter:
    """`pq.ParquetWriter`, encrypted when the lake is."""
    return pq.ParquetWriter(where, schema, **_writer_options(options))


def write_frame(frame: pl.DataFrame, where: Path) -> None:
    """A polars frame as zstd Parquet with statistics; through pyarrow when encrypted (polars cannot)."""
    if lake_encrypted():
        write_table(
            frame.to_arrow(compat_level=pl.CompatLevel.oldest()),
            where,
            compression=FRAME_COMPRESSION,
            write_statistics=True,
        )
    else:
        frame.write_parquet(where, compression=FRAME_COMPRESSION, statistics=True)


# --- reading -----------------------------------------------------------------------------------


def _decrypting(path: Path | str, action: Any) -> Any:
    """`action()`, with a decryption failure turned into a LakeDecryptionError naming `path`."""
    try:
        return action()
    except OSError as exc:
        if lake_encrypted() and not isinstance(exc, (FileNotFoundError, CryptoError)):
            raise LakeDecryptionError(path, exc) from exc
        raise


def open_file(path: Path, **options: Any) -> pq.ParquetFile:
    """`pq.ParquetFile(path)`, decrypting when the lake is encrypted (a remote object through the lake's S3 client)."""
    decryption = decryption_properties()
    fs, where = storage.arrow_location(storage.readable(path))

    def _open() -> pq.ParquetFile:
        if fs is None:
            return pq.ParquetFile(where, decryption_properties=decryption, **options)
        # Remote: the column chunks of a read are fetched in a few coalesced ranged GETs (pre_buffer),
        # not one GET per column chunk: the metrics' rank pass over one books file (24 reads of 41
        # columns) took 80 s instead of 123 s on the loopback server (2 s from local disk); memory
        # still holds only the row groups being read.
        remote_options = {**options, "pre_buffer": True}
        return pq.ParquetFile(fs.open_input_file(where), decryption_properties=decryption, **remote_options)

    return _decrypting(path, _open)


def read_table(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    decryption = decryption_properties()
    fs, where = storage.arrow_location(storage.readable(path))
    return _decrypting(
        path, lambda: pq.read_table(where, columns=columns, decryption_properties=decryption, filesystem=fs)
    )


def read_schema(path: Path) -> pa.Schema:
    decryption = decryption_properties()
    fs, where = storage.arrow_location(storage.footer_readable(path))
    return _decrypting(path, lambda: pq.read_schema(where, decryption_properties=decryption, filesystem=fs))


def num_rows(path: Path) -> int:
    """The row count from the footer, without reading any data."""
    decryption = decryption_properties()
    fs, where = storage.arrow_location(storage.footer_readable(path))
    return _decrypting(path, lambda: pq.read_metadata(where, decryption_properties=decryption, filesystem=fs).num_rows)


def read_frame(path: Path, columns: Sequence[str] | None = None) -> pl.DataFrame:
    """`pl.read_parquet(path, columns=...)`, through pyarrow when encrypted (polars cannot decrypt)
    or remote outside a step (one S3 client for the lake)."""
    local = storage.readable(path)
    if not lake_encrypted() and not storage.is_remote(local):
        return pl.read_parquet(local, columns=list(columns) if columns is not None else None)
    frame = pl.from_arrow(read_table(path, columns))
    assert isinstance(frame, pl.DataFrame)
    return frame


def scan(paths: Path | Sequence[Path]) -> pl.LazyFrame:
    """`pl.scan_parquet(paths)`; when encrypted or remote, a lazy scan of a (decrypting) pyarrow dataset."""
    given = [paths] if isinstance(paths, Path) or storage.is_remote(paths) else list(paths)  # type: ignore[list-item]
    listed = [storage.readable(p) for p in given]
    if not lake_encrypted() and not any(storage.is_remote(p) for p in listed):
        return pl.scan_parquet(listed[0] if len(listed) == 1 else listed)  # type: ignore[arg-type]
    # Imported here: pyarrow.dataset imports pandas, 0.2 s of every process's start otherwise.
    import pyarrow.dataset as ds

    located = [storage.arrow_location(p) for p in listed]
    files = [where for _, where in located]
    options = ds.ParquetFragmentScanOptions(decryption_properties=decryption_properties())
    dataset_format = ds.ParquetFileFormat(default_fragment_scan_options=options)
    fs = located[0][0] if located else None
    dataset = _decrypting(", ".join(files), lambda: ds.dataset(files, format=dataset_format, filesystem=fs))
    return pl.scan_pyarrow_dataset(dataset)


# --- DuckDB ------------------------------------------------------------------------------------


def duckdb_read_parquet(glob: str | Path, **options: str) -> str:
    """A `read_parquet(...)` table expression over `glob` (a glob, or a lake file's path: its local
    copy inside a step, see `storage.readable`; single quotes are escaped) with DuckDB options given
    as SQL text; with encryption on it names the lake key, which the connection must have
    (`register_duckdb_key`).

    `union_by_name` is left out when encrypted: DuckDB 1.5 crashes on it together with
    `encryption_config` (duckdb/duckdb#21508), so the files of one table must share a schema.
    """
    where = glob if isinstance(glob, str) else str(storage.readable(glob).resolve())
    encrypted = lake_encrypted()
    parts = ["'" + where.replace("'", "''") + "'"]
    parts += [f"{name} = {value}" for name, value in options.items() if not (encrypted and name == "union_by_name")]
    if encrypted:
        parts.append(f"encryption_config = {{footer_key: '{DUCKDB_KEY_NAME}'}}")
    return f"read_parquet({', '.join(parts)})"


def register_duckdb_key(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Give `con` what it needs to read the lake: the lake key (with encryption on) and, for a remote
    lake, its S3 filesystem (`storage.register_duckdb`); a no-op for a plain local lake.

    It also turns off DuckDB's filter push-down for the connection: DuckDB 1.5 fails to authenticate
    the pages of a pyarrow-encrypted file when a filter is pushed into the scan ("Computed AES tag
    differs"), while the same query with the filter applied after the scan reads correctly.
    """
    if storage.remote_lake_in_use():
        storage.register_duckdb(con)
    if lake_encrypted():
        encoded = base64.b64encode(lake_key()).decode("ascii")
        con.execute(f"PRAGMA add_parquet_key('{DUCKDB_KEY_NAME}', '{encoded}')")
        con.execute(f"SET disabled_optimizers = '{DUCKDB_DISABLED_OPTIMIZERS}'")
    return con


def scratch_duckdb(spill_dir: Path, memory_limit: str, **options: object) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB for one instrument-day's queries over the lake: 2 threads, `memory_limit`
    (it spills beyond it), the lake key when the lake is encrypted, and a spill directory of this
    process's own under `spill_dir`: instrument-days run side by side on PIPELINE_WORKERS. DuckDB
    removes its files when the connection closes, not the directory; those of processes that no
    longer run are removed here (with what a killed one left in them). `options`: more settings."""
    from market_pipeline.core.lake import duckdb_extensions

    remove_dead_owners_dirs(spill_dir, "pid-")
    own_dir = spill_dir / f"pid-{os.getpid()}"
    own_dir.mkdir(parents=True, exist_ok=True)
    config = {"threads": 2, "memory_limit": memory_limit, "temp_directory": str(own_dir), **options}
    return register_duckdb_key(duckdb_extensions.memory_connection(**config))


def write_lake_parquet_atomic(df: pl.DataFrame, final: Path) -> int:
    """A lake Parquet file written atomically, encrypted when the lake is; the bytes written."""
    return write_atomic(final, lambda tmp: write_frame(df, tmp))
