"""The incremental_book_L2 messages of a day, kept on disk for sequencing book_snapshot_25 rows.

A snapshot gets the sequence number of the last delta message at or before it, so every message's
(local_timestamp, timestamp) is needed while the snapshots are read: 12 M messages a realistic
day, ~300 MB in memory and growing with the day. They are written instead, while the L2 file
streams, to two scratch files of int64 (the running maximum of local_timestamp, and timestamp);
message i (from 0) has sequence number `day_sequence_base(day) + i + 1`, so it is not stored.
Each batch of snapshots maps the files and searches them (`snapshot_sequence`): memory is the
pages a batch touches (a batch of snapshots in time order touches the span of messages it
covers; one out of order, a binary search's pages), unmapped after the batch.

The snapshots need not wait for the whole L2 file: `MessageHeadsWriter.following` sequences a
batch as soon as the messages written reach past its latest receive time (the running maximum
then rules out every later message), so the two files are read side by side.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

_LOCAL, _TIME = "local_timestamp.i64", "timestamp.i64"


@dataclass(frozen=True)
class MessageHeads:
    """`count` messages in `directory` (nothing read until `sequence` maps them)."""

    directory: Path | None
    count: int

    @classmethod
    def empty(cls) -> MessageHeads:
        return cls(None, 0)

    def sequence(self, local_timestamp: np.ndarray, timestamp: np.ndarray, base: int) -> np.ndarray:
        """`snapshot_sequence` of these snapshots against the messages (mapped for this call only)."""
        if self.directory is None or self.count == 0:
            empty = np.empty(0, np.int64)
            return snapshot_sequence(empty, empty, local_timestamp, timestamp, base)
        msg_local = np.memmap(self.directory / _LOCAL, np.int64, "r", shape=(self.count,))
        msg_time = np.memmap(self.directory / _TIME, np.int64, "r", shape=(self.count,))
        return snapshot_sequence(msg_local, msg_time, local_timestamp, timestamp, base)


class HeadsAbandoned(Exception):
    """The L2 file stopped before the messages a batch of snapshots needs (it was rejected)."""


class MessageHeadsWriter:
    """Appends messages (in file order) to the scratch files; `finish` gives what was written, and
    `following` sequences snapshots while messages are still being appended (on another thread)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.count = 0
        self.running_max = np.iinfo(np.int64).min
        self._local: BinaryIO = open(directory / _LOCAL, "wb")  # closed in close()
        self._time: BinaryIO = open(directory / _TIME, "wb")
        # count and running_max as far as the files hold them; closed: no more will come.
        self._written = threading.Condition()
        self._finished = self._closed = False

    def append(self, local_timestamp: np.ndarray, timestamp: np.ndarray) -> None:
        """Messages' local_timestamp (raw: the running maximum is taken here, across calls) and timestamp."""
        if not len(local_timestamp):
            return
        running = np.maximum(np.maximum.accumulate(local_timestamp.astype(np.int64)), self.running_max)
        running.tofile(self._local)
        timestamp.astype(np.int64).tofile(self._time)
        self._local.flush()
        self._time.flush()
        with self._written:
            self.running_max = int(running[-1])
            self.count += len(local_timestamp)
            self._written.notify_all()

    def close(self) -> None:
        """No more messages; a `following` reader still waiting for some gets HeadsAbandoned unless
        `finish` closed the files."""
        self._local.close()
        self._time.close()
        with self._written:
            self._closed = True
            self._written.notify_all()

    def finish(self) -> MessageHeads:
        """The messages written (the files closed: nothing more can be appended)."""
        with self._written:
            self._finished = True
        self.close()
        return MessageHeads(self.directory, self.count)

    def following(self) -> FollowingHeads:
        """The messages as they are written, for snapshots read beside the L2 file."""
        return FollowingHeads(self)

    def written_past(self, local_timestamp: int) -> int:
        """The count of messages written once every message received at or before `local_timestamp`
        is (a message's running maximum above it, or the file finished). Raises HeadsAbandoned if the
        writer is closed without finishing first."""
        with self._written:
            while not self._finished and self.running_max <= local_timestamp:
                if self._closed:
                    raise HeadsAbandoned(f"the L2 messages stopped before receive time {local_timestamp}")
                self._written.wait()
            return self.count


@dataclass(frozen=True)
class FollowingHeads:
    """`MessageHeads` of a writer still appending: a batch waits for the messages it needs."""

    writer: MessageHeadsWriter

    def sequence(self, local_timestamp: np.ndarray, timestamp: np.ndarray, base: int) -> np.ndarray:
        """`snapshot_sequence` of these snapshots against the messages, once those they need are
        written: the same numbers as against the whole file, since no later message's running
        maximum can be at or before a snapshot's receive time."""
        latest = int(local_timestamp.max()) if len(local_timestamp) else np.iinfo(np.int64).min
        count = self.writer.written_past(latest)
        return MessageHeads(self.writer.directory, count).sequence(local_timestamp, timestamp, base)


@contextmanager
def message_heads_writer(scratch: Path | None = None) -> Iterator[MessageHeadsWriter]:
    """A writer over fresh scratch files in `scratch` (the system's temporary directory when None),
    removed on leaving."""
    if scratch is not None:
        scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".tardis-messages-") as tmp:
        writer = MessageHeadsWriter(Path(tmp))
        try:
            yield writer
        finally:
            writer.close()


def snapshot_sequence(
    msg_local: np.ndarray, msg_time: np.ndarray, local_timestamp: np.ndarray, timestamp: np.ndarray, base: int
) -> np.ndarray:
    """Sequence number of the last delta message at or before each snapshot's local_timestamp.

    `msg_local` is the messages' running maximum of local_timestamp and `msg_time` their timestamp,
    in file order; message i has sequence number `base + i + 1`. Among messages received in the
    same microsecond as the snapshot, the last one whose exchange timestamp is not later than the
    snapshot's (Tardis stamps a snapshot with the update that made it). A snapshot before the day's
    first message gets `base` (before every message).
    """
    if not len(msg_local):
        return np.full(len(local_timestamp), base, np.int64)
    lo = np.searchsorted(msg_local, local_timestamp, side="left")
    chosen = np.searchsorted(msg_local, local_timestamp, side="right") - 1
    # Same-microsecond receipts: walk back past messages with a later exchange time (rare).
    later = (chosen >= lo) & (np.asarray(msg_time[np.clip(chosen, 0, None)]) > timestamp)
    for k in np.nonzero(later)[0]:
        j = chosen[k]
        while j >= lo[k] and msg_time[j] > timestamp[k]:
            j -= 1
        chosen[k] = j
    return (base + 1 + chosen).astype(np.int64)  # chosen = -1 (before every message) gives base
