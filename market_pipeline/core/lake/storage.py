"""Where the lake lives: a local directory (the default) or an S3 prefix (`PIPELINE_LAKE_URL=s3://bucket/prefix`).

A lake path is a `pathlib.Path` for a local lake and a `upath.UPath` (`s3://bucket/key`) for a remote
one. Both have the same path API (`/`, `parent`, `name`, `is_file`, `stat`, `rglob`, `unlink`,
`open`), so the stages build and test lake paths the same way. A remote lake's reads and listings
go through pyarrow's `S3FileSystem`, its uploads through boto3 (`upload`), all with one AWS chain
and endpoint:
- pyarrow reads through it directly (`arrow_location`);
- polars reads a remote file through a pyarrow dataset on it (`parquet_io.scan`);
- UPath's path calls go through `ArrowS3`, the same filesystem behind fsspec's interface
  (fsspec's own `s3fs` is not used);
- DuckDB (the lake views) reads with its httpfs extension, given the same credentials and endpoint
  (`register_duckdb`, which says why).
Inside a step every read of an object goes to its local copy instead (`readable`,
core/lake/local_copies.py): one GetObject per object and step, through the counted boto3 client.

Writes are whole-object PUTs: `files.atomic_path` lets the writer fill a local temporary file
under the upload directory the core context names (under PIPELINE_DATA_DIR) and then uploads it
(`upload`, with boto3's transfer: see there why); S3 shows an object only once its PUT (or its
multipart upload) completes, so a writer killed mid-way leaves no partial object, only an
unfinished multipart upload that S3 never lists (a bucket lifecycle rule aborts them;
docs/operations.md, Scaling out).

Credentials and region come from the AWS chain (AWS_ACCESS_KEY_ID
/ AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and the shared files, an instance or pod
role), the endpoint of an S3-compatible store from AWS_ENDPOINT_URL. Nothing here logs them.
"""

from __future__ import annotations

import functools
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from market_pipeline.core import context
from market_pipeline.core.errors import ConfigurationError
from market_pipeline.core.lake import local_copies
from market_pipeline.core.lake.store_errors import translated, unavailable

if TYPE_CHECKING:
    import duckdb
    from upath import UPath

S3_SCHEME = "s3://"


class RemoteLakeError(ConfigurationError, ValueError):
    """A PIPELINE_LAKE_URL that is not an s3:// URL with a bucket, or credentials DuckDB refuses
    (a ValueError for pydantic, a configuration error for the CLI's exit code)."""


@functools.cache
def s3_filesystem() -> pafs.S3FileSystem:
    """This process's S3 client (one per process: it holds the connection pool and the credentials).

    pyarrow's constructor reads the credentials and region from the AWS chain but not the endpoint
    variables, so AWS_ENDPOINT_URL_S3 (else AWS_ENDPOINT_URL) is handed over here as the AWS SDKs do.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not endpoint:
        return pafs.S3FileSystem()
    scheme, _, host = endpoint.rstrip("/").partition("://")
    return pafs.S3FileSystem(endpoint_override=host or scheme, scheme=scheme if host else "https")


def _arrow_s3_class() -> type:
    """fsspec's face of `s3_filesystem` (built on first use: fsspec is imported only for a remote lake)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class ArrowS3(ArrowFSWrapper):  # type: ignore[misc]
        protocol = ("s3", "s3a")
        root_marker = ""
        cachable = False  # the client is `s3_filesystem`'s, cached there once per process

        def __init__(self, **storage_options: Any) -> None:
            super().__init__(s3_filesystem(), **storage_options)

        @classmethod
        def _strip_protocol(cls, path: Any) -> str:
            text = str(path)
            for scheme in ("s3://", "s3a://"):
                text = text.removeprefix(scheme)
            return text.rstrip("/")

        @classmethod
        def _parent(cls, path: Any) -> str:  # ArrowFSWrapper's is an instance method; UPath calls the class's
            return cls._strip_protocol(path).rpartition("/")[0]

    return ArrowS3


@functools.cache
def _register_fsspec() -> type:
    import fsspec

    cls = _arrow_s3_class()
    fsspec.register_implementation("s3", cls, clobber=True)
    return cls


def lake_root(url: str | None, default: Path) -> Path | UPath:
    """The lake's root: `default` (a local directory) without a URL, else the `s3://bucket/prefix` path."""
    if not url:
        return default
    if not url.startswith(S3_SCHEME) or not url[len(S3_SCHEME) :].strip("/"):
        raise RemoteLakeError("PIPELINE_LAKE_URL must be s3://bucket or s3://bucket/prefix")
    _register_fsspec()
    from upath import UPath

    return UPath(url.rstrip("/"))


def is_remote(path: object) -> bool:
    """Whether `path` names an object of a remote lake (not a local file)."""
    return str(path).startswith(S3_SCHEME)


def arrow_location(path: Path | UPath) -> tuple[pafs.FileSystem | None, str]:
    """(filesystem, path) for pyarrow: the S3 filesystem and `bucket/key` for a remote path, else
    (None, the local path) so pyarrow opens local files as it always did."""
    text = str(path)
    if text.startswith(S3_SCHEME):
        return s3_filesystem(), text[len(S3_SCHEME) :]
    return None, text


def upload_temp_path(final: UPath) -> Path:
    """A fresh local file name for the object `final` while it is written: under the core context's
    upload directory (the system's temporary directory without one)."""
    upload_dir = context.current().upload_dir
    directory = upload_dir if upload_dir is not None else Path(tempfile.gettempdir())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"{final.name}.upload-{os.getpid()}-{uuid.uuid4().hex}"


