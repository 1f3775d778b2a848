"""The outbox front (enqueue, stats, retry, purge) and the worker that delivers from it.

How a message is kept safe across a crash, step by step:

1. **Claim.** One transaction leases due messages to this worker and counts the attempt,
   before any I/O. A heartbeat renews the lease while the worker lives.
2. **The commit point.** The send runs under :func:`~mailer._attempt.commit_hooks`:
   right before any attempt crosses its commit point (SMTP: before the data's final
   ``.``; providers that report none: before they start), the row says ``committed``,
   durably, and only then may the attempt cross. If the lease was lost meanwhile, the
   hook refuses and the attempt does not cross. Where that record is written
   (``commit_record``, :mod:`._commit`): by the claim itself, for every row it leases
   (the default when every claimed send starts at once; the hook then checks the lease
   as this worker knows it), or by a write per message that starts with its attempt and
   is awaited at the commit point.
3. **The result** is written in one more transaction: sent, failed, unknown, queued again
   (with backoff) or dead.

A worker killed before the row says ``committed`` leaves a row whose lease expires with
``committed = 0``: it is queued again, safely (nothing can have been delivered). Killed
after: the row goes to ``unknown``: it may have been delivered, and is not sent again
unless an operator says so. With the record made by the claim, that is every row the
worker held when it died.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence

import anyio

from .._attempt import commit_hooks
from .._errors import (
    AllProvidersFailed,
    ConfigError,
    DeliveryError,
    MessageError,
    PermanentError,
    RateLimited,
    possibly_delivered,
)
from .._log import get_logger, register_secret
from .._message import Message
from .._result import SendResult
from . import _chunked, dispatch
from ._commit import CommitRecord
from ._load import seal
from .claiming import Worker
from .config import BackoffConfig, OutboxConfig, parse_store_url
from .store import Claimed, NewMessage, OutboxItem, OutboxStore, Outcome, State

__all__ = ["Outbox", "backoff_delay", "decide", "open_store"]

log = get_logger("mailer.outbox")

#: the Mailer's send without the outbox, restricted to the providers named (None: all)
Deliver = Callable[[Message, Sequence[str] | None], Awaitable[SendResult]]


def open_store(config: OutboxConfig) -> OutboxStore:
    """The store the URL names (not yet opened: that happens on first use)."""
    url = parse_store_url(config.url)
    if url.kind == "sqlite":
        from .sqlite import SQLiteStore

        return SQLiteStore(url.target, synchronous=url.options.get("synchronous", "auto"))
    from .postgres import PostgresStore

    return PostgresStore(url.target)


def backoff_delay(attempts: int, backoff: BackoffConfig, rng: random.Random) -> float:
    """Seconds before try ``attempts + 1``, jittered (see BackoffConfig)."""
    base = min(backoff.max, backoff.initial * backoff.multiplier ** max(attempts - 1, 0))
    return base * rng.uniform(1.0 - backoff.jitter, 1.0 + backoff.jitter)


def _error_text(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, DeliveryError | MessageError) else repr(exc)
    return f"{type(exc).__name__}: {text}"[:2000]


def _uncertain_on(exc: BaseException) -> list[str | None] | None:
    """The providers that may have accepted the message by this error's account, or
    None when the error is not one we can read (anything may have happened)."""
    if isinstance(exc, AllProvidersFailed):
        return [e.provider for e in exc.errors.values() if possibly_delivered(e)]
    if isinstance(exc, DeliveryError):
        return [exc.provider] if possibly_delivered(exc) else []
    return [] if isinstance(exc, MessageError) else None


def _retry_after(exc: BaseException) -> float:
    errors = exc.errors.values() if isinstance(exc, AllProvidersFailed) else [exc]
    waits = [e.retry_after for e in errors if isinstance(e, RateLimited) and e.retry_after]
    return max(waits, default=0.0)


def decide(
    exc: BaseException,
    *,
    crossed: bool,
    attempts: int,
    created: float,
    config: OutboxConfig,
    window: Callable[[str | None], float],
    rng: random.Random,
    now: float,
    pin: str | None = None,
) -> Outcome:
    """Where a message goes after an attempt that raised ``exc``.

    ``crossed``: some attempt of this send recorded crossing a commit point. Without that,
    nothing can have been delivered whatever the error says, and a retry is safe.

    ``pin``: an earlier attempt may have reached this idempotent provider. A message that
    may have been accepted is retried only on that one provider, with the same
    idempotency key, and only while the provider still recognises the key
    (``window(provider)`` seconds, counted from the message's creation, which is
    earlier than any attempt): a retry on another provider, or after the window, could
    deliver it twice, so it goes to ``unknown`` instead.
    """
    error = _error_text(exc)
    provider = getattr(exc, "provider", None)
    if isinstance(exc, PermanentError | MessageError):
        return Outcome("failed", provider=provider, error=error)
    if pin is not None and isinstance(exc, ConfigError):
        return Outcome(
            "unknown",
            provider=pin,
            error=f"{pin!r} may have accepted it and can no longer be tried; {error}",
        )
    if crossed:
        reached = _uncertain_on(exc)
        if reached is None or any(name is None or not window(name) for name in reached):
            return Outcome("unknown", provider=provider, error=error)  # not idempotent
        candidates = {name for name in (*reached, pin) if name is not None}
        if len(candidates) > 1:
            return Outcome(
                "unknown",
                provider=provider,
                error=f"may have been accepted by {sorted(candidates)}; {error}",
            )
        pin = next(iter(candidates), None)
    if attempts >= config.max_attempts:
        state: State = "unknown" if pin else "dead"
        return Outcome(state, provider=provider, error=f"max_attempts reached; {error}")
    delay = max(backoff_delay(attempts, config.backoff, rng), _retry_after(exc))
    if pin is not None and now + delay - created >= window(pin):
        return Outcome(
            "unknown",
            provider=pin,
            error=f"{pin!r}'s idempotency window would pass before the next try; {error}",
        )
    if now + delay - created >= config.max_age:
        state = "unknown" if pin else "dead"
        return Outcome(state, provider=provider, error=f"max_age reached; {error}")
    return Outcome("queued", next_at=now + delay, provider=provider, error=error, pin=pin)


class Outbox:
    """A durable queue of messages in front of a Mailer's providers.

    Built by the Mailer from its ``outbox`` option; ``deliver`` is the Mailer's send
    (which raises rather than queue). Only the asyncio event loop is supported (the
    database drivers are asyncio-only).
    """

    def __init__(
        self,
        config: OutboxConfig,
        deliver: Deliver,
        *,
        window: Callable[[str | None], float] = lambda name: 0.0,
        store: OutboxStore | None = None,
        rng: random.Random | None = None,
        paced: bool = False,
        capacity: int | None = None,
    ) -> None:
        self.config = config
        #: how many sends the Mailer's admission gate admits at once (None: no gate);
        #: ``concurrency = "auto"`` is derived from it (see .claiming.shape)
        self.capacity = capacity
        self._deliver = deliver
        #: each provider's idempotency window in seconds (0: not idempotent)
        self._window = window
        #: the worker's claims record the commit point (see OutboxConfig.commit_record):
        #: unless asked not to, when no provider paces sends (``paced``: a rate limit),
        #: so that every claimed send starts at once
        self.commit_at_claim = config.commit_record == "claim" or (
            config.commit_record == "auto" and not paced
        )
        self.store: OutboxStore = store if store is not None else open_store(config)
        self._rng = rng or random.Random()
        self._opened = False
        self._open_lock: anyio.Lock | None = None
        #: a send through this outbox has recorded a commit point: hooks are wired
        self._hooks_seen = False
        #: the task engine's publisher (config.dispatch), built on first use
        self._publisher: dispatch.Publisher | None = None
        password = _password(config.url)
        register_secret(password)
        if config.dispatch is not None and config.dispatch.redis is not None:
            register_secret(_password(config.dispatch.redis))  # in a broker's error text

    def __repr__(self) -> str:
        return f"<Outbox {self.store!r}>"

    async def _ready(self) -> OutboxStore:
        if not self._opened:
            if self._open_lock is None:
                self._open_lock = anyio.Lock()
            async with self._open_lock:
                if not self._opened:
                    await self.store.open()
                    self._opened = True
        return self.store

    # -- putting messages in -----------------------------------------------------------

    async def enqueue(self, message: Message) -> str:
        """Store ``message`` (committed before this returns); returns its Message-ID.

        Attachments given by path are read now (a large one in chunks, into the store).
        The message is rendered now, and those bytes are what every attempt sends. A
        Message-ID already stored is not stored twice.
        """
        added = await self._store(message, attempts=0, next_at=time.time(), error=None)
        assert message.message_id is not None
        if added and self.config.dispatch is not None:
            await dispatch.publish(self, message.message_id, 0.0)
        return message.message_id

    async def _store(
        self, message: Message, *, attempts: int, next_at: float, error: str | None
    ) -> bool:
        # A large text part's encoding pass runs on the loop a slice at a time, and a
        # large attachment is written in chunks by the store, never read whole here.
        stored = _chunked.stored_form(message)
        _storable(stored)
        await stored.render_async()
        item = self.prepare(stored, attempts=attempts, next_at=next_at, error=error, chunked=True)
        store = await self._ready()
        with anyio.CancelScope(shield=True):  # half-stored is worse than late
            added = await store.add(item)
        return added

    @staticmethod
    def prepare(
        message: Message,
        *,
        attempts: int = 0,
        next_at: float | None = None,
        error: str | None = None,
        chunked: bool = False,
    ) -> NewMessage:
        """The row to store for ``message``: what every attempt will send, checked now.

        Attachments given by path are read and the message is rendered here, so a bad
        message fails before anything is stored. No database I/O: the Django backend
        writes this row through its own connection, inside the app's transaction.

        ``chunked``: a message whose rendering streams (a large attachment or text part)
        becomes a row whose large parts are written in chunks with it, a file read only
        then (:attr:`NewMessage.parts`, see :mod:`._chunked`); whoever writes the row
        writes them too (the stores, the Django backend). Without it, the row holds the
        whole message, as before.
        """
        msg = _chunked.stored_form(message) if chunked else message.with_content()
        _storable(msg)
        rendered = msg.render()  # renders and checks: a bad message fails here, not later
        msg.envelope_sender  # noqa: B018 - raises MessageError without a sender
        assert msg.message_id is not None
        row = None
        if chunked and not isinstance(rendered, bytes):
            row = _chunked.split(msg, rendered)
        if row is not None:
            message_json, raw, parts = row
        else:
            message_json = msg.model_dump_json().encode()
            raw = rendered if isinstance(rendered, bytes) else rendered.join()
            parts = ()
        return NewMessage(
            message_id=msg.message_id,
            message_json=message_json,
            digest=seal(message_json),
            raw=raw,
            next_at=time.time() if next_at is None else next_at,
            attempts=attempts,
            last_error=error,
            parts=parts,
        )

    async def identity(self) -> tuple[str, ...]:
        """Which database and table this outbox writes to (opening it, and so creating
        its table, first): the Django backend compares it with its own connection's
        before writing rows there. Postgres only."""
        store = await self._ready()
        identity = getattr(store, "identity", None)
        if identity is None:
            raise ConfigError(f"{store!r} cannot be written from another connection")
        result: tuple[str, ...] = await identity()
        return result

    async def queue_failed(self, failure: AllProvidersFailed) -> SendResult:
        """Store the message of a send that every provider refused before any commit
        point (``on_all_failed="enqueue"``), due after the first backoff."""
        message = failure.message
        if message is None or failure.possibly_delivered:
            raise failure
        now = time.time()
        delay = max(backoff_delay(1, self.config.backoff, self._rng), _retry_after(failure))
        try:
            await self._store(message, attempts=1, next_at=now + delay, error=_error_text(failure))
        except MessageError as exc:
            # Not storable (an inline DKIM key): the caller keeps the message, as with
            # on_all_failed="raise", and learns why it was not queued.
            log.warning("message %s not queued: %s", message.message_id, exc)
            raise failure from exc
        log.warning("every provider failed; message %s queued in the outbox", message.message_id)
        if self.config.dispatch is not None and message.message_id is not None:
            await dispatch.publish(self, message.message_id, delay)
        return SendResult(
            provider="outbox",
            message_id=message.message_id,
            attempts=failure.attempts,
            status="queued",
        )

    # -- looking at it -----------------------------------------------------------------

    async def stats(self) -> dict[str, int]:
        """Messages per state: queued, sending, sent, failed, unknown, dead."""
        return await (await self._ready()).stats()

    async def items(self, state: State | None = None, limit: int = 100) -> list[OutboxItem]:
        return await (await self._ready()).items(state, limit)

    async def retry(self, *message_ids: str) -> int:
        """Queue these messages again, due now (an operator's decision for ``unknown``:
        it may duplicate a delivery). Returns how many were found."""
        return await (await self._ready()).retry(list(message_ids))

    async def settle(self, message_id: str, provider: str, when: float) -> bool:
        """A delivery event proved ``provider`` took the message: its ``unknown`` row
        becomes ``sent``. False when the row is in any other state, or absent."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        note = f"settled: {provider} reported the message taken (event at {at})"
        return await (await self._ready()).settle(message_id, provider, note)

    async def purge(self, state: State, older_than: float) -> int:
        if state == "sending":
            raise ValueError("messages being sent cannot be purged")
        return await (await self._ready()).purge(state, older_than)

    # -- delivering --------------------------------------------------------------------

    async def drain(
        self, timeout: float | None = None, *, concurrency: int | None = None
    ) -> dict[str, int]:
        """Deliver what is due, in this process, and return the outcomes.

        Without ``timeout``: until nothing is due now. With it: also what comes due
        (retries after their backoff) before ``timeout`` seconds pass; sends under way
        when it passes still finish.
        """
        worker = Worker(self, concurrency or self.config.concurrency)
        return await worker.run(until_idle=True, timeout=timeout)

    async def run(
        self, *, concurrency: int | None = None, stop: anyio.Event | None = None
    ) -> dict[str, int]:
        """Work until ``stop`` is set, then finish the sends under way and return."""
        worker = Worker(self, concurrency or self.config.concurrency)
        return await worker.run(until_idle=False, stop=stop)

    # -- on a task engine (dispatch, docs/task-queues.md) ------------------------------

    def publisher(self) -> dispatch.Publisher | None:
        """The engine that carries this outbox's tasks (None without ``dispatch``)."""
        if self._publisher is None and self.config.dispatch is not None:
            self._publisher = dispatch.open_publisher(self.config.dispatch)
        return self._publisher

    async def deliver_row(self, row: int) -> str:
        """The engine's task: deliver row ``row`` once (see :func:`.dispatch.deliver_row`)."""
        return await dispatch.deliver_row(self, row)

    async def sweep(self) -> int:
        """Publish again the tasks that were lost; returns how many."""
        return await dispatch.sweep(self)

    async def dispatch_stats(self) -> dict[str, dict[str, int]]:
        """Per engine: rows handed to it, tasks published, rows by state."""
        await self._ready()
        return await dispatch.dispatch_store(self).dispatch_stats()

    async def aclose(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.aclose()
        if self._opened:
            self._opened = False
            await self.store.close()

    # -- one message -------------------------------------------------------------------

    async def _attempt(
        self, store: OutboxStore, item: Claimed, held: Callable[[], bool] | None = None
    ) -> Outcome:
        """Send one claimed message; the outcome is recorded by :meth:`_record`.
        ``held``: the worker's view of its lease, for a claim that recorded the commit
        point (see :mod:`._commit`)."""
        record = CommitRecord(store, item, held)
        outcome: Outcome
        pinned = None if item.pin is None else [item.pin]
        try:
            message = _chunked.ordinary(item)
            if message is not None:  # the common case: no files to remove after it
                with commit_hooks(record):
                    result = await self._deliver(message, pinned)
            else:
                async with _chunked.loaded(item, store.read_chunk) as message:
                    with commit_hooks(record):
                        result = await self._deliver(message, pinned)
        except Exception as exc:
            outcome = decide(
                exc,
                crossed=record.crossed or not self._hooks_seen,
                attempts=item.attempts,
                created=item.created,
                config=self.config,
                window=self._window,
                rng=self._rng,
                now=time.time(),
                pin=item.pin,
            )
            level = logging.WARNING if outcome.state in ("unknown", "dead", "failed") else 20
            log.log(
                level,
                "outbox %s: attempt %d -> %s (%s)",
                item.message_id,
                item.attempts,
                outcome.state,
                outcome.error,
            )
        else:
            if record.crossed:
                self._hooks_seen = True
            else:
                log.error(
                    "outbox: a send succeeded without recording a commit point; the "
                    "routing layer does not run commit hooks, so interrupted sends will "
                    "be treated as possibly delivered"
                )
            outcome = Outcome("sent", provider=result.provider)
        finally:
            # An early record still in flight lands before the result (see _commit);
            # with the claim's own record there is none (and no scope to enter).
            if record.pending:
                with anyio.CancelScope(shield=True):
                    await record.settled()
        return outcome

    async def _record(
        self, store: OutboxStore, item: Claimed, outcome: Outcome, *, shield: bool = True
    ) -> None:
        """Write the outcome, whatever cancels the caller meanwhile. ``shield=False``:
        the caller is not cancelled while it records (the worker's sends, whose
        ``_Sends.cancel`` leaves a recording send be), so no anyio scope (~4 us)."""
        if shield:
            with anyio.CancelScope(shield=True):
                await self._finish(store, item, outcome)
        else:
            await self._finish(store, item, outcome)

    @staticmethod
    async def _finish(store: OutboxStore, item: Claimed, outcome: Outcome) -> None:
        try:
            if not await store.finish(item.row, item.claim, outcome):
                log.warning(
                    "outbox %s: claim lost before the outcome (%s) was recorded",
                    item.message_id,
                    outcome.state,
                )
        except Exception:
            log.exception(
                "outbox %s: recording the outcome (%s) failed; the lease will expire and settle it",
                item.message_id,
                outcome.state,
            )


def _storable(message: Message) -> None:
    if message.dkim is not None and message.dkim.private_key is not None:
        # A stored message must load again, and the store never holds a secret: the
        # JSON masks the key, so the message could never be signed and sent.
        raise MessageError(
            "a message with an inline dkim.private_key cannot be stored in the outbox "
            "(the store never holds a secret): use dkim.private_key_file, or set dkim "
            "on the provider"
        )


def _password(url: str) -> str | None:
    from urllib.parse import urlsplit

    try:
        return urlsplit(url).password
    except ValueError:
        return None
