"""A remote lake's objects read at most once per step, and once per run while they fit a disk budget:
whole local copies, and the requests counted.

Reading a Parquet object of a bucket in place costs a ranged GET per read of its column chunks:
the metrics' rank pass reads a books file once per hour, and the whole graph over two small days
made 7,136 GETs (a 52 MB books file alone ~8,000 in a realistic day, minutes on a loopback
server). Inside `local_copies(copies)` (a step: `defs/common/lake_reads.py`) every lake read
(`parquet_io`: pyarrow, polars, DuckDB's `read_parquet` of one file) first asks `local_copy`,
which downloads the object whole, in one GetObject, the first time and returns the local file after
that: every later pass of the step reads local disk. Memory stays bounded by the readers' batches
(the copy streams to disk in 1 MB chunks).

Where a copy goes (`Copies`): into the run's directory, shared by all its steps, while that holds
less than the budget (`PIPELINE_LAKE_COPIES_MAX_GB`), else into the step's own directory, removed
when the step ends. A later step of the run reads a kept copy without a GET: the books a step wrote
are read by five more, each of which fetched them whole before (the whole graph on a loopback bucket
took 1.6x the local wall). The run's directory is removed when the run ends (`scratch.py`); disk
holds at most the budget plus one step's reads.

A read of the footer alone (`parquet_io.num_rows`, `read_schema`) of an object the step holds no
copy of fetches only the object's tail (its last 64 KB, or the whole footer when larger: one or two
ranged GetObjects), kept beside the copies for the step's next footer reads: the raw checks compare
a raw file's row count with its statistics and read nothing else of it.

The step's worker processes (`defs/common/parallel.py`) and the run's other step processes share
the directories: an object is downloaded under an exclusive `flock` of its own, so two processes
never fetch it twice. An object this process writes (`files.atomic_path`, an upload) becomes the
copy itself (`keep_uploaded`, replacing an older copy atomically): the run reads back what it wrote
without a GET, and never an older copy.

Every request of the lake's boto3 client is counted (`RequestCounts`, through botocore's
`after-call` event), GETs and the bytes they returned apart: outside any step too, so the counts of
a step are the difference of two `request_counts()`. The other clients of a remote lake are not
counted: pyarrow's S3 filesystem makes the listings and `is_file`/`stat` HEADs of lake paths and
reads outside a step (the CLI's reader and export), DuckDB's httpfs reads the warehouse's views.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from market_pipeline.core import context
from market_pipeline.core.lake.paths import make_private_dirs

_CHUNK_BYTES = 1 << 20
_TAIL_BYTES = 1 << 16  # a Parquet footer is read from the object's last 64 KB (pyarrow's own first read)


@dataclass(frozen=True)
class Copies:
    """Where this process's step keeps its copies: the run's directory (`kept`, shared by the run's
    steps) while it holds less than `budget` bytes, else the step's own (`step`)."""

    kept: Path
    step: Path
    budget: int

    def kept_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.kept.rglob("*") if f.is_file()) if self.kept.is_dir() else 0


_locks = threading.Lock()
_object_locks: dict[str, threading.Lock] = {}


@dataclass(frozen=True)
class RequestCounts:
    """Requests to the lake's bucket: all of them, the GetObjects (those of a part, a footer, apart)
    and the bytes those returned."""

    requests: int = 0
    gets: int = 0
    get_bytes: int = 0
    ranged_gets: int = 0

    def __add__(self, other: RequestCounts) -> RequestCounts:
        return RequestCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def __sub__(self, other: RequestCounts) -> RequestCounts:
        return RequestCounts(*(getattr(self, f.name) - getattr(other, f.name) for f in fields(self)))


_counts = RequestCounts()
_counts_lock = threading.Lock()


def request_counts() -> RequestCounts:
    """This process's requests so far (plus those `add_request_counts` added from its workers)."""
    with _counts_lock:
        return _counts


def add_request_counts(counts: RequestCounts) -> None:
    """Add a worker process's requests to this process's (the worker's step is this one)."""
    global _counts
    with _counts_lock:
        _counts = _counts + counts


def count_requests(client: Any) -> Any:
    """`client` (a boto3 S3 client), each of its requests counted from now on."""
    client.meta.events.register("after-call.s3", _counted)
    return client


def _counted(model: Any, parsed: dict[str, Any], **_: Any) -> None:
    get = model.name == "GetObject"
    size = int(parsed.get("ContentLength") or 0) if get else 0
    add_request_counts(RequestCounts(1, int(get), size, int(get and bool(parsed.get("ContentRange")))))


def current_copies() -> Copies | None:
    """The copies of the running step (the core context's; None: reads go to the bucket itself)."""
    return context.current().lake_copies


@contextmanager
def local_copies(copies: Copies) -> Iterator[Copies]:
    """Every remote lake object read inside is fetched once; the step's own copies removed at the end."""
    try:
        with context.using_changes(lake_copies=copies):
            yield copies
    finally:
        shutil.rmtree(copies.step, ignore_errors=True)


