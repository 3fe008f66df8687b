"""Secret scrubbing of Dagster's event log and console output, with public APIs only.

`harden_code_location(settings)` is what the code location (`market_pipeline.definitions`) calls:
the process-wide protections of `core.security.hardening.harden_process` plus the Dagster part.

How a `context.log` call reaches the event log in Dagster 1.13: `DagsterLogManager` is a
`logging.Logger`; it creates the record through the standard record factory, then sets the
Dagster event it carries (a step failure with its error and stack trace, a materialization with
its metadata) as a record attribute from `extra={"dagster_event": ...}`; its handler then builds
`record.dagster_meta` (message, event) and hands the same record first to the event-log handler,
which stores it, then to the `python_logs.dagster_handler_config` handlers, then re-logs it to
the run's `@dg.logger`s (the console logger). So:

- the scrubbing record factory (`install_log_scrubbing`, stdlib `logging.setLogRecordFactory`)
  cleans the message, its arguments and any exception text as the record is created: the
  stored `user_message`, the console line and every handler see the clean text;
- the Dagster event is attached after the factory ran, so it is registered here with
  `scrub_record_attribute`: every record the factory made cleans `dagster_event` and
  `dagster_meta` whenever they are read or set, i.e. before the event-log handler reads them.
  A Dagster event is cleaned through its public serialization (`dg.serialize_value` /
  `dg.deserialize_value`): every string in it (error messages, stack traces, causes, metadata
  values) goes through `scrub()`.

"dagster_event" and "dagster_meta" are the names Dagster gives these record attributes (no public
constant exports them); market_pipeline_tests/core/test_security.py runs an asset that logs, fails
and records metadata with planted secrets and reads the stored event log back, so a Dagster
upgrade that renames them fails that test rather than leaking silently.

Not covered: events Dagster stores without going through a log record (`instance.report_*`, e.g.
an engine event written by the run monitor or a crashed run worker's launcher).
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import dagster as dg

from market_pipeline.core.security.hardening import harden_process
from market_pipeline.core.security.scrub import install_log_scrubbing, scrub, scrub_record_attribute, scrub_text

if TYPE_CHECKING:
    from market_pipeline.settings import PipelineSettings

# The record attributes Dagster's log machinery sets (LOG_RECORD_EVENT_ATTR and
# LOG_RECORD_METADATA_ATTR of Dagster's internal log_manager module in 1.13; a test compares them).
DAGSTER_EVENT_ATTRIBUTE = "dagster_event"
DAGSTER_META_ATTRIBUTE = "dagster_meta"

# Events already checked: id -> the event itself (held, so its id is not reused while listed).
# A record's event is read several times (the handler, the event-log handler, the console logger).
_clean_events: dict[int, Any] = {}
_CLEAN_EVENTS_KEPT = 256


def scrub_dagster_event(event: Any) -> Any:
    """The Dagster event (any serializable Dagster object) with every string in it scrubbed.

    Returns `event` itself when there is nothing to remove. Never raises: on failure the
    event is returned as it is and a line goes to stderr.
    """
    if event is None or _clean_events.get(id(event)) is event:
        return event
    try:
        plain = json.loads(dg.serialize_value(event))
        cleaned = scrub(plain)
        if cleaned != plain:
            event = dg.deserialize_value(json.dumps(cleaned), type(event))
    except Exception as exc:  # never fail a run over scrubbing; say so where an operator looks
        sys.stderr.write(f"market_pipeline: could not scrub a Dagster event ({type(exc).__name__})\n")
        return event
    if len(_clean_events) >= _CLEAN_EVENTS_KEPT:
        _clean_events.clear()
    _clean_events[id(event)] = event
    return event


def _scrub_record_metadata(meta: Any) -> Any:
    """Dagster's per-record metadata dict: its original message and its event, cleaned in place."""
    if isinstance(meta, dict):
        if isinstance(meta.get("orig_message"), str):
            meta["orig_message"] = scrub_text(meta["orig_message"])
        if meta.get(DAGSTER_EVENT_ATTRIBUTE) is not None:
            meta[DAGSTER_EVENT_ATTRIBUTE] = scrub_dagster_event(meta[DAGSTER_EVENT_ATTRIBUTE])
    return meta


def install_dagster_log_scrubbing() -> None:
    """Scrub every log record of the process and the Dagster events records carry (idempotent)."""
    install_log_scrubbing()
    scrub_record_attribute(DAGSTER_EVENT_ATTRIBUTE, scrub_dagster_event)
    scrub_record_attribute(DAGSTER_META_ATTRIBUTE, _scrub_record_metadata)


def harden_code_location(settings: PipelineSettings | None = None) -> None:
    """`harden_process(settings)` (umask 077, secret registration, log scrubbing) plus the
    scrubbing of Dagster's events: the one call every process loading the code location makes."""
    harden_process(settings)
    install_dagster_log_scrubbing()
