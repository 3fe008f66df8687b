"""The progress tasks a run publishes, as the CLI would see them (fixture `progress_tasks`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture
def progress_tasks() -> Iterator[list[tuple[str, bool]]]:
    """(label, finished) of every progress task published while the test runs, as the CLI would
    see them; kernels compiling (transient tasks of a cold numba cache) left out."""
    from market_pipeline.core.telemetry import progress

    seen: list[tuple[str, bool]] = []
    with progress.watching(lambda u: None if u.transient else seen.append((u.label, u.finished))):
        yield seen
