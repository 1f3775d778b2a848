"""Postmark's suppressions, for ``mailer suppression sync``.

Postmark keeps a suppression list per message stream: ``GET /message-streams/{stream}/
suppressions/dump`` answers the whole list at once (no pagination), for the configured
``message_stream`` (``outbound``, Postmark's default transactional stream, without one).
``SuppressionReason``: ``HardBounce`` and ``SpamComplaint`` as their names say;
``ManualSuppression`` is a recipient's unsubscribe (or a person's entry in Postmark),
imported as ``unsubscribed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from .http import HTTPRequest
from .http.suppressions import Kind, Listed, epoch

if TYPE_CHECKING:
    from ._postmark import PostmarkProvider

__all__ = ["suppressions"]

_KINDS: dict[str, Kind] = {
    "HardBounce": "bounced:hard",
    "SpamComplaint": "complained",
    "ManualSuppression": "unsubscribed",
}


async def suppressions(provider: PostmarkProvider) -> AsyncIterator[list[Listed]]:
    """The message stream's suppressions, in one page."""
    stream = provider.config.message_stream or "outbound"
    path = f"/message-streams/{quote(stream, safe='')}/suppressions/dump"
    answer = await provider.request(HTTPRequest("GET", path), commit=False)
    if not answer.is_success:
        raise provider.error_for(answer)
    page = []
    for item in answer.get("Suppressions") or []:
        kind = _KINDS.get(str(item.get("SuppressionReason"))) if isinstance(item, dict) else None
        if kind is not None and isinstance(item.get("EmailAddress"), str):
            origin = item.get("Origin") or "?"
            detail = f"Postmark {stream} suppressions ({item['SuppressionReason']}, {origin})"
            page.append(Listed(item["EmailAddress"], kind, detail, epoch(item.get("CreatedAt"))))
    yield page
