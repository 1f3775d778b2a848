"""What Mailgun's own records say: its events API for ``mailer outbox reconcile``, its
suppression lists for ``mailer suppression sync``.

``GET /v3/{domain}/events?message-id=...`` filters the domain's event log by the
Message-ID header, which is ours: the payload sends it as ``h:Message-ID``, and Mailgun
keeps a given Message-ID. Each event found is checked again by our correlation key or
that header, so an event for another message never settles a row.

Verdicts: any event but ``rejected`` (``accepted``, ``delivered``, ``failed``, ``opened``
...) -> ``sent``: Mailgun took the message. Only ``rejected`` ("Mailgun rejected the
request to send") -> ``absent``. No event at all -> ``absent`` only in a window where the
log is complete: the last attempt older than :data:`EVENTS_SETTLE` (Mailgun's event
polling guidance: a time range is final about half an hour later) and the row created
within :data:`EVENTS_KEPT` (the shortest retention of Mailgun's plans), so the log still
holds every attempt's events; anything else -> ``unknown``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode, urlsplit

from .http import HTTPRequest
from .http.correlation import CORRELATION_KEY
from .http.lookup import Lookup
from .http.suppressions import MAX_PAGES, Kind, Listed, epoch

if TYPE_CHECKING:
    from ._mailgun import MailgunProvider

__all__ = ["EVENTS_KEPT", "EVENTS_SETTLE", "SUPPRESSION_LISTS", "lookup", "suppressions"]

#: seconds after which Mailgun's event log for a moment is complete ("half an hour")
EVENTS_SETTLE = 1800.0
#: seconds of events every Mailgun plan keeps (the shortest retention is one day)
EVENTS_KEPT = 86_400.0
#: seconds read back before the row's creation: Mailgun's clock and ours differ
CLOCK_SLACK = 120.0


async def lookup(
    provider: MailgunProvider, message_id: str, *, age: float, created: float | None
) -> Lookup:
    """Mailgun's verdict on ``message_id`` (see the module's docstring)."""
    header = message_id.strip().strip("<>")
    begin = (created if created is not None else time.time() - age) - CLOCK_SLACK
    query = urlencode(
        {"message-id": header, "begin": f"{begin:.0f}", "ascending": "yes", "limit": 300}
    )
    domain = quote(provider.config.domain, safe="")
    answer = await provider.request(
        HTTPRequest("GET", f"/v3/{domain}/events?{query}"), commit=False
    )
    items = answer.get("items")
    if not answer.is_success or not isinstance(items, list):
        return Lookup("unknown", f"Mailgun's events API answered HTTP {answer.status}")
    ours = [i for i in items if isinstance(i, dict) and _is_ours(i, message_id, header)]
    taken = [i for i in ours if i.get("event") != "rejected"]
    if taken:
        kinds = sorted({str(i.get("event")) for i in taken})
        return Lookup("sent", f"Mailgun logged {', '.join(kinds)}", f"<{header}>")
    if ours:
        return Lookup("absent", "Mailgun logged only 'rejected': it never took the message")
    # every attempt was made after the row's creation: the log must still reach it
    span = time.time() - created if created is not None else age
    if age >= EVENTS_SETTLE and span <= EVENTS_KEPT:
        return Lookup("absent", "no event for it in Mailgun's complete log")
    return Lookup("unknown", "no event for it in Mailgun's log (yet, or any longer)")


def _is_ours(item: dict[str, Any], message_id: str, header: str) -> bool:
    variables = item.get("user-variables")
    if isinstance(variables, dict) and variables.get(CORRELATION_KEY) == message_id:
        return True
    message = item.get("message")
    headers = message.get("headers") if isinstance(message, dict) else None
    found = headers.get("message-id") if isinstance(headers, dict) else None
    return isinstance(found, str) and found.strip().strip("<>") == header


#: Mailgun's suppression lists of the domain: name -> what an entry there means
SUPPRESSION_LISTS: dict[str, Kind] = {
    "bounces": "bounced:hard",
    "complaints": "complained",
    "unsubscribes": "unsubscribed",
}


async def suppressions(provider: MailgunProvider) -> AsyncIterator[list[Listed]]:
    """The domain's bounces, complaints and unsubscribes, ``limit`` 1000 a page, then
    each answer's ``paging.next`` until a page comes back empty. Only the path and query
    of ``paging.next`` are followed: the credentials go to the configured base URL only."""
    domain = quote(provider.config.domain, safe="")
    for name, kind in SUPPRESSION_LISTS.items():
        target = f"/v3/{domain}/{name}?{urlencode({'limit': 1000})}"
        for _page in range(MAX_PAGES):
            answer = await provider.request(HTTPRequest("GET", target), commit=False)
            if not answer.is_success:
                raise provider.error_for(answer)
            items = answer.get("items")
            items = items if isinstance(items, list) else []
            page = []
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("address"), str):
                    why = item.get("error") or item.get("code")
                    detail = f"Mailgun {name}" + (f" ({why})" if why else "")
                    page.append(
                        Listed(item["address"], kind, detail, epoch(item.get("created_at")))
                    )
            yield page
            paging = answer.get("paging")
            following = paging.get("next") if isinstance(paging, dict) else None
            if not items or not isinstance(following, str):
                break
            parts = urlsplit(following)
            if not parts.path.startswith(f"/v3/{domain}/{name}"):
                break  # not a page of this list: stop rather than follow it
            target = parts.path + (f"?{parts.query}" if parts.query else "")