def upload(local: Path, final: UPath) -> None:
    """PUT the finished local file `local` as the object `final`: whole, or as one multipart upload.

    boto3's managed transfer, not pyarrow's output stream: pyarrow's stream completes the upload
    with the parts it has when it is dropped after an error (its destructor closes it), which could
    publish a truncated object over a good one; boto3 aborts a failed multipart upload, and a single
    PUT carries a checksum the server verifies. Same AWS chain and endpoint as `s3_filesystem`.
    """
    _, key = arrow_location(final)
    bucket, _, name = key.partition("/")
    with translated(final):
        _s3_client().upload_file(str(local), bucket, name)
    local_copies.keep_uploaded(local, key)  # inside a step: what it reads back of `final`


@functools.cache
def _s3_client() -> Any:
    import boto3

    # AWS_ENDPOINT_URL(_S3) honoured by botocore itself; every request counted (`local_copies`).
    return local_copies.count_requests(boto3.session.Session().client("s3"))


def readable(path: Path | UPath) -> Path | UPath:
    """What a reader of the lake path `path` opens: inside a step (`local_copies.local_copies`) the
    local copy of a remote object, fetched the first time; else `path` itself."""
    if local_copies.current_copies() is None or not is_remote(path):
        return path
    _, key = arrow_location(path)
    return local_copies.local_copy(path, key, _s3_client())


def footer_readable(path: Path | UPath) -> Path | UPath:
    """`readable` for a reader of the footer alone: inside a step a local file holding the object's
    footer (its copy, or its tail), else `path` itself."""
    if local_copies.current_copies() is None or not is_remote(path):
        return path
    _, key = arrow_location(path)
    return local_copies.local_footer(path, key, _s3_client())


def iter_files(root: Path | UPath) -> Iterator[Path | UPath]:
    """Every file under `root`, lazily, depth first in sorted order (a missing root has none): a
    remote lake is listed one prefix level at a time, so finding the first file costs a few LISTs."""
    fs, base = arrow_location(root)
    if fs is None:
        for directory, dirs, files in os.walk(base):
            dirs.sort()
            for name in sorted(files):
                yield Path(directory) / name
        return
    with translated(root):
        infos = sorted(fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)), key=lambda i: i.path)
    for info in infos:
        if info.type == pafs.FileType.File:
            yield root / info.base_name
    for info in infos:
        if info.type == pafs.FileType.Directory:
            yield from iter_files(root / info.base_name)


def remote_tree_size(root: UPath) -> tuple[int, int]:
    """(bytes, objects) under a remote lake path, from the LIST pages alone (no request per object)."""
    fs, base = arrow_location(root)
    assert fs is not None
    with translated(root):
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    sizes = [info.size for info in infos if info.type == pafs.FileType.File]
    return sum(sizes), len(sizes)


def check_lake_store(root: UPath) -> None:
    """LakeStoreUnavailable now, naming what to check, when the remote lake's bucket cannot be listed
    (endpoint unreachable, credentials refused) or does not exist: a LIST of the lake's prefix, and a
    HEAD of the bucket when that prefix is empty (a missing bucket lists as empty)."""
    fs, base = arrow_location(root)
    assert fs is not None
    bucket = base.partition("/")[0]
    with translated(root):
        if fs.get_file_info(pafs.FileSelector(base, allow_not_found=True)):
            return
        if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
            raise unavailable("missing bucket", bucket, "HeadBucket found no such bucket")


def remote_lake_in_use() -> bool:
    """Whether the lake is remote (the core context says): DuckDB connections then read s3://."""
    return context.current().remote_lake


def register_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    """Let `con` read s3:// paths: DuckDB's httpfs extension (from the `duckdb-extension-httpfs`
    wheel, so nothing is downloaded) with a temporary secret holding the credentials the AWS chain
    resolves now (boto3's resolver: the same variables, files and roles as pyarrow's client) and the
    endpoint. The secret lives in the connection's memory only and is never printed.

    Measured against the loopback server (the books of two instruments and days, 105 MB), a query
    over the books' glob takes 0.7 s through httpfs and 3.9 s through the pyarrow filesystem
    registered in DuckDB with fsspec (every range read a Python call), so DuckDB reads natively.
    """
    import boto3

    load_httpfs(con)
    session = boto3.Session()
    credentials = session.get_credentials()
    options = {"URL_STYLE": "path"}
    region = session.region_name or os.environ.get("AWS_REGION")
    if region:
        options["REGION"] = region
    if credentials is not None:
        frozen = credentials.get_frozen_credentials()
        options["KEY_ID"], options["SECRET"] = frozen.access_key, frozen.secret_key
        if frozen.token:
            options["SESSION_TOKEN"] = frozen.token
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.rstrip("/").partition("://")
        options["ENDPOINT"], options["USE_SSL"] = (host, "false" if scheme == "http" else "true")
    else:
        options["URL_STYLE"] = "vhost"  # AWS itself
    fields = ", ".join(f"{name} {_sql_value(value)}" for name, value in options.items())
    try:
        con.execute(f"CREATE OR REPLACE TEMPORARY SECRET market_pipeline_lake (TYPE s3, {fields})")
    except Exception:  # DuckDB's message quotes the statement, credentials included
        raise RemoteLakeError("DuckDB refused the remote lake's S3 secret (its text is withheld)") from None


def load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    """Load DuckDB's httpfs extension from its wheel: S3 access, and the full crypto module DuckDB
    needs to write encrypted Parquet (without it DuckDB can only read encrypted files)."""
    import duckdb_extension_httpfs

    from market_pipeline.core.lake import duckdb_extensions

    duckdb_extensions.load(con, duckdb_extension_httpfs, "httpfs")


def _sql_value(value: str) -> str:
    return value if value in ("true", "false") else "'" + value.replace("'", "''") + "'"
