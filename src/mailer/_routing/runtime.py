"""What every group in one provider tree shares: settings, health, events, the send.

A tree of groups (``Failover([Weighted([a, b]), c])``) is one routing system: provider
``a`` has one breaker and one budget whichever group asks it, and one listener sees every
event. The :class:`Runtime` holds those; the Mailer makes one and binds its root group to
it, and a group used on its own makes its own on first use.

Health is keyed by the leaf provider's name, which is unique in a tree: a provider's
health is a fact about the provider, not about the group that asked.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .. import _clock
from .._attempt import AttemptContext
from .._backend import current_async_library
from .._errors import possibly_delivered
from .._log import event_logged, get_logger, log_event
from .._result import Attempt
from .budget import BudgetConfig, SetupEstimator
from .events import Event
from .health import BreakerState, CircuitBreaker, HealthConfig
from .ratelimit import Gcra, RateLimit
from .store import RedisHealth, make_store

if TYPE_CHECKING:
    from .._errors import DeliveryError
    from .._provider import Provider
    from .._result import SendResult

__all__ = ["LeafHealth", "RetryConfig", "Runtime", "SendContext"]

log = get_logger("mailer")


class RetryConfig(BaseModel):
    """Same-provider retries, for transient errors that heal in seconds. Seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: total tries on one provider (1 = no retry)
    attempts: int = Field(default=2, ge=1, le=10)
    backoff: float = Field(default=0.2, ge=0)
    max_backoff: float = Field(default=2.0, ge=0)


@dataclass(eq=False)
class LeafHealth:
    """One provider's breaker, adaptive budget, and the attempts still before their
    commit point (released at once when the breaker opens)."""

    provider: Provider
    breaker: CircuitBreaker
    estimator: SetupEstimator
    inflight: set[AttemptContext] = field(default_factory=set)
    probe: asyncio.Task[None] | None = None
    #: the provider's ``rate_limit``, kept in this process (the memory store)
    limiter: Gcra | None = None

    @property
    def can_verify(self) -> bool:
        from .._provider import Provider

        return type(self.provider).verify is not Provider.verify

    def release_waiting(self) -> int:
        """Cancel every attempt on this provider that has not reached its commit point."""
        released = 0
        for state in list(self.inflight):
            if not state.committed:
                state.release()
                released += 1
        return released


@dataclass(eq=False)
class SendContext:
    """One call of ``send``: its deadline and the record of its attempts."""

    message_id: str | None
    deadline: float
    attempts: list[Attempt] = field(default_factory=list)
    #: the group the send started at (it may try a resting provider when all rest)
    root: Provider | None = None
    #: set by the root when every provider is resting: try the one due soonest anyway
    force: bool = False
    #: ties this call's events together (Event.send_id)
    send_id: int = field(default_factory=lambda: _next_send_id())
    #: whether its "sent" or "failed" event went out
    ended: bool = False
    #: the error of an attempt that another send's verdict released: no verdict on the
    #: provider (routing's knowledge, so not written onto the provider's error)
    unjudged: DeliveryError | None = None


_SEND_IDS = itertools.count(1)


def _next_send_id() -> int:
    return next(_SEND_IDS)


_SEND: contextvars.ContextVar[SendContext | None] = contextvars.ContextVar(
    "mailer_send", default=None
)


