"""Rendering a Message, once: its Date, the fast renderer's output through the wire
check, the 8-bit variant, and the stdlib renderer for what the fast one leaves.

``Message.render()`` and its kin (:mod:`mailer._message.model`) keep the hot path, one
look-up of the private state once rendered; what runs the first time is here. The bytes
(or the streamed :class:`~mailer._message.stream.Rendering`) are kept in the message's
private state, so every attempt on every provider sends the same bytes with the same Date
and Message-ID.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from typing import TYPE_CHECKING

from .._errors import MessageError
from . import mime as _mime
from .address import Address
from .wire import check_wire

if TYPE_CHECKING:
    from .model import Message

__all__ = ["date_now", "render_8bit", "render_once", "render_stdlib"]

# 7bit: non-ASCII bodies go out quoted-printable or base64, so no server needs 8BITMIME.
_POLICY = SMTP.clone(cte_type="7bit", max_line_length=78)
# RFC 6532: a message with an internationalized address carries it in UTF-8
_POLICY_UTF8 = _POLICY.clone(utf8=True)
_RENDER_LOCK = threading.Lock()


def render_once(message: Message, scanned: list[_mime.TextSource]) -> bytes | _mime.Rendering:
    """``message``'s rendering, made now unless another thread just made it; ``scanned``:
    its large text parts' sources, already made (``render_async``)."""
    private = message.__pydantic_private__
    assert private is not None
    with _RENDER_LOCK:  # two threads must not render (Date, boundary) differently
        data: bytes | _mime.Rendering | None = private["_rendered"]
        if data is None:
            data = private["_rendered"] = _render(message, scanned)
    return data


def _render(message: Message, scanned: list[_mime.TextSource]) -> bytes | _mime.Rendering:
    if message.sender is None:
        raise MessageError("the message has no sender and the Mailer no default sender")
    date = _mime.header(message.headers, "date") or date_now()
    private = message.__pydantic_private__
    assert private is not None
    private["_date"] = date
    fast = _mime.render(message, date, scanned=scanned or ())
    if fast is not None:
        return _checked(*fast)
    return render_stdlib(message, date)


def render_8bit(message: Message) -> bytes | _mime.Rendering | None:
    """``Message.render_8bit()`` (see there): after :func:`render_once`, with its Date and
    its text sources; None when the message has no 8-bit attached message."""
    if not _mime.has_8bit_message(message):
        return None
    message.render()
    private = message.__pydantic_private__
    assert private is not None
    data = private["_rendered_8bit"]
    if data is None:
        with _RENDER_LOCK:
            data = private["_rendered_8bit"]
            if data is None:
                rendered = private["_rendered"]  # its text sources serve both
                scanned = (
                    [p for p in rendered.pieces if isinstance(p, _mime.TextSource)]
                    if isinstance(rendered, _mime.Rendering)
                    else []
                )
                fast = _mime.render(message, private["_date"], eight_bit=True, scanned=scanned)
                data = private["_rendered_8bit"] = False if fast is None else _checked(*fast)
    return None if isinstance(data, bool) else data


def _checked(segments: list[bytes | _mime.Streamed], names: list[str]) -> bytes | _mime.Rendering:
    """The fast renderer's output, through the wire check: bytes, or a Rendering."""
    if len(segments) == 1:
        data = segments[0]
        assert isinstance(data, bytes)
        check_wire(data, names)
        return data
    for i, segment in enumerate(segments):
        if isinstance(segment, bytes):
            check_wire(segment, names, head=i == 0)
    return _mime.Rendering(segments)


def render_stdlib(message: Message, date: str) -> bytes:
    """The stdlib renderer: for what ``_mime`` leaves, and the tests' reference."""
    assert message.sender is not None
    policy = _POLICY_UTF8 if message.smtputf8 else _POLICY
    msg = EmailMessage(policy=policy)
    expected = ["from", "subject", "date", "message-id"]
    msg["From"] = message.sender.header_value()
    for field, header in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")):
        addrs: list[Address] = getattr(message, field)
        if addrs:
            msg[header] = [a.header_value() for a in addrs]
            expected.append(header.lower())
    msg["Subject"] = message.subject
    msg["Date"] = date
    msg["Message-ID"] = message.message_id
    for name, value in message.headers.items():
        lower = name.lower()
        if lower == "date":
            continue  # written above, in its place
        msg[name] = Address.parse(value).header_value() if lower == "sender" else value
        expected.append(lower)
    _add_body(message, msg)
    try:
        data = msg.as_bytes(policy=policy)
    except (ValueError, TypeError, UnicodeError) as exc:
        raise MessageError(f"cannot render message: {exc}") from exc
    check_wire(data, expected)
    return data


def _add_body(message: Message, msg: EmailMessage) -> None:
    text, html = message.text, message.html
    if text is None and html is None and not message.attachments:
        text = ""
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    inline = [a for a in message.attachments if a.inline]
    if inline:
        html_part = msg.get_body(("html",))
        assert isinstance(html_part, EmailMessage)
        for att in inline:
            html_part.add_related(
                att.data(),
                att.maintype,
                att.subtype,
                cid=f"<{att.content_id}>",
                filename=att.filename,
                disposition="inline",
            )
    for att in message.attachments:
        if att.inline:
            continue
        if att.content_type == "message/rfc822":  # 7-bit, as the fast renderer's
            inner = message_from_bytes(_mime.rfc822_body(att.data()), policy=_POLICY)
            msg.add_attachment(inner, cte="7bit", filename=att.filename)
        else:
            ctype, _, charset = att.mime_type().partition("; charset=")
            maintype, subtype = ctype.split("/", 1)
            params = {"charset": charset} if charset else {}
            msg.add_attachment(att.data(), maintype, subtype, filename=att.filename, params=params)


def _utcnow() -> datetime:
    """Now, in UTC: the clock the tests fix. (Its import once at the top: an import
    statement run on every call cost half of ``date_now``, 0.8 us a message.)"""
    return datetime.fromtimestamp(time.time(), UTC)


#: (the second, its Date header): a Date has no unit finer than the second (RFC 5322
#: section 3.3), and formatting it was a tenth of rendering a small message
_DATE: tuple[int, str] = (-1, "")


def date_now() -> str:
    """The Date header value for now, formatted once per second."""
    global _DATE
    now = _utcnow()
    second = int(now.timestamp())
    cached = _DATE
    if cached[0] == second:
        return cached[1]
    text = format_datetime(now.replace(microsecond=0))
    _DATE = (second, text)
    return text
