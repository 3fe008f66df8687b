"""What core needs from the settings, built once at the edge and read where it is used.

Core never reads the settings. The entry points (the code location's `pipeline` resource for each
step and sensor, a parallel step's worker processes, the CLI, `lake.open`) build one immutable
`CoreContext` from them and run the work inside `using(context)`; core reads it with `current()`.

It is bound to the running context (a `contextvars.ContextVar`, as `decimal.localcontext` and
OpenTelemetry's context are), not set process-wide: a binding ends with its block, so nothing
needs resetting after a test, and two bindings in one process (a sensor beside a step, two
tests, the read API beside a run) never see each other's. A thread core starts for the work runs
its tasks in a copy of the starting thread's context (`contextvars.copy_context().run`, as
`read_ahead` does); a worker process binds the context its parent's settings describe.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from market_pipeline.core.lake.local_copies import Copies
    from market_pipeline.core.telemetry.progress import Sink
    from market_pipeline.core.telemetry.telemetry import Recorded, TelemetryConfig

T = TypeVar("T")


@dataclass(frozen=True)
class CoreContext:
    """The settings core works with; the defaults are a plain local lake without a key or exporters."""

    # The settings' master key (base64 text, as PIPELINE_MASTER_KEY; the environment's wins when set).
    master_key: str | None = field(default=None, repr=False)
    lake_encrypted: bool = False  # every lake file written encrypted and read decrypted
    remote_lake: bool = False  # the lake is an s3:// prefix: DuckDB connections read it over S3
    upload_dir: Path | None = None  # where a remote lake's objects are filled before their upload
    lake_copies: Copies | None = None  # inside a step on a remote lake: where its reads are copied
    telemetry: TelemetryConfig | None = None  # where metrics go (None: nowhere)
    metrics_sink: list[Recorded] | None = None  # a worker process's metrics, exported by its parent
    progress_sink: Sink | None = None  # who shows progress updates (None: no one)


_PLAIN = CoreContext()  # frozen: one shared default is safe
_current: contextvars.ContextVar[CoreContext] = contextvars.ContextVar("market_pipeline_core", default=_PLAIN)


def current() -> CoreContext:
    """The context the running code was given (the defaults outside any `using`)."""
    return _current.get()


@contextmanager
def using(context: CoreContext) -> Iterator[CoreContext]:
    """Run the block with `context`; the one before it comes back when the block ends."""
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def using_changes(**changes: Any) -> AbstractContextManager[CoreContext]:
    """`using` the current context with some of its fields changed."""
    return using(replace(current(), **changes))


def bound_iterator(context: CoreContext, items: Iterator[T]) -> Iterator[T]:
    """`items`, each one produced in `context` (a lazy reader handed to code outside its binding)."""
    while True:
        with using(context):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item
