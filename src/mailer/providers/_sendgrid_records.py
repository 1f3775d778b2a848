"""What SendGrid's own records say: the Email Activity API for ``mailer outbox reconcile``,
its suppression lists for ``mailer suppression sync``.

``GET /v3/messages?query=unique_args['mailer_message_id']="<our Message-ID>"`` searches
the activity feed by the ``custom_args`` every attempt carries (SendGrid files them as
unique_args). The API needs SendGrid's paid "additional email activity history" and a
key with the ``email_activity.read`` scope: without them it answers 401/403, and the row
stays ``unknown`` with a detail that says so.

Verdicts: a message listed (``processed``, ``delivered`` or ``not_delivered``: SendGrid
took the request either way) -> ``sent``. An empty search proves absence only when the
last attempt is older than ``ABSENT_AFTER`` (the feed lags the send) and the row was
created within :data:`ACTIVITY_KEPT` (the 30 days the feed keeps with that add-on), so
every attempt is still in the feed; anything else -> ``unknown``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from .http import HTTPRequest
from .http.correlation import CORRELATION_KEY
from .http.lookup import ABSENT_AFTER, Lookup
from .http.suppressions import MAX_PAGES, Kind, Listed, epoch

if TYPE_CHECKING:
    from ._sendgrid import SendGridProvider

__all__ = ["ACTIVITY_KEPT", "SUPPRESSION_LISTS", "lookup", "query", "suppressions"]

#: seconds of history the Email Activity API keeps (30 days, with the add-on it needs)
ACTIVITY_KEPT = 30 * 86_400.0


def query(message_id: str) -> str | None:
    """The activity query for our key, or None when the id cannot be quoted in one."""
    if '"' in message_id or "\\" in message_id:
        return None
    return f"unique_args['{CORRELATION_KEY}']=\"{message_id}\""


async def lookup(
    provider: SendGridProvider, message_id: str, *, age: float, created: float | None
) -> Lookup:
    """SendGrid's verdict on ``message_id`` (see the module's docstring)."""
    text = query(message_id)
    if text is None:
        return Lookup("unknown", "the Message-ID cannot be quoted in an activity query")
    params = urlencode({"query": text, "limit": 10})
    answer = await provider.request(HTTPRequest("GET", f"/v3/messages?{params}"), commit=False)
    if answer.status in (401, 403):
        return Lookup(
            "unknown",
            f"SendGrid's Email Activity API answered HTTP {answer.status}: it needs the "
            "email activity history add-on and a key with email_activity.read",
        )
    found = answer.get("messages")
    if not answer.is_success or not isinstance(found, list):
        return Lookup("unknown", f"SendGrid's Email Activity API answered HTTP {answer.status}")
    listed = [m for m in found if isinstance(m, dict)]
    if listed:
        status = str(listed[0].get("status") or "listed")
        msg_id = listed[0].get("msg_id")
        return Lookup(
            "sent",
            f"{status} in SendGrid's email activity",
            msg_id if isinstance(msg_id, str) else None,
        )
    span = time.time() - created if created is not None else age  # back to the 1st try
    if age >= ABSENT_AFTER and span <= ACTIVITY_KEPT:
        return Lookup("absent", "not in SendGrid's email activity")
    return Lookup("unknown", "not in SendGrid's email activity (yet, or any longer)")


#: SendGrid's suppression lists: path -> what an entry there means
SUPPRESSION_LISTS: dict[str, Kind] = {
    "/v3/suppression/bounces": "bounced:hard",
    "/v3/suppression/spam_reports": "complained",
    "/v3/suppression/unsubscribes": "unsubscribed",
}
#: entries a page (the lists' documented maximum ``limit``)
PAGE = 500


async def suppressions(provider: SendGridProvider) -> AsyncIterator[list[Listed]]:
    """Bounces, spam reports and global unsubscribes, ``limit``/``offset`` pages of
    :data:`PAGE` until a short page."""
    for path, kind in SUPPRESSION_LISTS.items():
        name = path.rsplit("/", 1)[-1]
        for page_number in range(MAX_PAGES):
            query = urlencode({"limit": PAGE, "offset": page_number * PAGE})
            answer = await provider.request(HTTPRequest("GET", f"{path}?{query}"), commit=False)
            if not answer.is_success:
                raise provider.error_for(answer)
            items = answer.data if isinstance(answer.data, list) else []
            page = []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("email"), str):
                    why = item.get("reason") or item.get("status")
                    detail = f"SendGrid {name}" + (f" ({why})" if why else "")
                    page.append(Listed(item["email"], kind, detail, epoch(item.get("created"))))
            yield page
            if len(items) < PAGE:
                break
