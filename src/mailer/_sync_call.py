"""One blocking call of a SyncMailer: what the loop thread learns about it, how a call
is cut, and what its caller is told when it is.

How "not sent" is known: each send runs with a commit hook (:func:`mailer._attempt.
commit_hooks`) and a Mailer event listener, so the SyncMailer sees whether any attempt
reached its commit point, succeeded or ended uncertain. A send cut before it started, cut
before the Mailer routed it (its "start" event: a send waiting at the admission gate), or
cut and unwound with every attempt ended before its commit point, delivered nothing.
Anything else may have, and is reported as DeliveryUncertain.

The SyncMailer (:mod:`mailer._sync`) submits each call and waits for it within its bound;
this module is everything that decides the verdict of a call cut at that bound or by
``close()``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ._attempt import commit_hooks
from ._errors import DeliveryUncertain, MailerError, TransientError

if TYPE_CHECKING:
    from ._mailer import Event

__all__ = [
    "CURRENT",
    "SEND_GRACE",
    "UNWIND",
    "Call",
    "crossed",
    "cut",
    "in_context",
    "on_event",
    "run",
    "verdict",
]

T = TypeVar("T")

#: seconds ``send()`` may take beyond the Mailer's ``send_timeout``: the Mailer's own
#: backstop (at most 0.5 s) plus time for a cancelled send to unwind and report
SEND_GRACE = 2.0
#: after a send is cut: how long it may take to unwind (its verdict is then precise)
UNWIND = SEND_GRACE / 2


class Call:
    """One blocking call and what the loop thread learned about it."""

    __slots__ = (
        "abandoned",
        "cut",
        "evidence",
        "finished",
        "future",
        "lock",
        "loop",
        "possibly_delivered",
        "routed",
        "started",
        "task",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.lock = threading.Lock()
        self.loop = loop
        self.future: concurrent.futures.Future[Any] | None = None
        self.task: asyncio.Task[Any] | None = None
        #: set (under ``lock``) when the call began running on the loop
        self.started = False
        #: set (under ``lock``) when the caller gave up before it began: it never will
        self.abandoned = False
        self.finished = False
        #: an attempt reached its commit point, succeeded, or ended uncertain
        self.possibly_delivered = False
        #: attempts that reported their end (evidence for "nothing was delivered")
        self.evidence = 0
        #: the Mailer began routing it ("start" event): before that, no provider was
        #: asked (a send waiting at the Mailer's admission gate, mailer/_routing/admission.py)
        self.routed = False
        self.cut: Literal["close", "timeout"] | None = None


CURRENT: contextvars.ContextVar[Call | None] = contextvars.ContextVar(
    "mailer_sync_call", default=None
)


async def crossed() -> None:
    """Commit hook: this call's attempt is about to cross its commit point."""
    call = CURRENT.get()
    if call is not None:
        call.possibly_delivered = True


def on_event(event: Event) -> None:
    """Mailer listener: how each attempt of the current call ended."""
    call = CURRENT.get()
    if call is None:
        return
    if event.kind == "start":
        call.routed = True
    if event.kind != "attempt":
        return
    call.evidence += 1
    if event.attempt is not None and event.attempt.possibly_delivered:
        call.possibly_delivered = True


async def in_context(context: contextvars.Context, awaitable: Awaitable[T]) -> T:
    """Await with the calling thread's context variables set (the task has a copy of the
    loop thread's): a trace span open in the caller becomes the send's parent."""
    for var, value in context.items():
        if var is not CURRENT:
            var.set(value)
    return await awaitable


async def run(call: Call, start: Callable[[], Awaitable[T]]) -> T:
    """Run the call on the loop, as the current call (for :func:`crossed` and
    :func:`on_event`), unless its caller already gave up on it."""
    with call.lock:
        if call.abandoned:  # the caller has been told "not sent": keep it true
            raise asyncio.CancelledError
        call.started = True
        call.task = asyncio.current_task()
    token = CURRENT.set(call)
    try:
        with commit_hooks(crossed):
            return await start()
    finally:
        CURRENT.reset(token)
        call.finished = True


def cut(call: Call, why: Literal["close", "timeout"]) -> None:
    """Stop a call: cancel it on the loop, or make sure it never starts."""
    with call.lock:
        if call.cut is None:
            call.cut = why
        started = call.started
        if not started:
            call.abandoned = True
    if not started:
        assert call.future is not None
        call.future.cancel()
        return
    task = call.task
    if task is not None:
        # RuntimeError: the loop is closed, so nothing is left to cancel
        with contextlib.suppress(RuntimeError):
            call.loop.call_soon_threadsafe(task.cancel)


def verdict(call: Call, what: str, close_timeout: float) -> MailerError:
    """What a caller whose call was cut is told: never "not sent" unless certain.
    ``close_timeout``: what ``close()`` was given, when it cut the call."""
    if call.cut == "close":
        why = f"SyncMailer.close() ended it (close(timeout={close_timeout:g}) ran out)"
    else:
        why = f"no verdict within send_timeout + {SEND_GRACE:g}s"
    with call.lock:
        if not call.started:
            call.abandoned = True
    if what != "send":
        return MailerError(f"{what}() did not complete: {why}")
    if not call.started:
        return TransientError(
            f"not sent: {why} before the send began; nothing was delivered (send it again)"
        )
    if call.finished and not call.routed:
        return TransientError(
            f"not sent: {why} before the send was routed to a provider; nothing was "
            "delivered (send it again)"
        )
    if call.finished and call.evidence and not call.possibly_delivered:
        return TransientError(
            f"not sent: {why} before the send reached a provider's commit point; "
            "nothing was delivered (send it again)"
        )
    return DeliveryUncertain(
        f"{why} while the send was under way: the message may have been delivered "
        "(sending it again may duplicate it)"
    )
