"""POST an alert to a webhook with the standard library: bearer token, timeout, retries with backoff."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

# Worth another attempt: the receiver is busy or briefly down. Other 4xx answers will not change.
RETRY_HTTP_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would follow a redirect with the Authorization header to wherever it points.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def webhook_target(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def post_json(
    url: str,
    body: bytes,
    token: str | None,
    *,
    timeout: float,
    retries: int,
    backoff: float,
    idempotency_key: str,
    sleep: Callable[[float], None] | None = None,
) -> WebhookDelivery:
    """POST `body` (JSON) up to 1 + `retries` times; waits backoff, 2*backoff, ... between tries."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "market-pipeline-alerts",
        "Idempotency-Key": idempotency_key,  # lets the receiver drop a resend of the same alert
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    target = webhook_target(url)
    attempts, status, error = 0, None, None
    for attempt in range(retries + 1):
        if attempt:
            (sleep or time.sleep)(backoff * 2 ** (attempt - 1))
        attempts += 1
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                response.read()
                return WebhookDelivery("delivered", attempts, response.status, None, target)
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code} {exc.reason}"
            if exc.code not in RETRY_HTTP_STATUSES:
                break
        except urllib.error.URLError as exc:
            status = None
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                error = f"no answer within {timeout:g} s"
            else:
                error = f"cannot connect: {exc.reason}"
        except TimeoutError:
            status, error = None, f"no answer within {timeout:g} s"
        except OSError as exc:  # connection reset mid-response and the like
            status, error = None, f"connection error: {exc}"
    return WebhookDelivery("failed", attempts, status, error, target)
