"""Console log records as one JSON object per line (`PIPELINE_LOG_FORMAT=json`), with python-json-logger.

Every line has the same keys, `null` where a record has no value:

    {"time": "2024-03-02T02:00:01.123456+00:00", "level": "INFO", "component": "market_pipeline.core.lake.files",
     "run_id": null, "asset": null, "partition": null, "instrument": null, "message": "..."}

plus `exc_info` when the record carries an exception or error. `component` is the logger's name.
The context fields come from the record's own attributes (`logger.info(..., extra={"instrument": ...})`)
and, where those are missing, from the `context_from` function given to the formatter, which may
also replace the message (Dagster's records carry the stage's message apart from their own line).
Each line is built from the scrubbed record and then passed through `scrub()` whole, so the extra
fields are cleaned like the message (core.security.scrub).

Text stays the default (`PIPELINE_LOG_FORMAT=text`), on a terminal or not: the format changes only
when the operator asks for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from market_pipeline.core.log_limits import limit_repeated_warnings
from market_pipeline.core.security.scrub import SCRUBBER, scrub

CONTEXT_FIELDS = ("run_id", "asset", "partition", "instrument")
# Record attributes that are neither a line's fields nor worth printing: Dagster's event objects
# (the context function extracts what a line needs from them).
_NOT_PRINTED = ("dagster_event", "dagster_meta", "dagster_event_batch_metadata")

ContextFields = Callable[[logging.LogRecord], Mapping[str, Any]]


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: time, level, component, the context fields, message."""

    def __init__(self, context_from: ContextFields | None = None) -> None:
        super().__init__(
            ["levelname", "name", *CONTEXT_FIELDS, "message"],
            rename_fields={"levelname": "level", "name": "component"},
            reserved_attrs=[*RESERVED_ATTRS, *_NOT_PRINTED],
        )
        self.context_from = context_from

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        log_data["time"] = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat()
        super().add_fields(log_data, record, message_dict)
        if self.context_from is not None:
            for name, value in self.context_from(record).items():
                if value is None or (name in CONTEXT_FIELDS and log_data.get(name) is not None):
                    continue  # a context field the record set itself (extra=) wins
                log_data[name] = value

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        return scrub(log_data)


def json_handler(stream: TextIO | None = None, context_from: ContextFields | None = None) -> logging.Handler:
    """A handler writing JSON lines to stderr (or `stream`), with the secret scrubber as its filter."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLineFormatter(context_from))
    handler.addFilter(SCRUBBER)  # records made before the scrubbing record factory was installed
    limit_repeated_warnings(handler)
    return handler


_root_handler: logging.Handler | None = None


def configure_console_logs(log_format: str) -> None:
    """The process's Python logging (library loggers, not Dagster's run loggers) in `log_format`.

    `text` leaves logging as it is (Python's last-resort handler prints warnings and errors);
    `json` gives the root logger one JSON handler on stderr. Idempotent; a later call replaces it.
    """
    global _root_handler
    root = logging.getLogger()
    if _root_handler is not None:
        root.removeHandler(_root_handler)
        _root_handler = None
    if log_format == "json":
        _root_handler = json_handler()
        root.addHandler(_root_handler)
