"""A consistent copy of the DuckDB warehouse, taken while pipeline runs may be writing it.

The warehouse is attached READ_ONLY, which takes DuckDB's shared file lock: no writer can change
it while its tables are copied, so the copy is one consistent state (never a torn file). A writer
that holds the lock makes the backup wait, saying so; pipeline writers meeting the backup's lock
retry (the DuckDB IO manager backs off for about 100 s), and the copy of the few quality and
metrics tables takes a moment.

The copy is a new DuckDB file with every schema, every table (its own CREATE TABLE, so types,
defaults and constraints stay) and every view (user types, sequences and macros are refused by
name: the pipeline creates none), except the lake views (`raw.*`, `books.*`): those
read absolute Parquet globs under the lake, which is not in a backup; the next run's `lake_views`
step (or `market-pipeline run`) creates them again over the restored data dir's lake.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import psutil

from market_pipeline.core.errors import BlockedError, ConfigurationError
from market_pipeline.core.lake.catalog import BARS_VIEWS, LAKE_VIEWS

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")
_LAKE_VIEW_NAMES = {(view.schema, view.view) for view in (*LAKE_VIEWS, *BARS_VIEWS)}


@dataclass(frozen=True)
class LockWait:
    """How long to wait for a writer's lock, and where to say so."""

    timeout_seconds: float
    notify: Callable[[str], None]
    poll_seconds: float = 0.5
    report_every_seconds: float = 30.0


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def lock_holder(message: str) -> str:
    """Who holds the lock, from DuckDB's error text (and the process's command line if visible)."""
    match = _LOCK_HOLDER.search(message)
    if not match:
        return "another process"
    pid = int(match["pid"])
    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        command = match["program"]
    return f"PID {pid} ({command[:120]})"


def attach_read_only(con: duckdb.DuckDBPyConnection, warehouse: Path, alias: str, wait: LockWait) -> None:
    """ATTACH `warehouse` READ_ONLY as `alias`, waiting while a writer holds it; BlockedError after the timeout."""
    started = time.monotonic()
    next_report = started
    while True:
        try:
            con.execute(f"ATTACH {_literal(str(warehouse))} AS {_quote(alias)} (READ_ONLY)")
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            holder = lock_holder(str(exc))
        now = time.monotonic()
        waited = now - started
        if waited >= wait.timeout_seconds:
            raise BlockedError(
                f"gave up after {waited:.0f} s waiting for {warehouse.name} ({warehouse}), held by {holder}; "
                "run the backup again when no run writes the warehouse, or give a longer --wait-timeout"
            )
        if now >= next_report:
            wait.notify(
                f"waiting for {warehouse.name}, held by {holder} "
                f"({waited:.0f} s so far, giving up after {wait.timeout_seconds:.0f} s)"
            )
            next_report = now + wait.report_every_seconds
        time.sleep(wait.poll_seconds)


def copy_warehouse(warehouse: Path, target: Path, wait: LockWait) -> dict[str, object]:
    """Copy `warehouse` into the new DuckDB file `target`; returns the manifest's part description
    (row count of every table, views copied, lake views left for the next run)."""
    tables: dict[str, int] = {}
    views: list[str] = []
    lake_views: list[str] = []
    with duckdb.connect(str(target)) as con:
        attach_read_only(con, warehouse, "src", wait)
        _refuse_uncopied_objects(con, warehouse)
        schemas = con.execute(
            "SELECT schema_name FROM duckdb_schemas() WHERE database_name = 'src' AND NOT internal"
        ).fetchall()
        for (schema,) in schemas:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {_quote(schema)}")
        for schema, table, sql in con.execute(
            "SELECT schema_name, table_name, sql FROM duckdb_tables() "
            "WHERE database_name = 'src' AND NOT internal AND NOT temporary ORDER BY schema_name, table_name"
        ).fetchall():
            name = f"{_quote(schema)}.{_quote(table)}"
            con.execute(sql)  # the table's own CREATE TABLE, in the target (the connection's database)
            con.execute(f"INSERT INTO {name} SELECT * FROM src.{name}")
            tables[f"{schema}.{table}"] = con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        for schema, view, sql in con.execute(
            "SELECT schema_name, view_name, sql FROM duckdb_views() "
            "WHERE database_name = 'src' AND NOT internal AND NOT temporary ORDER BY schema_name, view_name"
        ).fetchall():
            if (schema, view) in _LAKE_VIEW_NAMES:
                lake_views.append(f"{schema}.{view}")
                continue
            con.execute(f"SET schema = {_literal(schema)}")  # the view's unqualified names resolve as in the source
            con.execute(sql)
            views.append(f"{schema}.{view}")
        con.execute("DETACH src")  # releases the warehouse: writers may go on
        con.execute("CHECKPOINT")
    return {"tables": tables, "views": views, "lake_views_not_copied": lake_views}


# Objects the copy does not carry over; the pipeline creates none, so one is someone's addition.
_UNCOPIED = (
    ("type", "SELECT schema_name, type_name FROM duckdb_types() WHERE database_name = 'src' AND NOT internal"),
    ("sequence", "SELECT schema_name, sequence_name FROM duckdb_sequences() WHERE database_name = 'src'"),
    ("macro", "SELECT schema_name, function_name FROM duckdb_functions() WHERE database_name = 'src' AND NOT internal"),
)


def _refuse_uncopied_objects(con: duckdb.DuckDBPyConnection, warehouse: Path) -> None:
    """Fail, naming them, rather than leave user types, sequences or macros silently out of the copy."""
    found = [f"{kind} {schema}.{name}" for kind, sql in _UNCOPIED for schema, name in con.execute(sql).fetchall()]
    if found:
        raise ConfigurationError(
            f"{warehouse}: the backup copies schemas, tables and views only, not {', '.join(found)}; "
            "drop them or back the warehouse up with the services stopped"
        )