def copy_name(key: str) -> str:
    """The file name of the copy of the object `bucket/key`, flat: a hash of the key and its last
    part (the key's folders, `lake/books/exchange=X/...`, are not made again under the copies)."""
    return f"{hashlib.sha256(key.encode()).hexdigest()[:32]}-{key.rpartition('/')[2]}"


def _existing_copy(key: str) -> Path | None:
    """The copy of the object `bucket/key` this run or step holds (None: none, or outside a step)."""
    copies = current_copies()
    if copies is None:
        return None
    for directory in (copies.kept, copies.step):
        if (directory / copy_name(key)).is_file():
            return directory / copy_name(key)
    return None


def _copy_path(key: str) -> Path | None:
    """Where the copy of the object `bucket/key` is or goes (None outside a step): the run's
    directory while it holds less than the budget, else the step's."""
    copies = current_copies()
    if copies is None:
        return None
    found = _existing_copy(key)
    if found is not None:
        return found
    directory = copies.kept if copies.kept_bytes() < copies.budget else copies.step
    return directory / copy_name(key)


def local_copy(path: Any, key: str, client: Any) -> Path:
    """The local copy of the object `key` (`bucket/name`), fetched whole with `client` unless it is
    there already. Only inside `local_copies`."""
    copy = _copy_path(key)
    assert copy is not None, "local_copy outside local_copies"
    if copy.is_file():
        return copy
    with _locks:
        thread_lock = _object_locks.setdefault(key, threading.Lock())
    with thread_lock:  # flock is per open file: the threads of one process take turns here first
        make_private_dirs(copy.parent)
        with open(copy.with_name(copy.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not copy.is_file():
                _download(client, key, copy, path)
    return copy


def local_footer(path: Any, key: str, client: Any) -> Path:
    """A local file a footer-only reader can open for the object `key`: the step's copy when it has
    one, else the object's tail, fetched once per step. Only inside `local_copies`."""
    copy = _copy_path(key)
    assert copy is not None, "local_footer outside local_copies"
    tail = _tail_path(copy)
    if copy.is_file():
        return copy
    if tail.is_file():
        return tail
    make_private_dirs(copy.parent)
    with open(copy.with_name(copy.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if copy.is_file():
            return copy
        if not tail.is_file():
            _write_tail(client, key, tail, path)
    return tail


def _tail_path(copy: Path) -> Path:
    return copy.with_name(copy.name + ".tail")


def _write_tail(client: Any, key: str, tail: Path, path: Any) -> None:
    """The last bytes of `key` that hold its Parquet footer (length and magic in its last 8 bytes)."""
    bucket, _, name = key.partition("/")
    body = client.get_object(Bucket=bucket, Key=name, Range=f"bytes=-{_TAIL_BYTES}")["Body"].read()
    needed = int.from_bytes(body[-8:-4], "little") + 8 if len(body) >= 8 else len(body)
    if needed > len(body) == _TAIL_BYTES:  # a footer larger than the first tail
        body = client.get_object(Bucket=bucket, Key=name, Range=f"bytes=-{needed}")["Body"].read()
    part = tail.with_name(f".{tail.name}.part-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        part.write_bytes(body)
        os.replace(part, tail)
    finally:
        part.unlink(missing_ok=True)


def _download(client: Any, key: str, copy: Path, path: Any) -> None:
    """One GetObject of `key`, streamed to a temporary file renamed to `copy` once complete."""
    bucket, _, name = key.partition("/")
    tmp = copy.with_name(f".{copy.name}.part-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        response = client.get_object(Bucket=bucket, Key=name)
        expected = int(response["ContentLength"])
        with open(tmp, "wb") as out:
            for chunk in response["Body"].iter_chunks(_CHUNK_BYTES):
                out.write(chunk)
            written = out.tell()
        if written != expected:
            raise OSError(f"{path}: the download stopped at {written} of {expected} bytes; run the step again")
        os.replace(tmp, copy)
    finally:
        tmp.unlink(missing_ok=True)


def keep_uploaded(local: Path, key: str) -> bool:
    """After `local` was uploaded as `key`: inside a step, move it to be the object's copy (the
    step's later reads of `key` need no GET, and an older copy is replaced); else leave it.
    Returns whether it was moved."""
    copies = current_copies()
    if copies is None:
        return False
    for directory in (copies.kept, copies.step):  # the old object's copy and footer
        old = directory / copy_name(key)
        old.unlink(missing_ok=True)
        _tail_path(old).unlink(missing_ok=True)
    copy = _copy_path(key)
    assert copy is not None
    make_private_dirs(copy.parent)
    try:
        os.replace(local, copy)
    except OSError:  # another file system: the next read fetches the new object
        copy.unlink(missing_ok=True)
        return False
    return True
