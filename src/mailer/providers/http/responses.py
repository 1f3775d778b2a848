"""Reading the API's answers: one :class:`Answer` per response or batch item, and the one
mapping from an HTTP status to the error tree.

An answer is read once, where it arrives (:mod:`.transport`): its JSON parsed, its text
kept. A batch item is an :class:`Answer` too (:meth:`Answer.item`), so an item's error is
classified by exactly the code that classifies a whole response, without dressing the item
up as a fake ``httpx.Response``. The next wave's webhook parsers read the same objects.

The status mapping follows one question: could the provider have accepted the message?

* Nothing reached the API, or the server said so (429, 401/403, 408, 502, 503): fail over.
* The request was sent and no definitive answer came back (500, 504 and other 5xx):
  :class:`DeliveryUncertain`. A 500 can be raised after the message was queued, and a 504
  is a gateway that gave up waiting for an origin that may still be processing it.
* The request was refused for what it says (other 4xx): :class:`PermanentError`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from ..._errors import (
    AuthError,
    DeliveryError,
    DeliveryUncertain,
    PermanentError,
    RateLimited,
    TransientError,
)

__all__ = ["MAX_BODY", "Answer", "error_text", "parse_retry_after", "status_error"]

#: how much of a response body is kept on an error (bodies can be whole HTML pages)
MAX_BODY = 2000


@dataclass(frozen=True, slots=True)
class Answer:
    """One answer of the API, read once: the status, the headers (case-insensitive), the
    parsed JSON body (None when there is none: proxies answer in HTML) and the text."""

    status: int
    data: Any = None
    text: str = ""
    headers: Mapping[str, str] = field(default_factory=httpx.Headers)
    reason: str = ""

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        try:
            data = response.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        return cls(
            response.status_code, data, response.text, response.headers, response.reason_phrase
        )

    @classmethod
    def item(cls, status: int, item: Mapping[str, Any]) -> Answer:
        """One item of a batch answer, read as a whole answer with ``status`` would be."""
        data = dict(item)
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        return cls(status, data, text)

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def get(self, key: str) -> Any:
        """A field of a JSON object body; None for any other body."""
        return self.data.get(key) if isinstance(self.data, Mapping) else None


def error_text(answer: Answer) -> str:
    """The provider's own words for an error: its JSON message, else the body."""
    for key in ("message", "Message", "error", "ErrorMessage"):
        value = answer.get(key)
        if isinstance(value, str) and value:
            return value
    errors = answer.get("errors")
    if isinstance(errors, list) and errors:
        return "; ".join(
            str(e.get("message", e)) if isinstance(e, Mapping) else str(e) for e in errors
        )
    text = answer.text.strip()
    return text[:300] if text else (answer.reason or "no error text")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait, from a Retry-After or rate-limit reset header.

    Accepts delta seconds (``"120"``, ``"1.5"``), an HTTP date, or a Unix timestamp (a
    number too large to be a delay: SendGrid's X-RateLimit-Reset is one). Never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    current = time.time() if now is None else now
    try:
        number = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is GMT even when it does not say so
            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - current, 0.0)
    if number != number or number in (float("inf"), float("-inf")):  # NaN, inf
        return None
    if number > 1_000_000_000:  # a Unix timestamp, not a delay
        return max(number - current, 0.0)
    return max(number, 0.0)


def status_error(
    status: int, text: str, *, retry_after: float | None = None, **kw: Any
) -> DeliveryError:
    """The error tree's verdict on a non-2xx status (``kw``: provider, code, response)."""
    if status == 429:
        hint = f" (retry after {retry_after:.0f}s)" if retry_after is not None else ""
        return RateLimited(f"HTTP 429 rate limited{hint}: {text}", retry_after=retry_after, **kw)
    if status in (401, 403):
        return AuthError(f"HTTP {status} credentials refused: {text}", **kw)
    if status == 408:  # the server gave up reading the request: it was not processed
        return TransientError(f"HTTP 408 request timeout: {text}", **kw)
    if 400 <= status < 500:
        return PermanentError(f"HTTP {status}: {text}", **kw)
    if status in (502, 503):
        return TransientError(f"HTTP {status} provider unavailable: {text}", **kw)
    if status >= 500:
        # 504: a gateway gave up waiting, and a retry would wait as long
        return DeliveryUncertain(
            f"HTTP {status}: {text}; the provider may have accepted the message",
            retry_here=status != 504,
            **kw,
        )
    # 1xx/3xx: something between us and the API (a redirecting proxy, a wrong base_url)
    # answered instead of it, so the API never saw the request
    return TransientError(f"HTTP {status} unexpected answer (check base_url): {text}", **kw)
