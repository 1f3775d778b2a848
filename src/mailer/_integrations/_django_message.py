"""Django's EmailMessage as our Message: complete, or a MessageError.

A feature we cannot express (an AMP alternative, an anymail-only attribute) is refused
rather than dropped, so that what is sent is what the code asked for (docs/django.md,
"How an EmailMessage is mapped").
"""

from __future__ import annotations

import email.message
import email.utils
import mimetypes
from collections.abc import Iterable, Mapping
from typing import Any

from .._errors import MessageError
from .._message import Address, Attachment, Envelope, Message

__all__ = ["providers_of", "to_message"]

#: django-anymail's message attributes that have no equivalent here: refused rather than
#: silently dropped, so a project migrating from anymail finds each one at its first send
_ANYMAIL_ONLY = (
    "template_id",
    "merge_data",
    "merge_global_data",
    "merge_metadata",
    "merge_headers",
    "send_at",
    "track_clicks",
    "track_opens",
    "esp_extra",
)


def to_message(source: Any) -> Message:
    """Our Message for a Django EmailMessage or EmailMultiAlternatives (MessageError if
    it holds something we cannot send as asked)."""
    for name in _ANYMAIL_ONLY:
        if getattr(source, name, None) is not None:
            raise MessageError(
                f"the django-anymail attribute {name!r} is not supported by mailer.django "
                "(see docs/django.md); the message was not sent"
            )
    headers = {str(k): str(v) for k, v in (source.extra_headers or {}).items()}
    names = {k.lower(): k for k in headers}
    data: dict[str, Any] = {
        "sender": Address.parse(str(source.from_email)),  # str(): it may be lazy
        "to": _addresses(source.to),
        "cc": _addresses(source.cc),
        "bcc": _addresses(source.bcc),
        "reply_to": _addresses(source.reply_to),
        "subject": str(source.subject or ""),
    }
    if "message-id" in names:
        data["message_id"] = headers.pop(names["message-id"])
    if "reply-to" in names:  # Django lets the header win over reply_to
        data["reply_to"] = _header_addresses(headers.pop(names["reply-to"]))
    envelope: dict[str, Any] = {}
    # Django's rule: from_email and to/cc/bcc are the envelope, these headers only what
    # readers see. When they name other mailboxes, the envelope keeps Django's.
    recipients = [*data["to"], *data["cc"], *data["bcc"]]
    for header, key in (("from", "sender"), ("to", "to"), ("cc", "cc")):
        if header in names:
            shown = _header_addresses(headers.pop(names[header]))
            if header == "from":
                if len(shown) != 1:
                    raise MessageError("a From header must name exactly one mailbox")
                if shown[0].email.lower() != data["sender"].email.lower():
                    envelope["sender"] = data["sender"]
                data["sender"] = shown[0]
            else:
                if _emails(shown) != _emails(data[key]):
                    envelope["recipients"] = recipients
                data[key] = shown
    bounce = getattr(source, "envelope_sender", None)  # django-anymail's name for it
    if bounce is not None:
        envelope["sender"] = Address.parse(str(bounce))
    envelope.update(_explicit_envelope(getattr(source, "envelope", None)))
    if envelope:
        data["envelope"] = envelope
    options = getattr(source, "provider_options", None)
    if options is not None:
        if not isinstance(options, Mapping):
            raise MessageError("message.provider_options must map provider names to options")
        data["provider_options"] = {str(k): dict(v) for k, v in options.items()}
    text, html = _bodies(source)
    data.update(text=text, html=html, headers=headers)
    data["attachments"] = [_attachment(a, has_html=html is not None) for a in source.attachments]
    tags = getattr(source, "tags", None)
    if tags:
        data["tags"] = [str(t) for t in tags]
    metadata = getattr(source, "metadata", None)
    if metadata:
        data["metadata"] = {str(k): str(v) for k, v in dict(metadata).items()}
    return Message(**data)


def providers_of(source: Any) -> list[str] | None:
    """``message.providers = ["ses", "smtp"]``: only these, in this order (Mailer.send's
    ``providers``; an unknown name is a MessageError from the Mailer)."""
    names = getattr(source, "providers", None)
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise MessageError("message.providers must be a list of provider names")
    return list(names)


def _addresses(values: Iterable[Any] | None) -> list[Address]:
    return [Address.parse(str(v)) for v in (values or []) if v]


