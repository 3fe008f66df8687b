"""Connecting to an exchange's feed: the TLS policy (`check_scheme`, `tls_context`) and the backoff
between reconnects, the same for every exchange's recorder."""

from __future__ import annotations

import random
import ssl
from urllib.parse import urlsplit

BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0


def backoff_delay(attempt: int) -> float:
    """Exponential backoff with jitter: up to 0.5 s, 1 s, 2 s, ... 30 s (half of it at least)."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2**attempt) * random.uniform(0.5, 1.0)


def describe(exc: BaseException) -> str:
    """The error's message, with its cause when it only wraps one (websockets wraps TLS failures)."""
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__
    return f"{text}: {cause}" if cause is not None and str(cause) and str(cause) not in text else text


def check_scheme(url: str, option: str, secure: str, plain: str, allow_plaintext: bool) -> None:
    """Require the TLS scheme (`secure`); the plaintext one only with --allow-plaintext."""
    scheme = urlsplit(url).scheme
    if scheme == secure or (scheme == plain and allow_plaintext):
        return
    if scheme == plain:
        raise ValueError(
            f"{option}: plaintext {plain}:// is refused; market data must travel over TLS "
            f"({secure}://). --allow-plaintext exists for local test servers only"
        )
    raise ValueError(f"{option}: expected a {secure}:// URL, got scheme {scheme!r}")


TLS_VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}


def tls_context(min_version: str = "1.3") -> ssl.SSLContext:
    """Certificate and host-name checks against the system CAs; TLS 1.3 only unless `min_version`
    is "1.2" (`PIPELINE_CAPTURE__TLS_MIN_VERSION`)."""
    context = ssl.create_default_context()
    context.minimum_version = TLS_VERSIONS[min_version]
    return context
