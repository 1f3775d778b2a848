"""Finding a sent message at Mandrill by our key: ``POST /api/1.3/messages/search.json``.

Mandrill's search takes a query in its search syntax, where a custom metadata field is
``u_<name>``; our Message-ID travels as the ``mailer_message_id`` metadata
(:mod:`mailer.providers.http.correlation`), so the query is
``u_mailer_message_id:"<id>"``, from the day before the row was created
(``date_from``; without one Mandrill searches the last 7 days).

What it can prove is one-sided. Mandrill indexes a metadata field for search only once
the account adds it on its Custom Metadata settings page ("by default, message metadata
is included with webhook calls but NOT included in your search index"), and nothing in
the API says whether it did. So:

* a result whose own ``metadata`` carries exactly our Message-ID (the query's words
  could match another message; its metadata cannot) is ``sent``, with Mandrill's
  ``_id``; unless its ``state`` is ``rejected``: Mandrill took the call and sent nothing,
  which is no proof the row may go again either (the next try is refused the same way),
  so ``unknown``, the reason in the detail;
* no result proves nothing (the field may not be indexed, the search may lag): the row
  stays ``unknown``. The lookup never answers ``absent``.

The search may be called 20 times a minute: reconcile asks once per ``unknown`` row.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .http import HTTPRequest
from .http.correlation import CORRELATION_KEY
from .http.lookup import Lookup

if TYPE_CHECKING:
    from ._mandrill import MandrillProvider

__all__ = ["SEARCH_PATH", "find"]

SEARCH_PATH = "/api/1.3/messages/search.json"
#: results asked for: a Message-ID names one message, but a resend of the same row is
#: another result with the same metadata
_LIMIT = 10
_DAY = 86400.0


async def find(
    provider: MandrillProvider, message_id: str, *, age: float, created: float | None
) -> Lookup:
    """The search's verdict on ``message_id``: ``sent`` or ``unknown`` (never
    ``absent``: see the module)."""
    if '"' in message_id or "\\" in message_id:
        return Lookup("unknown", "the Message-ID cannot be put in Mandrill's search syntax")
    since = created if created is not None else time.time() - age
    body = {
        "key": provider.config.api_key.get_secret_value(),
        "query": f'u_{CORRELATION_KEY}:"{message_id}"',
        "date_from": time.strftime("%Y-%m-%d", time.gmtime(since - _DAY)),
        "limit": _LIMIT,
    }
    answer = await provider.request(HTTPRequest("POST", SEARCH_PATH, json=body), commit=False)
    found = answer.data
    if not answer.is_success or not isinstance(found, list):
        return Lookup("unknown", f"Mandrill's search answered HTTP {answer.status}")
    ours = [
        item
        for item in found
        if isinstance(item, dict)
        and isinstance(meta := item.get("metadata"), dict)
        and meta.get(CORRELATION_KEY) == message_id
    ]
    taken = [item for item in ours if item.get("state") != "rejected"]
    if taken:
        mandrill_id = taken[0].get("_id")
        return Lookup(
            "sent",
            f"in Mandrill's search ({taken[0].get('state') or 'no state'})",
            str(mandrill_id) if mandrill_id else None,
        )
    if ours:
        reason = ours[0].get("reject_reason") or ours[0].get("bounce_description") or "?"
        return Lookup("unknown", f"Mandrill rejected it ({reason}); nothing was sent")
    return Lookup(
        "unknown",
        f"not in Mandrill's search (is {CORRELATION_KEY} in the account's indexed "
        "custom metadata?)",
    )
