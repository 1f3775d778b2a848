"""The one-click endpoint, server-agnostic: ``POST /u/{token}`` unsubscribes, ``GET``
only shows a page.

Why the answers are these:

* ``GET`` never changes anything: mail scanners, link previews and security gateways fetch
  every link in a message, so a GET that unsubscribed would unsubscribe people who never
  clicked. It shows the address and a button that POSTs.
* ``POST`` is RFC 8058's one-click request (a mail client sends it, body
  ``List-Unsubscribe=One-Click``); the token is the whole authority, so the body is not
  required. The answer is 200 only once ``suppress`` returned (stored), 503 when it
  failed, so the client may try again and nothing is reported done that is not.
* A malformed, tampered or expired token is 400 and nothing is called.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .._redact import redact
from .token import Claim, InvalidToken, UnsubscribeConfig, read_token

__all__ = ["MAX_BODY", "Answer", "Suppress", "UnsubscribeEndpoint"]

logger = logging.getLogger("mailer.unsubscribe")

#: a one-click POST body is 26 bytes; anything much larger is not one
MAX_BODY = 4096

#: what a valid POST calls: store the recipient's unsubscribe from the claim's list
Suppress = Callable[[Claim], Awaitable[object]]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex"></head>
<body style="font-family: sans-serif; max-width: 32em; margin: 3em auto">
<h1>{title}</h1>
<p>{text}</p>
{form}
</body></html>
"""


#: the GET page's button: the same POST a one-click mail client sends
_FORM = (
    '<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">'
    '<button type="submit">Unsubscribe</button></form>'
)


@dataclass(frozen=True)
class Answer:
    """One response: status, content type and body."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _page(status: int, title: str, text: str, form: str = "") -> Answer:
    body = _PAGE.format(title=html.escape(title), text=text, form=form)
    return Answer(status, body, "text/html; charset=utf-8")


class UnsubscribeEndpoint:
    """Answers ``GET`` and ``POST`` on ``.../u/{token}``; ``suppress`` stores the result."""

    def __init__(self, config: UnsubscribeConfig, suppress: Suppress) -> None:
        self.config = config
        self.suppress = suppress

    @staticmethod
    def token_of(path: str) -> str | None:
        """The token of a ``.../u/{token}`` path (under any mount prefix), else None."""
        parts = path.rstrip("/").split("/")
        if len(parts) >= 2 and parts[-2] == "u" and parts[-1]:
            return parts[-1]
        return None

    async def handle(self, method: str, path: str) -> Answer:
        token = self.token_of(path)
        if token is None:
            return Answer(404, "not found: the unsubscribe URL is .../u/{token}\n")
        if method not in ("GET", "POST"):
            return Answer(405, "GET or POST\n", headers=[("allow", "GET, POST")])
        try:
            claim = read_token(self.config, token)
        except InvalidToken as exc:
            logger.info("unsubscribe refused: %s", exc)
            return _page(
                400,
                "This link does not work",
                html.escape(f"{exc}. Use the unsubscribe link of a more recent message."),
            )
        who = html.escape(claim.recipient)
        if method == "GET":
            form = _FORM
            text = f"Unsubscribe <b>{who}</b> from <b>{html.escape(claim.list)}</b>?"
            return _page(200, "Unsubscribe", text, form)
        try:
            await self.suppress(claim)
        except Exception as exc:  # stored nothing we know of: the client may retry
            logger.error(
                "unsubscribe of a recipient failed to store: %s",
                redact(f"{type(exc).__name__}: {exc}"),
            )
            return _page(503, "Please try again", "The unsubscribe could not be saved.")
        logger.info("unsubscribed a recipient from list %r", claim.list)
        return _page(
            200,
            "Unsubscribed",
            f"<b>{who}</b> will get no more mail from <b>{html.escape(claim.list)}</b>.",
        )