class Runtime:
    """Settings, health and listeners for one provider tree."""

    def __init__(
        self,
        *,
        health: HealthConfig | None = None,
        retry: RetryConfig | None = None,
        budget: BudgetConfig | None = None,
        on_uncertain: Literal["raise", "failover"] = "raise",
        send_timeout: float = 60.0,
        clock: Callable[[], float] = _clock.now,
        rng: random.Random | None = None,
    ) -> None:
        self.health = health or HealthConfig()
        self.retry = retry or RetryConfig()
        self.budget = budget or BudgetConfig()
        self.on_uncertain = on_uncertain
        self.send_timeout = send_timeout
        self.clock = clock
        self.rng = rng or random.Random()
        # the structured delivery log (a record per attempt and outcome) is a listener
        self.listeners: list[Callable[[Event], Any]] = [log_event]
        self.leaves: dict[str, LeafHealth] = {}
        self._probes: set[asyncio.Task[None]] = set()
        #: the shared store (None: memory, each process alone); a probe's lease outlives
        #: the longest probe (a background verify() is held to budget.max)
        self.shared: RedisHealth | None = make_store(self.health, lease=self.budget.max + 1.0)
        if self.shared is not None:
            self.shared.start()  # built on an event loop: follow the store from now on

    # -- health ------------------------------------------------------------------------

    def leaf(self, provider: Provider) -> LeafHealth:
        found = self.leaves.get(provider.name)
        if found is not None:
            return found
        breaker = CircuitBreaker(self.health, self.clock)
        limit = getattr(provider.config, "rate_limit", None)
        limit = limit if isinstance(limit, RateLimit) else None
        leaf = LeafHealth(provider, breaker, SetupEstimator(self.budget))
        if limit is not None:
            leaf.limiter = Gcra(limit, _clock.now)
        breaker.on_change = self._breaker_listener(leaf)
        if self.shared is not None:
            self.shared.register(provider.name, breaker, leaf.limiter)
        self.leaves[provider.name] = leaf
        return leaf

    async def ready(self) -> None:
        """Follow the shared store from this event loop on (a no-op for memory)."""
        if self.shared is not None:
            await self.shared.ready()

    async def reserve(self, leaf: LeafHealth, max_wait: float) -> float | None:
        """A rate-limit slot for one send: seconds to wait for it, or None when it is
        further away than ``max_wait`` (nothing taken: go to the next provider)."""
        if leaf.limiter is None:
            return 0.0
        if self.shared is not None:
            return await self.shared.reserve(leaf.provider.name, max_wait)
        return leaf.limiter.reserve(max_wait)

    async def snapshot(self, names: list[str]) -> dict[str, dict[str, Any]]:
        """Each provider's health as the store has it (``mailer health``): the shared
        state when the store is Redis (raises when unreachable), else this process's."""
        views = {}
        if self.shared is not None:
            await self.shared.connect_once()
            views = {v.name: v for v in await self.shared.views(names)}
        out: dict[str, dict[str, Any]] = {}
        now = self.clock()
        for name in names:
            leaf = self.leaves[name]
            b = leaf.breaker
            view = views.get(name)
            entry: dict[str, Any] = {
                "state": (view.state if view else b.state).value,
                "failures": view.failures if view else b.failures,
                "trips": view.trips if view else b.trips,
                "next_probe_in": view.remaining if view else max(b.due_at - now, 0.0),
                "probe_holder": (view.holder or None) if view else None,
                "probe_lease_left": view.lease if view else 0.0,
                "rate_limit": None,
            }
            if leaf.limiter is not None:
                limit = leaf.limiter.limit
                left = (
                    await self.shared.rate_left(name)
                    if self.shared is not None
                    else leaf.limiter.left()[0]
                )
                entry["rate_limit"] = {
                    "messages": limit.messages,
                    "per": limit.per,
                    "burst": limit.slots,
                    "slots_left": left,
                }
            out[name] = entry
        return out

    def _breaker_listener(self, leaf: LeafHealth) -> Callable[[BreakerState, BreakerState], None]:
        name = leaf.provider.name

        def changed(old: BreakerState, new: BreakerState) -> None:
            level = 30 if new is BreakerState.OPEN else 20
            log.log(level, "provider %s: circuit %s -> %s", name, old.value, new.value)
            if new is BreakerState.OPEN and leaf.breaker.slow_call:
                # A hang: every send waiting on it would wait out its own budget.
                released = leaf.release_waiting()
                if released:
                    log.info("provider %s is down: %d waiting sends move on", name, released)
            self.emit(Event("breaker", provider=name, old_state=old, new_state=new))

        return changed

    async def acquire(self, leaf: LeafHealth, *, force: bool = False) -> bool:
        """Whether a send may go to this provider now.

        A resting provider whose cooldown has passed is probed in the background when it
        can verify (the send goes elsewhere meanwhile); otherwise the send itself is the
        single half-open probe. With a shared store the probe is claimed for every
        process at once (one of them gets it); when the store cannot answer, this
        process decides alone.
        """
        breaker = leaf.breaker
        if breaker.state is BreakerState.CLOSED:
            return True
        if force:
            return breaker.acquire(force=True)
        if not breaker.available():
            return False
        if self.shared is not None:
            granted = await self.shared.claim(leaf.provider.name)
            if granted is not None:
                if breaker.closed:
                    return True  # another process's probe closed it meanwhile
                if not granted:
                    return False
                breaker.acquire(force=True)  # the lease is ours: half-open, our probe
                if self._verify_probe(leaf):
                    self._start_probe(leaf)
                    return False
                return True
        if self._verify_probe(leaf):
            if breaker.acquire():  # claims the half-open probe for the background check
                self._start_probe(leaf)
            return False
        return breaker.acquire()

    def _verify_probe(self, leaf: LeafHealth) -> bool:
        """Whether the probe is a background verify() rather than a send."""
        return (
            self.health.probe == "verify"
            and leaf.breaker.verify_can_probe
            and leaf.can_verify
            and self._background_ok()
        )

    @staticmethod
    def _background_ok() -> bool:
        return current_async_library() == "asyncio"  # probes are asyncio tasks

    def _start_probe(self, leaf: LeafHealth) -> None:
        log.info("provider %s: probing in the background (verify)", leaf.provider.name)
        task = asyncio.get_running_loop().create_task(self._probe(leaf))
        leaf.probe = task
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    async def _probe(self, leaf: LeafHealth) -> None:
        from .._errors import DeliveryError, TransientError

        name = leaf.provider.name
        started = _clock.now()
        limit = self.budget.max
        error: DeliveryError | None = None
        try:
            async with asyncio.timeout(limit):
                await leaf.provider.verify()
        except TimeoutError:
            error = TransientError(
                f"probe: no answer within {limit:g}s", provider=name, timed_out=True
            )
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a plugin's verify blew up: not back
            error = TransientError(f"probe failed: {type(exc).__name__}: {exc}", provider=name)
        finally:
            leaf.probe = None
        if error is None:
            leaf.estimator.observe(_clock.now() - started)
            log.info("provider %s: background probe ok, back in service", name)
            leaf.breaker.record_probe_success()
        else:
            log.info("provider %s: background probe failed: %s", name, error)
            leaf.breaker.record_failure(error)

    async def aclose(self) -> None:
        probes = list(self._probes)
        for task in probes:
            task.cancel()
        if probes:
            await asyncio.gather(*probes, return_exceptions=True)
        for leaf in self.leaves.values():
            leaf.breaker.release()
        if self.shared is not None:
            await self.shared.aclose()

    # -- events ------------------------------------------------------------------------

    def listening(self, level: int | None) -> bool:
        """Whether an event would be read: by a listener besides the log, or by the log
        as a record at ``level`` (None: the log writes none for it, as for ``start``).

        The hot path asks before it builds an event: with the defaults (the log the only
        listener, INFO and DEBUG off) the ``start``, successful ``attempt`` and ``sent``
        events of every send were built, numbered and dropped, ~1.6 us each.
        """
        listeners = self.listeners
        if len(listeners) != 1 or listeners[0] is not log_event:
            return True
        return level is not None and event_logged(level)

    def emit(self, event: Event) -> None:
        ctx = _SEND.get()
        if ctx is not None and event.kind != "breaker":
            if event.send_id is None:
                # Fresh from our own code and not yet seen by anyone: filled in place
                # (dataclasses.replace cost about 5 us an event on the hot path).
                object.__setattr__(event, "send_id", ctx.send_id)
            if event.kind in ("sent", "failed"):
                ctx.ended = True
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("mailer event listener failed")

    def record(
        self,
        provider: str,
        message_id: str | None,
        attempts: list[Attempt],
        started: float,
        error: DeliveryError | None,
        committed: bool | None,
    ) -> None:
        attempt = Attempt(
            provider=provider,
            outcome="sent" if error is None else type(error).__name__,
            duration=_clock.now() - started,
            error=None if error is None else str(error.args[0] if error.args else error),
            code=None if error is None else error.code,
            committed=committed,
            possibly_delivered=possibly_delivered(error, committed),
        )
        attempts.append(attempt)
        if error is None and not self.listening(logging.DEBUG):
            return  # the log's level for a successful attempt: nobody reads this one
        self.emit(
            Event("attempt", provider=provider, message_id=message_id, attempt=attempt, error=error)
        )

    def sent(self, provider: str, message_id: str | None, result: SendResult) -> None:
        if not self.listening(logging.INFO):  # the log's level for a sent message
            ctx = _SEND.get()
            if ctx is not None:
                ctx.ended = True  # what emit() records of a "sent" event
            return
        self.emit(Event("sent", provider=provider, message_id=message_id, result=result))
