"""MailerSend's bulk endpoint: ``POST /v1/bulk-email``, then a bounded poll for each outcome.

The POST carries up to 500 messages (each the body ``/v1/email`` takes) and answers 202
with ``bulk_email_id`` *before* MailerSend validates them: from that moment MailerSend
has every message, and may send any of them. Only ``GET /v1/bulk-email/{id}`` says what
became of each, once its ``state`` is ``completed``: ``validation_errors`` keyed by the
message's position (``message.3.from.email``), ``suppressed_recipients`` likewise, and
``messages_id``, the ids of the messages it took.

Never twice: the poll is bounded (``bulk_wait`` seconds). A bulk still ``queued`` or
``processing`` when it runs out, or ``failed``, or a status that cannot be read, makes
each of its messages DeliveryUncertain: MailerSend has them and may yet send them, so
none fails over to another provider or is retried (the outbox keeps such a row
``unknown``, for the webhook events or a person; MailerSend offers no lookup by a key of
ours). A completed bulk is definitive: a message with validation errors was not sent
(its error is classified as a single send's 422 would be, so a sender-domain error is an
AuthError), the others were.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._errors import DeliveryError, DeliveryUncertain, RecipientsRefused
from .._message import Message
from .http import Answer, HTTPRequest
from .http.batch import BatchOutcome, item_copy

if TYPE_CHECKING:
    from ._mailersend import MailerSendProvider

__all__ = ["BULK_PATH", "FIRST_POLL", "LAST_POLL", "bulk_outcomes", "poll_bulk"]

BULK_PATH = "/v1/bulk-email"
#: the poll's first and longest pause (seconds): it doubles from one to the other
FIRST_POLL = 0.25
LAST_POLL = 4.0
_INDEX = re.compile(r"^message\.(\d+)(?:\.(.+))?$")


async def poll_bulk(
    provider: MailerSendProvider, messages: list[Message], answer: Answer
) -> list[BatchOutcome]:
    """Each message's outcome once the bulk completes, or DeliveryUncertain for all."""
    bulk_id = answer.get("bulk_email_id")
    if not isinstance(bulk_id, str) or not bulk_id:
        return provider.uncertain("MailerSend's bulk answer has no bulk_email_id", len(messages))
    wait = provider.config.bulk_wait
    deadline = time.monotonic() + wait
    pause, state = FIRST_POLL, "unread"
    while True:  # bounded: by the deadline, each round at least FIRST_POLL apart
        try:
            status = await provider.request(
                HTTPRequest("GET", f"{BULK_PATH}/{bulk_id}"), commit=False
            )
        except DeliveryError:
            status = None  # a read: the next round asks again
        data = status.get("data") if status is not None and status.is_success else None
        if isinstance(data, dict):
            state = str(data.get("state"))
            if state == "completed":
                assert status is not None  # data came from it
                return bulk_outcomes(provider, messages, data, status)
            if state == "failed":
                break
        if time.monotonic() + pause > deadline:
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, LAST_POLL)
    error = DeliveryUncertain(
        f"MailerSend bulk {bulk_id} is {state} after {wait:g} s (bulk_wait): MailerSend has "
        "the message and may still send it, so it is not sent again",
        provider=provider.name,
    )
    return [item_copy(error, provider.name) for _ in messages]


def bulk_outcomes(
    provider: MailerSendProvider, messages: list[Message], data: dict[str, Any], status: Answer
) -> list[BatchOutcome]:
    """A completed bulk: validation errors and suppressions by position, ids in order."""
    errors = _by_message(data.get("validation_errors"), len(messages))
    suppressed = _by_message(data.get("suppressed_recipients"), len(messages))
    ids = data.get("messages_id")
    taken = [i for i in range(len(messages)) if not errors[i]]
    # the ids name the messages taken, in order, only when there is one for each
    named: dict[int, Any] = {}
    if isinstance(ids, list) and len(ids) == len(taken):
        named = dict(zip(taken, ids, strict=True))
    out: list[BatchOutcome] = []
    for index, message in enumerate(messages):
        if errors[index]:
            fields = {field or "message": texts for field, texts in errors[index]}
            body = {"message": "the bulk item did not validate", "errors": fields}
            out.append(provider.item_error(422, body, message))
            continue
        addresses = [a for _, value in suppressed[index] for a in _addresses(value)]
        refused = provider.recipients_in(message, addresses)
        result = provider.result(
            message,
            status,
            provider_message_id=str(named[index]) if index in named else None,
            rejected=dict.fromkeys(refused, "suppressed by MailerSend"),
        )
        if refused and not result.accepted:
            error = RecipientsRefused(
                "MailerSend suppressed every recipient of the bulk item",
                refused=dict.fromkeys(refused, "suppressed"),
                provider=provider.name,
            )
            out.append(error)
            continue
        out.append(result)
    return out


def _by_message(value: Any, count: int) -> list[list[tuple[str | None, Any]]]:
    """``{"message.N.field": x}`` or ``{"message.N": {...}}`` as, per message, its
    (field, value) pairs; keys naming no message of this bulk are ignored."""
    out: list[list[tuple[str | None, Any]]] = [[] for _ in range(count)]
    if not isinstance(value, dict):
        return out
    for key, item in value.items():
        found = _INDEX.match(str(key))
        if found is None or int(found.group(1)) >= count:
            continue
        index, field = int(found.group(1)), found.group(2)
        if field is None and isinstance(item, dict):  # the nested form
            out[index].extend((str(k), v) for k, v in item.items())
        else:
            out[index].append((field, item))
    return out


def _addresses(value: Any) -> Iterator[str]:
    """Every e-mail address in a suppression entry, keys and values, at any depth."""
    if isinstance(value, str):
        if "@" in value:
            yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _addresses(key)
            yield from _addresses(item)
    elif isinstance(value, list):
        for item in value:
            yield from _addresses(item)
