"""DuckDB's extensions (httpfs, postgres_scanner, ducklake), loaded from the wheels pinned beside
DuckDB (pyproject.toml), so nothing is downloaded, their signatures checked once per process.

DuckDB checks an extension's signature on every LOAD by hashing the whole file, and every new
in-memory database loads again: 80-190 ms for each of httpfs (21 MB), postgres_scanner (41 MB)
and ducklake (36 MB), measured on 2 cores. A DuckLake warehouse connection loads all three and a run
opens a dozen or more, plus a scratch connection per instrument-day that loads httpfs for a remote
lake: about 7 of the 24 CPU-s of a one-day run on S3 and DuckLake (`market-pipeline run`, 2 cores).

`memory_connection` makes an in-memory DuckDB that may load unsigned extension files, and `load`
checks each file once per process (again if it is replaced), on a connection that checks
signatures (DuckDB refuses a file whose signature does not match), before any such connection
loads it. These connections never download or load an extension by themselves (autoinstall and
autoload off): what they load is what `load` checked. Connections to a warehouse file keep
DuckDB's defaults: one process's connections to one file must share a configuration.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import ModuleType

import duckdb

# (file, mtime, size) of each file checked against its signature in this process: a file replaced
# since (a reinstalled wheel) is checked again before a connection of `memory_connection` loads it.
_checked: set[tuple[Path, int, int]] = set()
_checking = threading.Lock()


def memory_connection(**config: object) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with `config` that loads the extensions `load` checked, each in ~1 ms."""
    return duckdb.connect(
        config={
            **config,
            "allow_unsigned_extensions": True,
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )


def extension_file(wheel: ModuleType, name: str) -> Path:
    """The file of the extension `name` that the `duckdb-extension-<name>` wheel (`wheel`, its
    module) ships for this DuckDB."""
    return Path(wheel.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"


def load(con: duckdb.DuckDBPyConnection, wheel: ModuleType, name: str) -> None:
    """LOAD the extension `name` of the wheel `wheel` (`extension_file`), its signature checked
    first if this process has not checked that file yet."""
    path = extension_file(wheel, name)
    stat = path.stat()
    version = (path, stat.st_mtime_ns, stat.st_size)
    if version not in _checked:
        with _checking:
            if version not in _checked:
                with duckdb.connect() as checking:  # DuckDB's defaults: signatures checked
                    checking.execute(f"LOAD '{path}'")
                _checked.add(version)
    con.execute(f"LOAD '{path}'")
