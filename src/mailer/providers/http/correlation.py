"""The correlation key: our Message-ID in every attempt, echoed back in the ESP's events.

A send whose reply is lost (the connection dropped after the provider took the message)
leaves us without the provider's message id, so an event naming only that id could not
be matched. Every attempt therefore carries :data:`CORRELATION_KEY` in the field the ESP
echoes in its webhooks (SendGrid ``custom_args``, Postmark ``Metadata``, Mailgun ``v:``
variables, Resend ``tags``, SES ``EmailTags``, Mailjet ``EventPayload``, Brevo's
``X-Mailin-custom`` header), and each webhook parser reads it back.

Resend and SES allow only ``A-Z a-z 0-9 _ -`` in tag values, which a Message-ID
(``<...@host>``) breaks: there the value is URL-safe base64 without padding, which uses
exactly those characters and decodes back losslessly (:func:`tag_safe` and
:func:`from_tag_safe`).
"""

from __future__ import annotations

import base64
import binascii

__all__ = ["CORRELATION_KEY", "from_tag_safe", "plain", "tag_safe"]

#: the metadata key the Message-ID travels under (docs/events.md); a user's own metadata
#: with this key is refused before any I/O rather than overwritten
CORRELATION_KEY = "mailer_message_id"


def plain(message_id: str) -> str:
    """The value for an ESP that takes any text: the Message-ID as sent."""
    return message_id


def tag_safe(message_id: str) -> str:
    """``<a@b>`` -> URL-safe base64 without ``=``: only ``A-Z a-z 0-9 _ -``."""
    return base64.urlsafe_b64encode(message_id.encode()).decode("ascii").rstrip("=")


def from_tag_safe(value: str) -> str | None:
    """The Message-ID back from :func:`tag_safe`'s form; None when ``value`` is not one
    (an event from a send made before the key existed, or a stranger's tag)."""
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return text if text.startswith("<") and text.endswith(">") and "@" in text else None
