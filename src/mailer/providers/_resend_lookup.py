"""Finding a sent email at Resend without the id its lost reply would have given.

Resend's ``GET /emails/{id}`` needs Resend's id, which is exactly what a lost reply
never gave us; its list, ``GET /emails`` (newest first, ``limit`` up to 100, the ``after``
cursor), cannot be filtered, and neither it nor the retrieve answer carries our tags or
headers. So the only honest lookup compares content:

1. page back through the list (at most :data:`MAX_PAGES` pages) to the row's creation
   (less :data:`CLOCK_SLACK`), keeping each email whose sender, ``to`` addresses and
   subject equal the request we built for this message;
2. retrieve each such candidate (at most :data:`MAX_CANDIDATES`) and compare its ``html``
   and ``text`` with ours.

Exactly one email matching in full: ``sent``, with Resend's id. Several: ``unknown`` (two
identical messages in the window; the detail names them for a person). ``absent`` only
when the list reached back past the row's creation without one email to the same
recipients with the same subject, and the row is older than ``ABSENT_AFTER`` (the list
may lag the send); the list ending sooner (the plan's data retention, or the page limit)
proves nothing. A body that differs leaves the row ``unknown`` rather than ``absent``:
Resend may store a body it rewrote (link tracking), so a mismatch is no proof.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from .._errors import DeliveryError, MessageError
from .._message import Message
from .http import HTTPRequest
from .http.lookup import ABSENT_AFTER, Lookup

if TYPE_CHECKING:
    from ._resend import ResendProvider

__all__ = ["CLOCK_SLACK", "MAX_CANDIDATES", "MAX_PAGES", "find"]

#: pages of 100 emails read at most: a busy account's list back to an old row is long,
#: and a lookup that reads it all would be a crawl
MAX_PAGES = 20
#: candidates retrieved at most (one request each)
MAX_CANDIDATES = 10
#: seconds the list is read back past the row's creation: Resend's clock and ours differ
CLOCK_SLACK = 120.0


async def find(
    provider: ResendProvider,
    *,
    age: float,
    created: float | None,
    message: Message | None,
) -> Lookup:
    """Resend's verdict on ``message`` (see the module's docstring)."""
    if message is None or created is None:
        return Lookup("unknown", "no content to compare: Resend cannot be searched by our key")
    try:
        wanted = provider.payload(message).data
    except (MessageError, DeliveryError, ValueError) as exc:
        return Lookup("unknown", f"cannot rebuild the request to compare: {type(exc).__name__}")
    envelope = _envelope(wanted)
    since = created - CLOCK_SLACK
    candidates: list[str] = []
    reached_back = False
    after: str | None = None
    for _page in range(MAX_PAGES):
        query = {"limit": 100, **({"after": after} if after else {})}
        answer = await provider.request(
            HTTPRequest("GET", f"/emails?{urlencode(query)}"), commit=False
        )
        items = answer.get("data")
        if not answer.is_success or not isinstance(items, list):
            return Lookup("unknown", f"Resend's email list answered HTTP {answer.status}")
        for item in items:
            when = _when(item.get("created_at")) if isinstance(item, dict) else None
            if when is None:
                continue
            if when < since:
                reached_back = True
                break
            if _envelope(item) == envelope and isinstance(item.get("id"), str):
                candidates.append(item["id"])
        if reached_back or not items or answer.get("has_more") is not True:
            break
        last = items[-1]
        after = last.get("id") if isinstance(last, dict) else None
        if not isinstance(after, str):
            break
    if not candidates:
        if reached_back and age >= ABSENT_AFTER:
            return Lookup("absent", "no email to these recipients with this subject at Resend")
        why = "its list reached back" if reached_back else "its list did not reach back"
        return Lookup("unknown", f"not (yet) in Resend's email list ({why} to the row)")
    matches = []
    for email_id in candidates[:MAX_CANDIDATES]:
        answer = await provider.request(
            HTTPRequest("GET", f"/emails/{quote(email_id, safe='')}"), commit=False
        )
        if not answer.is_success:
            return Lookup("unknown", f"Resend's retrieve answered HTTP {answer.status}")
        if all(_text(answer.get(k)) == _text(wanted.get(k)) for k in ("html", "text")):
            matches.append(email_id)
    if len(matches) == 1 and len(candidates) <= MAX_CANDIDATES:
        return Lookup("sent", "the same email is in Resend's list", matches[0])
    return Lookup(
        "unknown",
        f"{len(matches)} of {len(candidates)} emails at Resend match in full: "
        + ", ".join(candidates[:MAX_CANDIDATES]),
    )


def _envelope(data: dict[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """(sender address, sorted ``to`` addresses, subject), addresses lower-cased."""
    sender = _addresses([data.get("from")])
    return (
        sender[0] if sender else "",
        tuple(sorted(_addresses(_listed(data.get("to"))))),
        str(data.get("subject") or ""),
    )


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _addresses(values: Iterable[Any]) -> list[str]:
    texts = [v for v in values if isinstance(v, str)]
    return [addr.lower() for _name, addr in getaddresses(texts) if addr]


def _text(value: Any) -> str:
    """A body as compared: None and "" are the same absence; line ends are not content."""
    return "\n".join(str(value).splitlines()) if value else ""


def _when(value: Any) -> float | None:
    """Resend's ``created_at`` (ISO 8601, ``T`` or a space) as epoch seconds."""
    if not isinstance(value, str):
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return None
    return stamp.timestamp() if stamp.tzinfo is not None else None
