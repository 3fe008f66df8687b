"""POST an alert to a webhook with urllib3: bearer token, timeout, retries with backoff and jitter,
and the receiver's `Retry-After` honoured (urllib3's `Retry` does the loop)."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util import Retry

# Worth another attempt: the receiver is busy or briefly down. Other 4xx answers will not change.
RETRY_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
# A longer Retry-After is shortened to this, so that a sensor tick with a few retries stays well
# inside Dagster's 60 s sensor evaluation timeout.
RETRY_AFTER_MAX_SECONDS = 10

# One pool per proxy for the process: connections to the receiver are reused across a batch.
_POOLS: dict[str | None, urllib3.PoolManager] = {}


@dataclass(frozen=True)
class WebhookDelivery:
    status: str  # "delivered" or "failed"
    attempts: int
    http_status: int | None
    error: str | None
    target: str  # scheme://host[:port] only: the URL's path or query may carry credentials

    @property
    def delivered(self) -> bool:
        return self.status == "delivered"


def webhook_target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def _pool(url: str) -> urllib3.PoolManager:
    """Through the proxy the environment names for the URL (HTTP(S)_PROXY, NO_PROXY), as urllib
    did before urllib3 replaced it; directly otherwise."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and urllib.request.proxy_bypass(parts.hostname or ""):
        proxy = None
    if proxy not in _POOLS:
        _POOLS[proxy] = urllib3.ProxyManager(proxy) if proxy else urllib3.PoolManager()
    return _POOLS[proxy]


def webhook_retry(retries: int, backoff: float) -> Retry:
    """Up to `retries` more attempts. urllib3's backoff: the first retry at once, then
    2*backoff, 4*backoff, ... (at most 120 s), each plus up to `backoff` of random jitter, so that
    many senders do not retry in step. A `Retry-After` on 429, 503 or 413 is waited instead."""
    return Retry(
        total=retries,
        # Safe to resend: the Idempotency-Key lets the receiver drop a duplicate.
        allowed_methods=frozenset({"POST"}),
        status_forcelist=RETRY_HTTP_STATUSES,
        backoff_factor=backoff,
        backoff_jitter=backoff,
        respect_retry_after_header=True,
        retry_after_max=RETRY_AFTER_MAX_SECONDS,
        redirect=False,  # a redirect would carry the Authorization header to wherever it points
        raise_on_status=False,  # the last answer is reported, not raised
    )


def post_json(
    url: str,
    body: bytes,
    token: str | None,
    *,
    timeout: float,
    retries: int,
    backoff: float,
    idempotency_key: str,
) -> WebhookDelivery:
    """POST `body` (JSON) up to 1 + `retries` times (see `webhook_retry` for the waits)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "market-pipeline-alerts",
        "Idempotency-Key": idempotency_key,  # lets the receiver drop a resend of the same alert
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    target = webhook_target(url)
    try:
        response = _pool(url).request(
            "POST", url, body=body, headers=headers, timeout=timeout, retries=webhook_retry(retries, backoff)
        )
    except MaxRetryError as exc:  # every attempt failed without an HTTP answer
        return WebhookDelivery("failed", retries + 1, None, _describe(exc.reason, timeout), target)
    except HTTPError as exc:  # an error urllib3 does not retry, raised at once
        return WebhookDelivery("failed", 1, None, _describe(exc, timeout), target)
    attempts = len(response.retries.history) + 1 if response.retries is not None else 1
    if 200 <= response.status < 300:
        return WebhookDelivery("delivered", attempts, response.status, None, target)
    return WebhookDelivery("failed", attempts, response.status, f"HTTP {response.status} {response.reason}", target)


def _describe(error: BaseException | None, timeout: float) -> str:
    if isinstance(error, NewConnectionError):  # before ConnectTimeoutError: urllib3 derives it from that
        return f"cannot connect: {error}"
    if isinstance(error, (ReadTimeoutError, ConnectTimeoutError, TimeoutError)):
        return f"no answer within {timeout:g} s"
    return f"connection error: {error}"
