"""A Message's Message-ID: checked when the caller gives one, made on first read when not,
and one for a message and every copy ``with_defaults`` or ``without_recipients`` makes.

The descriptor (:class:`MessageId`) is installed on ``Message.message_id`` by
:mod:`mailer._message.model`; the cell (:class:`IdCell`) is kept in the message's private
state and handed to its copies, so whichever copy is read first fixes the id for all.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from .._errors import MessageError
from ._checks import check_text, describe

if TYPE_CHECKING:
    from .model import Message

__all__ = ["IdCell", "MessageId", "check_message_id", "id_cell", "uuid4_hex"]

_ID_LOCK = threading.Lock()


def check_message_id(value: str | None) -> str | None:
    """A Message-ID the caller gave, checked and written as ``<local@domain>``."""
    if value is None:
        return None
    check_text(value, "message_id")
    core = value.strip().strip("<>")
    if core.count("@") != 1 or any(c in core for c in ' <>"\\') or not core.isascii():
        raise MessageError(f"invalid message_id: {describe(value)}")
    return f"<{core}>"


def uuid4_hex() -> str:
    """``uuid.uuid4().hex``: 16 random bytes with the version (4) and variant (RFC 4122)
    bits set, as 32 lowercase hex digits. Made here from ``os.urandom`` as ``uuid4``
    makes it, without the UUID object (its checks and int conversions): 0.7 us against
    2.2, on every message's first read of its id (branch pool5)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


class IdCell:
    """A Message-ID not made yet: its domain, and the value once someone reads it."""

    __slots__ = ("domain", "value")

    def __init__(self, domain: str | None) -> None:
        self.domain = domain
        self.value: str | None = None


def id_cell(message: Message) -> IdCell:
    """``message``'s id cell, made (with its sender's domain) on first use."""
    private = message.__pydantic_private__
    assert private is not None
    cell: IdCell | None = private["_id_cell"]
    if cell is None:
        with _ID_LOCK:
            cell = private["_id_cell"]
            if cell is None:
                sender = message.sender
                cell = private["_id_cell"] = IdCell(sender.domain if sender else None)
    return cell


class MessageId:
    """``Message.message_id``: made on first read, never changed after.

    A message left without a sender (the Mailer's ``defaults.sender`` fills it) used to get
    an id under ``mailer.invalid`` at construction, and every such message went out with
    it. Re-homing the id when the defaults were applied was rejected: a caller who read
    ``message.message_id`` before sending (an outbox, the demo) would then look for an id
    that never went out. Made lazily, the id is fixed by whoever reads it first: the
    renderer, after the defaults gave the copy a sender (the sender's domain), or the
    caller, before that (then ``mailer.invalid``, and it stays, since they saw it). The
    original and its with_defaults copy share one cell, so both always read the same id.

    A data descriptor, so it takes precedence over the instance ``__dict__`` where pydantic
    keeps the field (None until made, or the caller's own id).
    """

    def __get__(self, obj: Message | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value: str | None = obj.__dict__.get("message_id")
        if value is not None:
            return value
        cell = id_cell(obj)
        with _ID_LOCK:
            if cell.value is None:
                cell.value = f"<{uuid4_hex()}@{cell.domain or 'mailer.invalid'}>"
            value = cell.value
        obj.__dict__["message_id"] = value
        return value

    def __set__(self, obj: Message, value: str | None) -> None:
        obj.__dict__["message_id"] = value
