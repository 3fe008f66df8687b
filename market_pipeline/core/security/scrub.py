"""Secret scrubbing for log records, alert payloads, metadata and the audit trail.

Two things are removed:
- the current values of the secret settings (PIPELINE_MASTER_KEY, PIPELINE_ALERT_WEBHOOK_TOKEN,
  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, read from the environment at scrub time, plus values
  registered with `register_secret`, e.g. the same settings when they come from `.env`);
- secret-shaped text: AWS access key ids (AKIA.../ASIA...), `Bearer` and `Authorization:` values,
  credentials in URLs (`scheme://user:pass@host` -> `scheme://***@host`) and credential query
  parameters (`token=`, `signature=`, `X-Amz-Signature=`, ...).

`scrub(value)` does this recursively on str/dict/list/tuple values (dict values whose key names a
credential, such as "token" or "password", are replaced whole). `SecretScrubber` is the one
logging filter; `install_log_scrubbing()` makes every log record of the process, Dagster's
included, pass through it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "***"

SECRET_ENV_VARS = (
    "PIPELINE_MASTER_KEY",
    "PIPELINE_ALERT_WEBHOOK_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)

# Shorter values are not scrubbed as literals: replacing every "abc" in every log line would make
# the logs useless, and such a value is no secret anyway.
MIN_SECRET_LENGTH = 4

# Value characters never include quotes or backslashes, so scrubbing text that holds JSON or a
# repr() cannot eat the escape of a closing quote.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # AWS access key ids (long-term AKIA, temporary ASIA): keep the prefix as a hint.
    (re.compile(r"(?<![A-Z0-9])(AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"), r"\1" + REDACTED),
    # "Authorization: Basic xyz", "authorization=Token xyz", "'Authorization': 'Bearer xyz'".
    (
        re.compile(
            r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:bearer|basic|token|digest)?\s*)[^\s'\",;\\]+"
        ),
        r"\1" + REDACTED,
    ),
    # A bearer token anywhere (8+ characters, so prose like "bearer token" is left alone).
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + REDACTED),
    # Userinfo in URLs: scheme://user:pass@host and scheme://token@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>\\]+@"), r"\1" + REDACTED + "@"),
    # Credential query parameters (also key=value text outside URLs).
    (
        re.compile(
            r"(?i)(?<![\w-])((?:x-amz-signature|x-amz-security-token|x-amz-credential|signature|sig"
            r"|access_token|refresh_token|id_token|token|password|passwd|client_secret|secret"
            r"|api_key|apikey)=)[^&#\s'\"<>\\]+"
        ),
        r"\1" + REDACTED,
    ),
)

# Dict keys whose string values are credentials whatever they look like.
_SECRET_KEY = re.compile(
    r"(?i)^(?:.*[_-])?(?:token|password|passwd|secret|secret_access_key|authorization|signature"
    r"|master_key|api_key|apikey|credentials?)$"
)

_registered: set[str] = set()


def register_secret(value: str | None) -> None:
    """Scrub this value from now on in this process (e.g. a secret setting read from `.env`)."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        _registered.add(value)


def _secret_values() -> list[str]:
    values = set(_registered)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name, "").strip()
        if len(value) >= MIN_SECRET_LENGTH:
            values.add(value)
    # Longest first, so a secret containing another is replaced whole.
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str) -> str:
    for secret in _secret_values():
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str) -> str:
    """scheme://host[:port]/path of a URL we show: no user:password@, no query or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrub(value: Any) -> Any:
    """A copy of `value` without secrets: strings scrubbed, containers walked recursively.

    Other values (numbers, None, booleans, ...) are returned as they are.
    """
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub(key): _scrub_entry(key, item) for key, item in value.items()}
    if isinstance(value, list):
        return [scrub(item) for item in value]
    if isinstance(value, tuple):
        items = [scrub(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)  # namedtuples too
    return value


def _scrub_entry(key: object, item: Any) -> Any:
    if isinstance(key, str) and isinstance(item, str) and item and _SECRET_KEY.match(key):
        return REDACTED
    return scrub(item)


def _scrub_dagster_event(event: Any) -> Any:
    """The Dagster event with secrets removed from every string in it (error messages and stack
    traces of failures, metadata, ...), through Dagster's own serialization."""
    from dagster._serdes import deserialize_value, serialize_value

    try:
        plain = json.loads(serialize_value(event))
        cleaned = scrub(plain)
        if cleaned == plain:
            return event
        return deserialize_value(json.dumps(cleaned), type(event))
    except Exception as exc:  # never fail a run over scrubbing; say so where an operator looks
        sys.stderr.write(f"market_pipeline: could not scrub a Dagster event ({type(exc).__name__})\n")
        return event


