"""At most a few copies of one warning in a process's output: a warning logged in a loop (a
library's per-value warning over millions of values) must not bury everything else.

`REPEATED_WARNINGS` lets the first `REPEATED_WARNING_LIMIT` warnings logged from one line of code
through, marks the last of them as repeating, and drops the rest. It is a handler filter (a
logger's own filters do not see records its children propagate), installed on the root logger's
handlers and on `logging.lastResort`, which prints library warnings when the root logger has no
handler. Errors are never dropped.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter

REPEATED_WARNING_LIMIT = 5
_VERDICT = "_repeated_warning_verdict"  # a record passes each handler's filter: decide once


class RepeatedWarningLimit(logging.Filter):
    """Passes the first `limit` WARNING records of each call site (file and line), then none."""

    def __init__(self, limit: int = REPEATED_WARNING_LIMIT) -> None:
        super().__init__()
        self.limit = limit
        self.seen: Counter[tuple[str, int]] = Counter()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        verdict = getattr(record, _VERDICT, None)
        if verdict is not None:
            return verdict
        verdict = True
        if record.levelno == logging.WARNING:
            with self._lock:
                self.seen[record.pathname, record.lineno] += 1
                n = self.seen[record.pathname, record.lineno]
            if n == self.limit:
                record.msg = f"{record.getMessage()} [logged {n} times; further repeats are not shown]"
                record.args = ()
            verdict = n <= self.limit
        setattr(record, _VERDICT, verdict)
        return verdict


REPEATED_WARNINGS = RepeatedWarningLimit()


def limit_repeated_warnings(handler: logging.Handler | None = None) -> None:
    """Put the limit on `handler`, or on the root logger's handlers and the last-resort handler (idempotent)."""
    handlers = [handler] if handler is not None else [*logging.getLogger().handlers, logging.lastResort]
    for each in handlers:
        if each is not None and REPEATED_WARNINGS not in each.filters:
            each.addFilter(REPEATED_WARNINGS)
