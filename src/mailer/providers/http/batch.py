"""Several messages in one request, for APIs with a batch endpoint.

The provider says how (``batch_size``, ``batch_max_bytes``, and its hooks
:meth:`~HTTPProvider.batchable`, :meth:`~HTTPProvider.batch_request`,
:meth:`~HTTPProvider.parse_batch` or, for an API that reports items later,
:meth:`~HTTPProvider.finish_batch`, :meth:`~HTTPProvider.batch_has_items`); this module
cuts the messages into requests and gives each message its own outcome, never raising
for one. A message the batch form cannot carry is sent alone; without a batch endpoint
every message is sent alone, ``max_connections`` at a time.
"""

from __future__ import annotations

import asyncio
import copy
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..._attempt import Tries
from ..._errors import DeliveryError, DeliveryUncertain, MessageError
from ..._message import Message
from ..._message.dkim import sign
from ..._redact import redact
from ..._result import SendResult

if TYPE_CHECKING:
    from .payload import Payload
    from .provider import HTTPProvider

__all__ = ["BatchOutcome", "chunks", "item_copy", "send_batch", "send_chunk"]

BatchOutcome = SendResult | DeliveryError | MessageError
#: a payload with its index in the caller's list (the Coalescer's form)
Item = tuple[int, "Payload[Any]"]


def item_copy(error: DeliveryError, provider: str) -> DeliveryError:
    """One error per item (each collects its own attempts)."""
    clone = copy.copy(error)
    clone.provider = clone.provider or provider
    clone.attempts = []
    return clone


def chunks(items: list[Item], count: int, limit: int) -> list[list[Item]]:
    """Batches of at most ``count`` messages and ``limit`` bytes (0: no limit), in order;
    each payload's size was measured once, by its walk."""
    out: list[list[Item]] = []
    current: list[Item] = []
    used = 0
    for item in items:
        size = item[1].size
        if current and (len(current) >= count or (limit and used + size > limit)):
            out.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        out.append(current)
    return out


async def send_batch(
    provider: HTTPProvider[Any], messages: Sequence[Message]
) -> list[BatchOutcome]:
    """One outcome per message, in order (see :meth:`HTTPProvider.send_batch`)."""
    outcomes: list[BatchOutcome | None] = [None] * len(messages)
    gate = asyncio.Semaphore(provider.config.max_connections)
    singles: list[int] = []
    batched: list[Item] = []
    for index, message in enumerate(messages):
        if not provider.batch_size or not provider.batchable(message):
            singles.append(index)
            continue
        try:
            message.render()  # and check, as Provider.send does before any I/O
            batched.append((index, provider.payload(message)))
        except MessageError as exc:
            outcomes[index] = exc

    async def one(index: int) -> None:
        async with gate:
            try:
                outcomes[index] = await provider.send(messages[index])
            except (DeliveryError, MessageError) as exc:
                outcomes[index] = exc

    async def chunk(items: list[Item]) -> None:
        async with gate:
            try:
                results = await send_chunk(provider, items)
            except Exception as exc:  # as Provider.send: we cannot know what was sent
                text = redact(f"unexpected {type(exc).__name__} in batch: {exc}")
                error = DeliveryUncertain(text, provider=provider.name)
                results = [item_copy(error, provider.name) for _ in items]
        for (index, _), outcome in zip(items, results, strict=True):
            outcomes[index] = outcome

    async with asyncio.TaskGroup() as group:
        for items in chunks(batched, max(provider.batch_size, 1), provider.batch_max_bytes):
            group.create_task(chunk(items))
        for index in singles:
            group.create_task(one(index))
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


async def send_chunk(provider: HTTPProvider[Any], items: list[Item]) -> list[BatchOutcome]:
    """The chunk's per-item outcomes: one batch request per group the provider makes of
    it (:meth:`HTTPProvider.batch_groups`: one group, unless the batch form carries only
    messages that share content, as Mandrill's), the groups' requests concurrently."""
    groups = provider.batch_groups([payload for _, payload in items])
    if len(groups) == 1:
        return await _send_group(provider, items)
    outcomes: list[BatchOutcome | None] = [None] * len(items)

    async def group(indexes: list[int]) -> None:
        try:
            results = await _send_group(provider, [items[i] for i in indexes])
        except Exception as exc:  # as send_batch's chunk: we cannot know what was sent
            text = redact(f"unexpected {type(exc).__name__} in batch: {exc}")
            error = DeliveryUncertain(text, provider=provider.name)
            results = [item_copy(error, provider.name) for _ in indexes]
        for index, outcome in zip(indexes, results, strict=True):
            outcomes[index] = outcome

    async with asyncio.TaskGroup() as tasks:
        for indexes in groups:
            tasks.create_task(group(indexes))
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


async def _send_group(provider: HTTPProvider[Any], items: list[Item]) -> list[BatchOutcome]:
    """One batch request and its per-item outcomes. An idempotent request (one with an
    Idempotency-Key) is sent again once when its first answer was lost; its two tries
    share the provider's :attr:`~HTTPProvider.attempts_timeout` (``timeout``), half of
    what is left each, as a single send's tries do in routing (:class:`mailer._attempt.
    Tries`): an API that eats the body costs one ``timeout``, not two."""
    payloads = [payload for _, payload in items]
    for payload in payloads:
        if payload.dkim is not None:  # as presign: off the loop, before the request
            await sign(payload.message, payload.dkim)
    request = provider.batch_request(payloads)
    shares = 2 if "Idempotency-Key" in request.headers else 1
    tries = Tries(provider.attempts_timeout, math.inf, math.inf, shares)
    for attempt in range(shares):
        try:
            answer = await provider.transport.send(request, tries=tries)
        except DeliveryError as exc:
            if (
                isinstance(exc, DeliveryUncertain)
                and attempt + 1 < shares
                and not tries.past(0.0, 0.0)
            ):
                continue  # same key: the API delivers each item at most once
            return [item_copy(exc, provider.name) for _ in items]
        break
    if not answer.is_success and not provider.batch_has_items(answer, len(items)):
        error = provider.error_for(answer)
        return [item_copy(error, provider.name) for _ in items]
    return await provider.finish_batch([payload.message for payload in payloads], answer)
