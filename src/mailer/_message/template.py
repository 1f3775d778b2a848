"""A Message that names a template: the field rules, and its locally rendered variant.

``Message(template="welcome", template_data={...})`` names the content once. A provider
with its own stored template for that name (its ``templates`` mapping) sends the message
as it is, through its template API with the data; any other provider sends the *variant*:
a copy whose subject, text and HTML were rendered locally from the same template and data
(see :mod:`mailer._templates`). The Mailer makes the variant once per message, before any
I/O, and attaches it here; the message itself stays frozen and keeps its Message-ID, which
the variant shares, so every attempt whichever provider makes it names the same message.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from .._errors import MessageError
from ._checks import check_length, check_text, describe

if TYPE_CHECKING:
    from .model import Message

__all__ = [
    "TEMPLATE_NAME",
    "check_template_data",
    "check_template_name",
    "local_variant",
    "variant_of",
    "with_variant",
]

#: a template name: also a file name stem under the templates dir, so no path separators
TEMPLATE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_template_name(value: str | None) -> str | None:
    if value is not None and (not TEMPLATE_NAME.fullmatch(value) or ".." in value):
        raise MessageError(
            f"invalid template name {describe(value)}: letters, digits, '_', '.' and '-', "
            "1 to 128 characters, starting with a letter or digit"
        )
    return value


def check_template_data(value: dict[str, Any]) -> dict[str, Any]:
    """The data goes to ESP APIs as JSON, so it must be JSON (and the same JSON for all)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise MessageError(f"template_data must be JSON-serialisable: {exc}") from None
    return value


def check_template_message(message: Message) -> None:
    """The template is the content: a body or subject beside it would be ambiguous,
    since an ESP's stored template would ignore it while a local rendering would not."""
    if message.template is None:
        if message.template_data:
            raise MessageError("template_data without a template")
        return
    given = [name for name in ("subject", "text", "html") if getattr(message, name)]
    if given:
        raise MessageError(
            f"a message with a template takes its subject and body from it: leave out "
            f"{', '.join(given)}"
        )
    if any(a.inline for a in message.attachments):
        # an ESP's stored template cannot refer to our content-ids reliably
        raise MessageError("a message with a template cannot carry inline attachments")


def with_variant(message: Message, subject: str, text: str | None, html: str | None) -> Message:
    """``message`` with its local rendering attached (made once; the Mailer calls this
    after ``with_defaults``, when the sender is known). The variant carries the same
    Message-ID, fixed now."""
    private = message.__pydantic_private__
    assert private is not None
    if private.get("_variant") is not None:
        return message
    check_length(check_text(subject, "subject"), "subject")  # the three new values
    if "\x00" in (text or "") + (html or ""):
        raise MessageError(f"template {message.template!r} rendered a NUL character")
    updates: dict[str, Any] = {"subject": subject, "text": text, "html": html, "template": None,
               "template_data": {}, "message_id": message.message_id}  # fmt: skip
    # model_copy: every other field was validated on the original, and copying its
    # __dict__ is several times cheaper than model_construct
    variant = message.model_copy(update=updates)
    variant.__pydantic_private__ = {
        name: attr.get_default() for name, attr in type(message).__private_attributes__.items()
    }
    private["_variant"] = variant
    return message


def variant_of(message: Message) -> Message | None:
    """The local rendering attached to ``message``, if any."""
    private = message.__pydantic_private__
    assert private is not None
    variant: Message | None = private.get("_variant")
    return variant


def local_variant(message: Message, provider: str) -> Message:
    """The variant to send through ``provider``, which has no stored template for it."""
    private = message.__pydantic_private__
    assert private is not None
    variant: Message | None = private.get("_variant")
    if variant is None:
        raise MessageError(
            f"provider {provider!r} has no stored template for {message.template!r} and "
            "the Mailer has no local templates (templates.dir) to render it"
        )
    return variant
