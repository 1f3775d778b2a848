"""SES's account-level suppression list, for ``mailer suppression sync``.

``GET /v2/email/suppression/addresses`` (ListSuppressedDestinations, SigV4-signed like
every request of this provider), ``PageSize`` 1000 (its maximum), then ``NextToken`` until
an answer has none. ``Reason`` ``BOUNCE`` is a hard bounce (SES suppresses only those),
``COMPLAINT`` a complaint.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from .http import HTTPRequest
from .http.suppressions import MAX_PAGES, Kind, Listed, epoch

if TYPE_CHECKING:
    from ._ses import SESProvider

__all__ = ["suppressions"]

_KINDS: dict[str, Kind] = {"BOUNCE": "bounced:hard", "COMPLAINT": "complained"}


async def suppressions(provider: SESProvider) -> AsyncIterator[list[Listed]]:
    """The account suppression list, a page (up to 1,000 entries) at a time."""
    token: str | None = None
    for _page in range(MAX_PAGES):
        query: dict[str, Any] = {"PageSize": 1000}
        if token:
            query["NextToken"] = token
        path = f"/v2/email/suppression/addresses?{urlencode(query)}"
        answer = await provider.request(HTTPRequest("GET", path), commit=False)
        if not answer.is_success:
            raise provider.error_for(answer)
        page = []
        for item in answer.get("SuppressedDestinationSummaries") or []:
            kind = _KINDS.get(str(item.get("Reason"))) if isinstance(item, dict) else None
            if kind is not None and isinstance(item.get("EmailAddress"), str):
                page.append(
                    Listed(
                        item["EmailAddress"],
                        kind,
                        f"SES account suppression list ({item['Reason']})",
                        epoch(item.get("LastUpdateTime")),
                    )
                )
        yield page
        token = answer.get("NextToken")
        if not isinstance(token, str) or not token:
            return
