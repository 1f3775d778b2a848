"""The RFC 8058 headers for one message, the same bytes whichever provider sends it.

They are added to the message's own headers by the Mailer, once per send and before any
I/O, so SMTP writes them into the MIME (and DKIM signs them: see
:mod:`mailer._message.dkim`, which adds both to ``h=``) and every HTTP adapter sends them
as custom headers. A token names one recipient, so a message with ``unsubscribe`` has
exactly one (bulk mail is one message per recipient anyway).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._errors import MessageError
from .token import UnsubscribeConfig, make_token

if TYPE_CHECKING:
    from .._message import Message

__all__ = ["LIST_REASON", "POST_VALUE", "list_of", "suppressed_for", "unsubscribe_headers"]

#: the suppression reason of an unsubscribe from one list: ``unsubscribed:list=NAME``
LIST_REASON = "unsubscribed:list="

#: RFC 8058 section 3.1: the one value List-Unsubscribe-Post may have
POST_VALUE = "List-Unsubscribe=One-Click"


def list_of(message: Message, config: UnsubscribeConfig | None) -> str | None:
    """The list ``message`` is sent to (its ``unsubscribe``), None for other mail."""
    if isinstance(message.unsubscribe, str):
        return message.unsubscribe
    if message.unsubscribe:
        return config.default_list if config is not None else "default"
    return None


def suppressed_for(reason: str, list_name: str | None) -> bool:
    """Whether a suppression entry with ``reason`` stops a message to ``list_name``.

    An unsubscribe from one list (``unsubscribed:list=weekly``) stops that list only: a
    password reset or a receipt (no list) still goes, and so does another list. Every
    other reason (a hard bounce, a complaint, a manual entry) stops all mail.
    """
    if not reason.startswith(LIST_REASON):
        return True
    return list_name is not None and reason[len(LIST_REASON) :] == list_name


def unsubscribe_headers(
    config: UnsubscribeConfig | None, message: Message, now: float | None = None
) -> dict[str, str]:
    """``List-Unsubscribe`` and ``List-Unsubscribe-Post`` for ``message``.

    Raises MessageError (before any I/O) when the Mailer has no ``unsubscribe`` config,
    the message has other than one recipient, or sets those headers itself.
    """
    if config is None:
        raise MessageError("unsubscribe needs the Mailer's unsubscribe config (base_url and key)")
    recipients = [*message.to, *message.cc, *message.bcc]
    if len(recipients) != 1:
        raise MessageError(
            f"a message with unsubscribe has one recipient (its token names them), and "
            f"this one has {len(recipients)}: send one message per recipient"
        )
    own = {name.lower() for name in message.headers}
    if own & {"list-unsubscribe", "list-unsubscribe-post"}:
        raise MessageError(
            "the message sets List-Unsubscribe itself: leave it out with unsubscribe"
        )
    list_name = message.unsubscribe if isinstance(message.unsubscribe, str) else config.default_list
    token = make_token(config, recipients[0].email, list_name, now)
    links = [f"<{config.url(token)}>"]
    if config.mailto is not None:
        links.append(f"<mailto:{config.mailto}?subject=unsubscribe%20{token}>")
    return {"List-Unsubscribe": ", ".join(links), "List-Unsubscribe-Post": POST_VALUE}
