"""Loading a stored message back without validating it a second time.

Every claimed row's JSON was made by :meth:`.worker.Outbox.prepare` from a message that
was validated (and rendered) when it was enqueued. Validating it again on every attempt
(``Message.model_validate_json``: about 30 µs for a small message, on the event loop)
was the largest piece of the outbox's own CPU per message after the database work.

So :meth:`~.worker.Outbox.prepare` seals the JSON (:func:`seal`: a BLAKE2b digest keyed
by the shape of :class:`~mailer.Message`, its fields and their types), the stores keep the
seal beside the JSON, and :func:`load` builds the message from the parsed JSON as it
is when the seal matches and the JSON is in the plain shape it knows (no attachments,
DKIM options or envelope: those nested models carry their own derived state and take
the full path). Anything else is validated in full, as before:

* a row written before seals existed, or by a version whose ``Message`` had other fields
  or types (the key differs, so the seal does not match);
* a row whose JSON was edited by hand, or damaged, after it was stored.

The key covers the model's fields and their types, not what its validators do: a change
to how a field is validated or normalised (an address rule, a header check) must bump the
tag in ``_KEY`` (``mailer-outbox-message/N``), so that rows sealed before it are validated
in full again rather than trusted.

The seal is an integrity check, not an authentication: whoever can write the outbox
table can already choose what is sent (the stored rendering is sent as it is), and no
secret is kept to key it with.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, TypeVar

from pydantic_core import from_json

from .._message import Address, Message

__all__ = ["load", "seal"]

#: the fields as Message.model_dump_json writes them, in order
_FIELDS = tuple(Message.model_fields)
#: what a seal is keyed with: the message model's shape (names and types of its fields,
#: and of an address's), so a row sealed for another shape is not trusted
_KEY = hashlib.blake2b(
    repr(
        (
            "mailer-outbox-message/1",
            [(name, repr(field.annotation)) for name, field in Message.model_fields.items()],
            [(name, repr(field.annotation)) for name, field in Address.model_fields.items()],
        )
    ).encode(),
    digest_size=32,
).digest()
_ADDRESS_KEYS = tuple(Address.model_fields)
_LISTS = ("to", "cc", "bcc", "reply_to")
#: a new message's private state (every default is None: nothing rendered yet)
_PRIVATE = {name: attr.get_default() for name, attr in Message.__private_attributes__.items()}
assert all(value is None for value in _PRIVATE.values()) and not Address.__private_attributes__


def seal(message_json: bytes) -> bytes:
    """The digest stored beside ``message_json`` (16 bytes)."""
    return hashlib.blake2b(message_json, digest_size=16, key=_KEY).digest()


def load(message_json: bytes, digest: bytes | None) -> Message:
    """The stored message: built directly when its seal holds, else validated in full."""
    if digest is not None and hmac.compare_digest(seal(message_json), digest):
        message = _construct(message_json)
        if message is not None:
            return message
    return Message.model_validate_json(message_json)


def _construct(message_json: bytes) -> Message | None:
    """The message from JSON sealed by this version, or None when it is not in the
    plain shape (the caller then validates it)."""
    # pydantic-core's parser, the one model_validate_json uses: 2 us for the
    # benchmark's 2 KB message, json.loads 5.4 us
    try:
        data = from_json(message_json)
    except ValueError:
        return None  # the full path reports it
    if not isinstance(data, dict) or tuple(data) != _FIELDS:
        return None
    if data["attachments"] or data["dkim"] is not None or data["envelope"] is not None:
        return None
    sender = data["sender"]
    if sender is not None:
        data["sender"] = _address(sender)
        if data["sender"] is None:
            return None
    for key in _LISTS:
        addresses = [_address(a) for a in data[key]]
        if any(a is None for a in addresses):
            return None
        data[key] = addresses
    return _build(Message, data, dict(_PRIVATE))


def _address(value: Any) -> Address | None:
    if not isinstance(value, dict) or tuple(value) != _ADDRESS_KEYS:
        return None
    return _build(Address, value, None)


M = TypeVar("M", Message, Address)


def _build(cls: type[M], values: dict[str, Any], private: dict[str, Any] | None) -> M:
    """What ``cls.model_construct(**values)`` makes when ``values`` holds every field, in
    order (checked by the caller), at a tenth of its cost (10 µs for a Message: it
    looks up every field's alias and default). tests/outbox/test_sealed_load.py compares
    the two, field by field, against ``model_validate_json``."""
    obj = cls.__new__(cls)
    object.__setattr__(obj, "__dict__", values)
    object.__setattr__(obj, "__pydantic_fields_set__", set(values))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", private)
    return obj
