"""SyncMailer: the Mailer for Django, Flask, Celery and other blocking code.

One background thread runs one event loop for the life of the SyncMailer, so pooled SMTP
connections and HTTP keep-alive survive between calls (``asyncio.run`` per send would
tear them down every time). asyncio rather than another anyio backend, because the SMTP
provider is built on aiosmtplib, which is asyncio-only. The loop starts on first use.

What it promises, because a blocking caller cannot defend itself:

* **Every call ends.** ``send()`` returns or raises within the Mailer's ``send_timeout``
  plus :data:`SEND_GRACE`, whatever the loop thread does (a plugin that blocks it, a
  hang nobody bounded). Past the bound the send is cancelled and the caller told what
  is known: "not sent" only when that is certain, else DeliveryUncertain.
* **close() strands nobody.** In-flight sends may finish for ``close(timeout=...)``
  seconds (:data:`CLOSE_TIMEOUT` by default); the rest are cancelled and each caller is
  told, by the same rule. Sends after close raise MailerError.
* **fork() is safe.** A child process (gunicorn ``--preload``, Celery prefork,
  multiprocessing's fork) never touches the parent's loop, thread or sockets: on first
  use it gets a fresh loop and thread, and a Mailer rebuilt from the same config (or
  factory), so fresh connections. The parent's objects are left alone in the child:
  even closing them there could unregister the parent's sockets from its epoll set,
  which fork shares.
* **No silent freeze.** Called from inside a running event loop (an async view, a
  coroutine), it raises MailerError pointing to ``await mailer.send(...)`` instead of
  blocking that loop for the whole send.

How "not sent" is known, and the verdict a cut caller is given, is one concept of its own:
:mod:`mailer._sync_call` (one call as the loop thread sees it). Here: the facade, its
loop thread, close, and fork.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from ._backend import current_async_library
from ._config import MailerConfig
from ._errors import ConfigError, MailerError
from ._events import DeliveryEvent, IngestReport
from ._events.blocking import SyncSuppression
from ._log import get_logger
from ._mailer import Mailer
from ._message import Message
from ._result import SendResult
from ._sync_call import SEND_GRACE, UNWIND, Call, cut, in_context, on_event, run, verdict
from .providers._coalesce import batching

__all__ = ["CLOSE_TIMEOUT", "SEND_GRACE", "SyncMailer"]

T = TypeVar("T")

#: seconds ``close()`` lets in-flight sends finish by default: under the 30 s that
#: gunicorn's graceful_timeout and Kubernetes' terminationGracePeriodSeconds give
CLOSE_TIMEOUT = 10.0
#: close(): how long closing the providers (QUIT, HTTP clients) may take
_ACLOSE_TIMEOUT = 5.0

log = get_logger("mailer.sync")

Config = Mailer | Callable[[], Mailer] | Mapping[str, Any] | str | Path | MailerConfig


class SyncMailer:
    """A blocking facade: ``SyncMailer(config).send(message)``.

    ``config`` is what ``Mailer.from_config`` takes (a mapping, a TOML/JSON file path, a
    MailerConfig; ``**kwargs`` as there), or a zero-argument factory returning a Mailer,
    or a Mailer. Thread-safe: many threads may call ``send`` at once; the sends run
    concurrently on the background loop. After ``fork()`` a Mailer object cannot be
    rebuilt: the child raises MailerError if this SyncMailer had already used it in the
    parent (give a config or a factory instead).
    """

    def __init__(self, config: Config, **kwargs: Any) -> None:
        factory: Callable[[], Mailer] | None
        if isinstance(config, Mailer):
            if kwargs:
                raise ConfigError("keyword options apply to a config, not to a built Mailer")
            factory, mailer = None, config
        elif callable(config):
            factory = config
            mailer = _built(factory)
        else:

            def factory() -> Mailer:
                return Mailer.from_config(config, **kwargs)

            mailer = factory()
        self._factory = factory
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._mailer: Mailer | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._adopt(mailer)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pending: set[Call] = set()
        self._closed = False
        self._close_timeout = CLOSE_TIMEOUT
        _LIVE.add(self)

    @classmethod
    def from_config(
        cls, source: Mapping[str, Any] | str | Path | MailerConfig, **kwargs: Any
    ) -> Self:
        """Build from what ``Mailer.from_config`` takes, with the same arguments."""
        return cls(source, **kwargs)

    # -- the Mailer and its loop -------------------------------------------------------

    @property
    def mailer(self) -> Mailer:
        """The Mailer behind this facade (rebuilt on first use in a forked child)."""
        with self._lock:
            self._check_fork()
            return self._current()

    def _adopt(self, mailer: Mailer) -> None:
        self._mailer = mailer
        self._unsubscribe = mailer.subscribe(on_event)
        listeners: list[Callable[[DeliveryEvent], Any]] = getattr(self, "_listeners", [])
        self._listeners = listeners
        self._delivery_unsubs = {id(f): mailer.on_delivery(f) for f in listeners}

    def _current(self) -> Mailer:
        if self._mailer is None:
            if self._factory is None:
                raise MailerError(
                    "this SyncMailer wraps a Mailer object that it used before fork(): "
                    "its connections belong to the parent process and cannot be rebuilt "
                    "here. Give SyncMailer a config or a factory (SyncMailer(config), "
                    "SyncMailer.from_config(...), SyncMailer(lambda: Mailer(...))) so that "
                    "each process builds its own"
                )
            self._adopt(_built(self._factory))
        assert self._mailer is not None
        return self._mailer

    def _check_fork(self) -> None:
        # A fallback for forks that skip os.register_at_fork's hooks.
        if self._pid != os.getpid():
            self._after_fork()

    def _after_fork(self) -> None:
        """In a forked child: forget the parent's loop, thread and (used) Mailer."""
        self._lock = threading.Lock()  # a parent thread may have held it at fork time
        self._pid = os.getpid()
        self._pending = set()  # the callers live in the parent
        if self._loop is not None:
            # Kept referenced, never closed here: see the module docstring.
            _FORKED_AWAY.append((self._loop, self._mailer))
            self._loop = None
            self._thread = None
            self._mailer = None  # built again, with fresh connections, on first use
            self._unsubscribe = None

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="mailer-loop", daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        return self._loop

    # -- calls -------------------------------------------------------------------------

    @staticmethod
    def _refuse_in_loop(what: str, instead: str) -> None:
        library = current_async_library()
        if library is not None:
            raise MailerError(
                f"SyncMailer.{what}() was called from inside a running {library} event "
                f"loop, which it would block for the whole call. In async code use the "
                f"async API: `{instead}` with a Mailer (Mailer.from_config takes the same "
                "config); or call SyncMailer from a worker thread (asyncio.to_thread)"
            )

    def _submit(self, start: Callable[[Mailer], Awaitable[T]]) -> tuple[Call, float]:
        with self._lock:
            self._check_fork()
            if self._closed:
                raise MailerError(
                    "this SyncMailer is closed: send() and verify() after close() are "
                    "refused (nothing was sent); make a new SyncMailer"
                )
            mailer = self._current()
            loop = self._ensure_loop()
            call = Call(loop)
            call.future = asyncio.run_coroutine_threadsafe(run(call, lambda: start(mailer)), loop)
            self._pending.add(call)
        return call, mailer.send_timeout + SEND_GRACE

    def _call(self, start: Callable[[Mailer], Awaitable[T]], what: str) -> T:
        began = time.monotonic()
        call, bound = self._submit(start)
        try:
            result: T = self._wait(call, began + bound, what)
            return result
        finally:
            with self._lock:
                self._pending.discard(call)

    def _wait(self, call: Call, deadline: float, what: str) -> Any:  # T of the call
        future = call.future
        assert future is not None
        concurrent.futures.wait([future], timeout=max(0.0, deadline - UNWIND - time.monotonic()))
        if not future.done():
            cut(call, "timeout")
            concurrent.futures.wait([future], timeout=max(0.0, deadline - time.monotonic()))
        if future.done() and not future.cancelled():
            return future.result()  # the Mailer's own verdict, success or error
        raise verdict(call, what, self._close_timeout)

    # -- the API -----------------------------------------------------------------------

    def send(
        self,
        message: Message,
        *,
        providers: Sequence[str] | None = None,
        suppression: bool = True,
    ) -> SendResult:
        """Send and wait; raises what ``Mailer.send`` raises, within ``send_timeout`` +
        :data:`SEND_GRACE`. ``providers``: only those, in that order (as ``Mailer.send``);
        ``suppression=False`` bypasses the suppression list. After close(): MailerError
        (nothing sent)."""
        self._refuse_in_loop("send", "await mailer.send(message)")
        context = contextvars.copy_context()
        result: SendResult = self._call(
            lambda mailer: in_context(
                context, mailer.send(message, providers=providers, suppression=suppression)
            ),
            "send",
        )
        return result

    # -- delivery events and suppression (docs/events.md) --------------------------------

    def ingest_events(self, events: Sequence[DeliveryEvent]) -> IngestReport:
        """``Mailer.ingest_events()``: store, dedupe and apply; bounded like send."""
        self._refuse_in_loop("ingest_events", "await mailer.ingest_events(events)")
        report: IngestReport = self._call(lambda m: m.ingest_events(events), "ingest_events")
        return report

    def ingest_bounce(self, raw: bytes, *, provider: str = "smtp") -> IngestReport:
        """``Mailer.ingest_bounce()``: an SMTP bounce or ARF report, parsed and ingested."""
        self._refuse_in_loop("ingest_bounce", "await mailer.ingest_bounce(raw)")
        report: IngestReport = self._call(
            lambda m: m.ingest_bounce(raw, provider=provider), "ingest_bounce"
        )
        return report

    def purge_events(self, older_than: float | None = None) -> int:
        """``Mailer.purge_events()``: delete events older than ``older_than`` seconds
        (``events.retention`` by default); returns how many."""
        self._refuse_in_loop("purge_events", "await mailer.purge_events()")
        count: int = self._call(lambda m: m.purge_events(older_than), "purge_events")
        return count

    def delivery_events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        """``Mailer.delivery_events()``: a message's stored events, oldest first."""
        self._refuse_in_loop("delivery_events", "await mailer.delivery_events(message_id)")
        found: list[DeliveryEvent] = self._call(
            lambda m: m.delivery_events(message_id, limit), "delivery_events"
        )
        return found

    def on_delivery(self, listener: Callable[[DeliveryEvent], Any]) -> Callable[[], None]:
        """``Mailer.on_delivery()``: ``listener`` runs on the Mailer's loop thread, once
        per stored event (sync or async); returns a function that unsubscribes. Kept
        across the rebuild of the Mailer in a forked child."""
        with self._lock:
            self._listeners.append(listener)
            mailer = self._mailer
            if mailer is not None:
                self._delivery_unsubs[id(listener)] = mailer.on_delivery(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
                undo = self._delivery_unsubs.pop(id(listener), None)
            if undo is not None:
                undo()

        return unsubscribe

    @property
    def suppression(self) -> SyncSuppression:
        """The suppression list, blocking: ``add``, ``remove``, ``get``, ``list``."""
        return SyncSuppression(self)

    def send_many(
        self, messages: Sequence[Message], *, providers: Sequence[str] | None = None
    ) -> list[SendResult | MailerError]:
        """Send every message concurrently and wait for all: one SendResult or MailerError
        per message, in order, as ``Mailer.send_many`` (batch endpoints included). Each
        send is bounded and reported as ``send()`` is; what is not a MailerError (a bug)
        is raised once all have ended."""
        self._refuse_in_loop("send_many", "await mailer.send_many(messages)")
        return self._send_each(messages, [providers] * len(messages))

    def _send_each(
        self, messages: Sequence[Message], providers: Sequence[Sequence[str] | None]
    ) -> list[SendResult | MailerError]:
        """send_many with ``providers`` per message (the Django backend's form)."""
        if len(providers) != len(messages):
            raise ConfigError("send_many: providers needs one entry per message")
        context = contextvars.copy_context()
        context.run(batching.set, True)  # batch endpoints may carry them together
        began = time.monotonic()
        calls: list[tuple[Call, float]] = []

        def start(message: Message, names: Sequence[str] | None) -> Any:
            return lambda mailer: in_context(context, mailer.send(message, providers=names))

        try:
            for i, message in enumerate(messages):
                calls.append(self._submit(start(message, providers[i])))
            out: list[SendResult | MailerError] = []
            bug: BaseException | None = None
            for call, bound in calls:
                try:
                    out.append(self._wait(call, began + bound, "send"))
                except MailerError as exc:
                    out.append(exc)
                except Exception as exc:
                    bug = bug or exc
            if bug is not None:
                raise bug
            return out
        finally:
            with self._lock:
                for call, _ in calls:
                    self._pending.discard(call)

    def enqueue(self, message: Message) -> str:
        """``Mailer.enqueue()``: store the message in the outbox for a worker to send
        (committed before this returns); its Message-ID. Bounded like send."""
        self._refuse_in_loop("enqueue", "await mailer.enqueue(message)")
        message_id: str = self._call(lambda mailer: mailer.enqueue(message), "enqueue")
        return message_id

    def verify(self) -> dict[str, Exception | None]:
        """``Mailer.verify()``: each provider's problem, or None; bounded like send."""
        self._refuse_in_loop("verify", "await mailer.verify()")
        report: dict[str, Exception | None] = self._call(lambda mailer: mailer.verify(), "verify")
        return report

    def health(self) -> dict[str, dict[str, Any]]:
        """``Mailer.health()``: each provider's breaker state, for a health-check view.

        Read on the Mailer's loop thread, where the breakers change, so the figures of
        one provider are never half-updated; with a shared store (Redis) they are the
        verdicts every process has seen, refreshed every ``health.refresh`` seconds.
        """
        self._refuse_in_loop("health", "mailer.health()")

        async def read(mailer: Mailer) -> dict[str, dict[str, Any]]:
            return mailer.health()

        report: dict[str, dict[str, Any]] = self._call(read, "health")
        return report

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Let in-flight sends finish for up to ``timeout`` seconds (default
        :data:`CLOSE_TIMEOUT`, 10 s), cut the rest (each caller is told: TransientError
        "not sent" when nothing was delivered, else DeliveryUncertain), close the
        providers and stop the loop. Idempotent; send() afterwards raises MailerError.

        Returns within ``timeout`` plus about 7 s even when the loop thread is stuck.
        """
        self._refuse_in_loop("close", "await mailer.aclose()")
        with self._lock:
            self._check_fork()
            if self._closed:
                return
            self._closed = True
            self._close_timeout = timeout
            pending = list(self._pending)
            loop, thread, mailer = self._loop, self._thread, self._mailer
        futures = [c.future for c in pending if c.future is not None]
        concurrent.futures.wait(futures, timeout=max(0.0, timeout))
        late = [c for c in pending if c.future is not None and not c.future.done()]
        for call in late:
            cut(call, "close")
        if late:
            concurrent.futures.wait([c.future for c in late if c.future], timeout=UNWIND)
            for call in late:  # a stuck loop: wake the callers all the same
                if call.future is not None:
                    call.future.cancel()
            log.warning("SyncMailer closed with %d send(s) still under way: cut", len(late))
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if loop is None or thread is None:
            return  # never used: no loop, no connections
        failure: BaseException | None = None
        if mailer is not None:
            closing = asyncio.run_coroutine_threadsafe(mailer.aclose(), loop)
            try:
                closing.result(_ACLOSE_TIMEOUT)
            except concurrent.futures.TimeoutError:
                closing.cancel()
                log.warning("closing the providers took over %gs: left to the OS", _ACLOSE_TIMEOUT)
            except Exception as exc:
                failure = exc
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=UNWIND)
        if not thread.is_alive():
            loop.close()
        if failure is not None:
            raise failure

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncMailer {self._mailer!r}>"


def _built(factory: Callable[[], Mailer]) -> Mailer:
    mailer = factory()
    if not isinstance(mailer, Mailer):
        raise ConfigError(f"the SyncMailer factory returned {type(mailer).__name__}, not a Mailer")
    return mailer


#: every SyncMailer alive, so that a forked child can reset each one
_LIVE: weakref.WeakSet[SyncMailer] = weakref.WeakSet()
#: the parent's loops and Mailers, as seen from a forked child: referenced for good, so
#: that no finalizer runs on them here (see the module docstring)
_FORKED_AWAY: list[object] = []


def _after_fork_in_child() -> None:
    for mailer in list(_LIVE):
        mailer._after_fork()


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_after_fork_in_child)
