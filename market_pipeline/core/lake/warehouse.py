"""The warehouse connection layer: one DuckDB connection whose default catalog is the warehouse, of
either kind (`connect`):

- the single DuckDB file `$PIPELINE_DATA_DIR/warehouse.duckdb` (the default, one box): one writer
  process at a time, so a connection waits while another process holds the file's lock
  (`connect_when_free`) and a damaged file is named at once (`check_warehouse`);
- a DuckLake (`PIPELINE_CATALOG_URL=ducklake:postgres:<libpq string>`): an in-memory DuckDB that
  attaches the lake whose catalog lives in PostgreSQL and whose data files live under
  `<lake root>/warehouse/` (the bucket with PIPELINE_LAKE_URL). Every commit is a PostgreSQL
  transaction, so many processes on many hosts write at once; DuckLake retries a commit that lost
  the race when the changes do not conflict (`ducklake_max_retry_count`), and the IO manager retries
  the whole write when they do (defs/common/warehouse_io.py).

Either way the tables and views keep their schema-qualified names (`main.validation_reports`,
`raw.trades`, ...), and the connection can read the lake views (S3 secret and lake key registered,
`parquet_io.register_duckdb_key`). The catalog's password (in the URL or from PGPASSWORD/~/.pgpass)
is never printed: `WarehouseTarget.describe` and every error leave it out.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import duckdb

from market_pipeline.core.errors import ConfigurationError, IntegrityError
from market_pipeline.core.lake import duckdb_extensions, parquet_io, storage

if TYPE_CHECKING:
    from upath import UPath

T = TypeVar("T")

CATALOG_SETTING = "PIPELINE_CATALOG_URL"
DUCKLAKE_POSTGRES = "ducklake:postgres:"
CATALOG_FORM = "ducklake:postgres:host=H port=P dbname=D user=U"
ATTACHED_NAME = "warehouse"  # the DuckLake's name in the connection (its default catalog)
DATA_DIRECTORY = "warehouse"  # under the lake root: the DuckLake's Parquet data files
LOCK_WAIT_SECONDS = 120.0  # how long a connection waits for another process's lock on the file
LOCK_POLL_SECONDS = 0.1
ATTACH_ATTEMPTS = 3
# A libpq `password=...` pair, the value bare or single-quoted (with \' and \\ escapes).
_PASSWORD = re.compile(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


class CatalogUrlError(ConfigurationError, ValueError):
    """A PIPELINE_CATALOG_URL that is not `ducklake:postgres:<libpq string>` (a ValueError for pydantic)."""


class CatalogUnavailable(ConfigurationError):
    """The DuckLake catalog of PIPELINE_CATALOG_URL cannot be attached (server down, wrong database...)."""


@dataclass(frozen=True)
class WarehouseTarget:
    """Where the warehouse is: `path` (the single DuckDB file) or, with `catalog` set, a DuckLake whose
    catalog is the PostgreSQL database of that libpq string and whose files live under `data_path`."""

    path: Path
    catalog: str | None = field(default=None, repr=False)  # may hold the password
    data_path: str | None = None  # the DuckLake's data files: a local directory or an s3:// prefix

    @classmethod
    def build(cls, data_dir: Path, catalog_url: str | None, lake_dir: Path | UPath) -> WarehouseTarget:
        path = data_dir / "warehouse.duckdb"
        if not catalog_url:
            return cls(path)
        data_path = lake_dir / DATA_DIRECTORY
        text = str(data_path) if storage.is_remote(data_path) else str(Path(data_path).resolve())
        return cls(path, parse_catalog_url(catalog_url), text.rstrip("/") + "/")

    @property
    def is_ducklake(self) -> bool:
        return self.catalog is not None

    def exists(self) -> bool:
        """Whether there is a warehouse to read (a DuckLake's catalog is created on first attach)."""
        return self.is_ducklake or self.path.is_file()

    def describe(self) -> str:
        """The warehouse for messages and hints: the file, or the DuckLake without its password."""
        if self.catalog is None:
            return str(self.path.resolve())
        return f"DuckLake {DUCKLAKE_POSTGRES}{redact(self.catalog)} (data files under {self.data_path})"


def parse_catalog_url(url: str) -> str:
    """The libpq string of a `ducklake:postgres:<libpq string>` URL; CatalogUrlError names the form."""
    if not url.startswith(DUCKLAKE_POSTGRES) or not url[len(DUCKLAKE_POSTGRES) :].strip():
        raise CatalogUrlError(f"{CATALOG_SETTING} must be {CATALOG_FORM} (a DuckLake with a PostgreSQL catalog)")
    return url[len(DUCKLAKE_POSTGRES) :].strip()


def redact(text: str) -> str:
    """`text` with every libpq password value replaced by ***."""
    return _PASSWORD.sub("password=***", text)


def connect(target: WarehouseTarget, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection whose default catalog and schema (`main`) are the warehouse, able to read
    the lake views. The caller closes it (it is a context manager)."""
    if target.catalog is None:
        if not read_only:
            target.path.parent.mkdir(parents=True, exist_ok=True)
        return parquet_io.register_duckdb_key(connect_when_free(target.path, read_only=read_only))
    return parquet_io.register_duckdb_key(_attach_ducklake(target))


def _attach_ducklake(target: WarehouseTarget) -> duckdb.DuckDBPyConnection:
    """Attach the DuckLake read-write whatever the caller reads: the first attach creates its catalog
    tables, which a READ_ONLY attach refuses to do (readers never write: `read_only` guards the file).
    Two processes creating a new catalog at once: the loser's attach fails once and is tried again."""
    for attempt in range(1, ATTACH_ATTEMPTS + 1):
        try:
            return _attach_once(target)
        except CatalogUnavailable:
            if attempt == ATTACH_ATTEMPTS:
                raise
            time.sleep(WRITE_RETRY_SECONDS * attempt)
    raise AssertionError("unreachable")


def _attach_once(target: WarehouseTarget) -> duckdb.DuckDBPyConnection:
    assert target.catalog is not None and target.data_path is not None
    con = duckdb_extensions.memory_connection()
    try:
        import duckdb_extension_ducklake
        import duckdb_extension_postgres_scanner

        duckdb_extensions.load(con, duckdb_extension_postgres_scanner, "postgres_scanner")
        duckdb_extensions.load(con, duckdb_extension_ducklake, "ducklake")
        if storage.is_remote(target.data_path):
            storage.register_duckdb(con)  # the data files are in the bucket (also without a remote lake in use)
        else:
            storage.load_httpfs(con)  # DuckDB writes encrypted Parquet only with httpfs's crypto module
            Path(target.data_path).mkdir(parents=True, exist_ok=True)
        options = f"DATA_PATH {_literal(target.data_path)}"
        if parquet_io.lake_encrypted():
            # With lake encryption the DuckLake's data files are encrypted too, each with its own key kept
            # in the catalog (DuckLake's ENCRYPTED), and no rows are inlined into the catalog's tables
            # (small writes would otherwise sit there in plain text). A catalog created unencrypted refuses
            # it, saying "the database is not encrypted but we requested an encrypted database".
            options += ", ENCRYPTED, DATA_INLINING_ROW_LIMIT 0"
        con.execute(f"ATTACH {_literal(DUCKLAKE_POSTGRES + target.catalog)} AS {ATTACHED_NAME} ({options})")
        con.execute(f"USE {ATTACHED_NAME}")
    except duckdb.Error as exc:
        con.close()
        # DuckDB's text quotes the whole libpq string, password included: the cause keeps its class and
        # the redacted text only, and the message keeps what PostgreSQL said after the last quote of it.
        cause = type(exc)(redact(str(exc)))
        raise CatalogUnavailable(
            f"{CATALOG_SETTING}: cannot attach the warehouse {target.describe()}: "
            f"{_attach_failure(str(exc), target.catalog)}; check that PostgreSQL is up and accepts connections "
            f"there, that the database exists, and the user and password ({CATALOG_SETTING}, PGPASSWORD or ~/.pgpass)"
        ) from cause
    except BaseException:
        con.close()
        raise
    return con


def _attach_failure(text: str, catalog: str) -> str:
    """The first line of what PostgreSQL (or DuckDB) said about a failed ATTACH, without the libpq string
    DuckDB quotes before it and with any password left out."""
    said = text.rpartition(catalog)[2].lstrip('": ') if catalog in text else text
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    return redact(lines[0]) if lines else "no reason given"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class WarehouseDamaged(IntegrityError):
    """warehouse.duckdb exists but DuckDB cannot read it: not a database file, or a corrupt block."""

    def __init__(self, path: Path, error: Exception) -> None:
        self.path = path
        super().__init__(
            f"{path} is damaged ({str(error).splitlines()[0]}): move it aside and rebuild it from the lake "
            "(docs/runbook.md, Damaged warehouse)"
        )


def is_lock_conflict(exc: Exception) -> bool:
    """Whether a DuckDB error is another process's lock on the file (worth waiting for), not damage."""
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def check_warehouse(target: WarehouseTarget) -> None:
    """Raise WarehouseDamaged at once when the warehouse file exists and DuckDB cannot open and read
    its catalog (a DuckLake: CatalogUnavailable when it cannot be attached). A lock another process
    holds is no damage: that process opened the file.

    dagster-duckdb's IO manager retries every failed connection (about two minutes of backoff),
    so without this a damaged file looks like a held lock to each warehouse step in turn.
    """
    if target.is_ducklake:
        connect(target).close()  # creates the catalog's tables the first time
        return
    if not target.path.is_file():
        return
    try:
        with duckdb.connect(str(target.path), read_only=True) as con:
            con.execute("SELECT count(*) FROM duckdb_tables()").fetchone()
    except duckdb.Error as exc:
        if not is_lock_conflict(exc):
            raise WarehouseDamaged(target.path, exc) from None


def connect_when_free(
    warehouse: Path, read_only: bool = False, timeout_seconds: float = LOCK_WAIT_SECONDS
) -> duckdb.DuckDBPyConnection:
    """A connection to the warehouse file, retried while another process holds its file lock.

    DuckDB lets one process write a database file, or several read it, never both: a backup
    (`market-pipeline backup` reads it for a fraction of a second) or an analyst's read-only
    session would otherwise fail a warehouse step.
    """
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return duckdb.connect(str(warehouse), read_only=read_only)
        except duckdb.Error as exc:
            if not is_lock_conflict(exc):
                raise WarehouseDamaged(warehouse, exc) from None
            if time.monotonic() >= deadline:
                raise
            time.sleep(LOCK_POLL_SECONDS)


WRITE_ATTEMPTS = 8  # whole transactions, after DuckLake's own commit retries gave up on a real conflict
WRITE_RETRY_SECONDS = 0.2  # the first wait; doubled each attempt


def is_write_conflict(exc: Exception) -> bool:
    """Whether a failed write lost a race with another process's commit and can simply be run again:
    a DuckLake commit conflict (two deletes from the same data file, two creates of one name) or,
    for the file, DuckDB's own transaction conflict."""
    return isinstance(exc, duckdb.TransactionException) and "conflict" in str(exc).lower()


def write_transaction(con: duckdb.DuckDBPyConnection, work: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
    """Run `work(con)` in one transaction, committed whole or not at all, and run it again (after a
    growing pause) when its commit conflicts with another writer's: with a DuckLake catalog several
    processes write the same tables at once; a single-file warehouse has one writer and never retries.
    """
    for attempt in range(1, WRITE_ATTEMPTS + 1):
        con.execute("BEGIN TRANSACTION")
        try:
            result = work(con)
            con.execute("COMMIT")
            return result
        except duckdb.Error as exc:
            _rollback(con)
            if attempt == WRITE_ATTEMPTS or not is_write_conflict(exc):
                raise
            time.sleep(WRITE_RETRY_SECONDS * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass  # a failed COMMIT has already ended the transaction