class SecretScrubber(logging.Filter):
    """Rewrites a log record in place so that no handler can emit a secret; never drops it.

    The message is rendered (msg % args) and scrubbed; an exception or stack trace is formatted
    now and scrubbed into `exc_text`/`stack_info` (formatters use `exc_text` when it is set); a
    Dagster event carried by the record (step failures with their stack trace, materialization
    metadata) is rebuilt without secrets before Dagster stores or prints it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad format arguments: keep what there is, scrubbed
            message = f"{record.msg} {record.args!r}"
        record.msg = scrub_text(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub_text(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub_text(record.stack_info)
        event = getattr(record, "dagster_event", None)
        if event is not None:
            record.dagster_event = _scrub_dagster_event(event)
        meta = getattr(record, "dagster_meta", None)  # set once Dagster has converted the record
        if isinstance(meta, dict):
            if isinstance(meta.get("orig_message"), str):
                meta["orig_message"] = scrub_text(meta["orig_message"])
            if meta.get("dagster_event") is not None:
                meta["dagster_event"] = _scrub_dagster_event(meta["dagster_event"])
        return True


SCRUBBER = SecretScrubber()


def _scrubbing_record_factory(previous: Any) -> Any:
    def make_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        SCRUBBER.filter(record)
        return record

    make_record.scrubs_secrets = True  # type: ignore[attr-defined]
    return make_record


def _scrub_dagster_log_managers() -> None:
    """Attach the filter to every DagsterLogManager (`context.log`).

    A Dagster event (e.g. a step failure and its stack trace) is attached to its record after the
    record factory ran, and Dagster turns the record into the stored event log entry and the
    console line inside its own handler, so the filter has to sit on the log manager itself: a
    logger's filters run before any of its handlers. Dagster has no public hook for this.

    Only once Dagster is imported: commands that never use it should not pay for its import.
    The code location calls this after importing Dagster.
    """
    module = sys.modules.get("dagster._core.log_manager")
    if module is None:
        return
    DagsterLogManager = module.DagsterLogManager

    init = DagsterLogManager.__init__
    if getattr(init, "scrubs_secrets", False):
        return

    def __init__(self: DagsterLogManager, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.addFilter(SCRUBBER)

    __init__.scrubs_secrets = True  # type: ignore[attr-defined]
    DagsterLogManager.__init__ = __init__  # type: ignore[method-assign]


def install_log_scrubbing() -> None:
    """Make every log record of this process pass through `SCRUBBER` (idempotent).

    - the record factory scrubs each record as it is created, whatever logger or handler it
      goes to (root, `dagster`, boto3/botocore, handlers added later, Dagster's python_logs
      handlers from dagster.yaml);
    - the root logger's current handlers get the filter too, for records made before this ran;
    - Dagster's log managers get it for the Dagster events they carry (if Dagster is imported;
      call again after importing it).
    """
    factory = logging.getLogRecordFactory()
    if not getattr(factory, "scrubs_secrets", False):
        logging.setLogRecordFactory(_scrubbing_record_factory(factory))
    for handler in logging.getLogger().handlers:
        if SCRUBBER not in handler.filters:
            handler.addFilter(SCRUBBER)
    _scrub_dagster_log_managers()
