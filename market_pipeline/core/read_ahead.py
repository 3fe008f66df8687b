"""Read ahead: an iterator's next item made on a helper thread while the caller works on this one.

Readers of large files use it so that decoding the next batch (Arrow and polars release the
GIL) overlaps the caller's work on the current one; memory grows by one item.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def prefetched(items: Iterator[T], pool: ThreadPoolExecutor) -> Iterator[T]:
    """`items`, each produced on `pool`'s thread while the caller works on the previous one.
    An exception raised making an item is raised here, in its place.

    The thread runs in a copy of the caller's context, so what `items` reports (progress) is the
    caller's task."""
    context = contextvars.copy_context()
    pending = pool.submit(context.run, next, items, None)
    while True:
        item = pending.result()
        if item is None:
            return
        pending = pool.submit(context.run, next, items, None)
        yield item


def read_ahead(items: Iterator[T], thread_name: str) -> Iterator[T]:
    """`prefetched` on a thread of its own, which ends with the iteration (or waits for the item
    in the making when the caller stops early)."""
    with ThreadPoolExecutor(1, thread_name_prefix=thread_name) as pool:
        yield from prefetched(items, pool)