def _header_addresses(value: str) -> list[Address]:
    """A header's address list. The stdlib only splits it: each piece then goes through
    our strict parser, so nothing it tolerates (CVE-2023-27043) gets through."""
    pairs = email.utils.getaddresses([value])
    if not pairs or any(not addr for _, addr in pairs):
        raise MessageError(f"cannot parse the address header {value[:80]!r}")
    return [Address(name=name or None, email=addr) for name, addr in pairs]


def _emails(addresses: Iterable[Address]) -> list[str]:
    return sorted(a.email.lower() for a in addresses)


def _explicit_envelope(value: Any) -> dict[str, Any]:
    """``message.envelope``: an Envelope, or a mapping with ``from``/``sender`` and
    ``to``/``recipients`` (it wins over what the headers implied)."""
    if value is None:
        return {}
    if isinstance(value, Envelope):
        return {k: v for k, v in (("sender", value.sender), ("recipients", value.recipients))
                if v is not None}  # fmt: skip
    if not isinstance(value, Mapping):
        raise MessageError("message.envelope must be a mapping (from, to) or an Envelope")
    aliases = {"from": "sender", "to": "recipients"}
    return {aliases.get(str(k), str(k)): v for k, v in value.items()}


def _text(content: Any) -> str:
    return content.decode("utf-8") if isinstance(content, bytes) else str(content)


def _bodies(source: Any) -> tuple[str | None, str | None]:
    subtype = getattr(source, "content_subtype", "plain")
    body = _text(source.body or "")
    if subtype == "html":
        text, html = None, body
    elif subtype == "plain":
        text, html = body, None
    else:
        raise MessageError(f"a text/{subtype} body is not supported (only plain and html)")
    for content, mimetype in getattr(source, "alternatives", None) or []:
        kind = str(mimetype).lower()
        if kind == "text/html" and html is None:
            html = _text(content)
        elif kind == "text/plain" and not text:
            text = _text(content)
        else:
            raise MessageError(
                f"an alternative of type {mimetype!r} is not supported (one text/plain "
                "body and one text/html alternative are)"
            )
    if html is not None and text == "":
        text = None  # Django would send an empty text/plain part next to the HTML
    if text == "" and html is None and source.attachments:
        text = None  # as Django: an attachment-only message has no empty text part
    return text, html


def _attachment(item: Any, *, has_html: bool) -> Attachment:
    if isinstance(item, email.message.Message):
        return _mime_attachment(item, has_html=has_html)
    filename, content, mimetype = item
    mimetype = mimetype or (filename and mimetypes.guess_type(filename)[0]) or None
    if mimetype == "message/rfc822" and not isinstance(content, str | bytes):
        # an EmailMessage (Django) or an email.message.Message
        content = content.message() if hasattr(content, "message") else content
        content = content.as_bytes()
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return Attachment(
        content=data, filename=filename or _default_name(mimetype), content_type=mimetype
    )


def _mime_attachment(part: email.message.Message, *, has_html: bool) -> Attachment:
    """A MIMEBase part (MIMEImage, MIMEApplication, ...): its decoded body, type, file name
    and Content-ID. A Content-ID makes it an inline part of the HTML when there is one."""
    ctype = part.get_content_type()
    if part.is_multipart():
        if ctype != "message/rfc822":
            raise MessageError(f"a {ctype} attachment part is not supported")
        inner = part.get_payload(0)
        assert isinstance(inner, email.message.Message)
        data = inner.as_bytes()
    else:
        payload = part.get_payload(decode=True)
        data = _as_utf8(part, payload) if isinstance(payload, bytes) else b""
    cid = part.get("Content-ID")
    inline = cid is not None and has_html and part.get_content_disposition() != "attachment"
    return Attachment(
        content=data,
        filename=part.get_filename() or _default_name(ctype),
        content_type=ctype,
        inline=inline,
        content_id=str(cid) if cid is not None else None,
    )


def _as_utf8(part: email.message.Message, data: bytes) -> bytes:
    """A text part's bytes in UTF-8 (``MIMEText(..., _charset="iso-8859-1")``): our text
    attachments are labelled utf-8 when they are, and sent as octet-stream when not, so
    the charset the part named must not be lost. Left as they are when it is unknown."""
    charset = part.get_content_charset()
    if part.get_content_maintype() != "text" or charset in (None, "utf-8", "us-ascii"):
        return data
    try:
        return data.decode(str(charset)).encode("utf-8")
    except (LookupError, UnicodeDecodeError):
        return data


def _default_name(mimetype: str | None) -> str:
    """Django allows attachments without a file name; ours need one."""
    extension = mimetypes.guess_extension(mimetype or "") or ".bin"
    return f"attachment{extension}"
