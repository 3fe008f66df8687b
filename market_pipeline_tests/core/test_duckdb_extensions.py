"""DuckDB's extensions are checked against their signatures once per process (core/lake/duckdb_extensions.py):
a connection that may load unsigned files only ever loads a file the process checked, and loads
nothing by itself."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import duckdb
import duckdb_extension_httpfs
import pytest

from market_pipeline.core.lake import duckdb_extensions

HTTPFS = duckdb_extensions.extension_file(duckdb_extension_httpfs, "httpfs")


def fake_wheel(root: Path, name: str, content: bytes) -> SimpleNamespace:
    """A module like a `duckdb-extension-<name>` wheel's, shipping `content` as the extension."""
    wheel = SimpleNamespace(__file__=str(root / "__init__.py"))
    extension = duckdb_extensions.extension_file(wheel, name)
    extension.parent.mkdir(parents=True)
    extension.write_bytes(content)
    return wheel


@pytest.fixture
def checks(monkeypatch):
    """The connections `load` opens to check a signature (DuckDB's defaults): one per check."""
    opened = []
    real_connect = duckdb.connect

    def connect(*args, **kwargs):
        if not args and not kwargs:
            opened.append(1)
        return real_connect(*args, **kwargs)

    monkeypatch.setattr(duckdb_extensions.duckdb, "connect", connect)
    monkeypatch.setattr(duckdb_extensions, "_checked", set())
    return opened


def test_an_extension_is_checked_once_then_loaded_by_every_connection(checks, tmp_path):
    wheel = fake_wheel(tmp_path / "wheel", "httpfs", HTTPFS.read_bytes())
    for _ in range(3):
        with duckdb_extensions.memory_connection() as con:
            duckdb_extensions.load(con, wheel, "httpfs")
            loaded = con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'httpfs'").fetchone()
            assert loaded == (True,)
    assert len(checks) == 1
    extension = duckdb_extensions.extension_file(wheel, "httpfs")
    # The file replaced, as pip replaces it (a new file renamed over it: the loaded one stays mapped).
    replacement = extension.with_name("replacement")
    replacement.write_bytes(HTTPFS.read_bytes())
    os.utime(replacement, ns=(0, 1))
    os.replace(replacement, extension)
    with duckdb_extensions.memory_connection() as con:
        duckdb_extensions.load(con, wheel, "httpfs")
    assert len(checks) == 2


def test_a_file_whose_signature_does_not_match_is_refused_though_the_connection_allows_unsigned_ones(checks, tmp_path):
    tampered = bytearray(HTTPFS.read_bytes())
    tampered[-1] ^= 0xFF  # the signature is the file's last 256 bytes
    wheel = fake_wheel(tmp_path / "wheel", "httpfs", bytes(tampered))
    extension = duckdb_extensions.extension_file(wheel, "httpfs")
    with duckdb_extensions.memory_connection() as con:
        with pytest.raises(duckdb.Error, match="signature"):
            duckdb_extensions.load(con, wheel, "httpfs")
        assert con.execute(
            "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'httpfs'"
        ).fetchone() == (0,)
    assert not duckdb_extensions._checked
    # The check is what refused it: the connection itself would have loaded the file.
    with duckdb_extensions.memory_connection() as con:
        con.execute(f"LOAD '{extension}'")


def test_a_connection_that_allows_unsigned_extensions_downloads_and_autoloads_none():
    with duckdb_extensions.memory_connection() as con:
        settings = con.execute(
            "SELECT current_setting('autoinstall_known_extensions'), current_setting('autoload_known_extensions')"
        ).fetchone()
        assert settings == (False, False)
        with pytest.raises(duckdb.Error, match="httpfs"):
            con.execute("SELECT * FROM read_parquet('s3://bucket/day.parquet')").fetchall()
        assert con.execute(
            "SELECT count(*) FROM duckdb_extensions() WHERE loaded AND extension_name = 'httpfs'"
        ).fetchone() == (0,)
