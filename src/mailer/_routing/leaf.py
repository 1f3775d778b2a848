"""A Leaf: one provider as a node of the routing tree, with everything per provider.

A group asks each of its children the same four questions (:class:`Node`): may you be
tried now (``available``), when may you be tried next (``due_at``), may this send have
you (``acquire``), and send this (``try_send``). A :class:`~mailer._routing.group.Group`
answers them for its children as a whole; a Leaf answers them for one provider, and owns
what is per provider: the breaker, the same-provider retries, the rate-limit slot, the
pre-commit budget and the attempt itself (:class:`~mailer._attempt.AttemptContext`).
So a group treats every child alike, as Symfony's ``RoundRobinTransport`` does, and the
per-provider machinery lives in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from .. import _clock
from .._attempt import AttemptContext
from .._attempt import Tries as _Tries
from .._errors import (
    DeliveryError,
    DeliveryUncertain,
    PermanentError,
    RateLimited,
    TransientError,
)
from .._log import get_logger
from .._message import Message
from .._provider import Provider
from .._result import SendResult
from .events import Event
from .health import BreakerState
from .runtime import LeafHealth, Runtime, SendContext

__all__ = ["Leaf", "Node"]

log = get_logger("mailer")


class Node(Protocol):
    """What a group asks of each child: a :class:`Leaf` or another group."""

    @property
    def name(self) -> str: ...

    def bind(self, runtime: Runtime) -> None:
        """Join the tree's runtime (health, settings, listeners)."""

    def leaves(self) -> Iterator[Provider]:
        """The providers below, depth first, in config order."""

    def available(self) -> bool:
        """Whether something below may be tried now (without claiming a probe)."""

    def due_at(self) -> float:
        """The soonest time something below may be tried again."""

    async def acquire(self) -> bool:
        """Whether this send may go here now (may claim a half-open probe)."""

    def force(self, ctx: SendContext) -> None:
        """Every provider rests: let this send through here anyway."""

    def why_resting(self) -> str:
        """Why ``acquire`` said no, for the error when every provider rests."""

    async def try_send(
        self, message: Message, ctx: SendContext, errors: dict[str, DeliveryError]
    ) -> SendResult | None:
        """Send here; None (with ``errors`` filled in) means: go on to the next child."""


#: how much sooner than the attempt's deadline a timeout may end a wait and still be the
#: deadline's (the timeouts are set from one reading of the clock, then armed)
_DEADLINE_SLACK = 0.01


def _lag_cut_short(state: AttemptContext, error: DeliveryError) -> bool:
    """A timeout after the commit point that the event loop's lag explains: no verdict.

    A timeout after the commit point is a slow call (the breaker opens on the first):
    the provider had its window and did not answer. When the wait ended at the attempt's
    deadline, which counts wall time, and the loop was held up before the commit point
    (the budget moved on by ``state.lagged``), the provider had that much less of its
    window, spent by this process. The send stays uncertain either way; only the
    breaker is spared. A stall *after* the commit point needs no rule: a reply that
    arrived during it is read before the timers run (asyncio's order), so it can only
    make a wait end later. Each send that meets a hung provider is still held to its
    deadline, and the first one whose wait the loop did not cut opens the breaker.
    """
    deadline = state.deadline
    return (
        error.timed_out
        and state.committed
        and state.lagged >= 0.001
        and deadline is not None
        and _clock.now() >= deadline - _DEADLINE_SLACK
    )


class _NotTried(TransientError):
    """The send's deadline passed before this provider was asked: nothing was sent, and
    the provider's health is unknown, so its breaker must not count it as a failure."""

    no_verdict = True
    retry_here = False


class _OverRateLimit(TransientError):
    """The provider's rate-limit slot is further away than this send may wait: nothing
    was sent, and the provider is healthy, so its breaker is not touched."""

    no_verdict = True
    retry_here = False


class _StopAtTries(stop_base):
    """tenacity's view of :meth:`_Tries.past`; ``before`` is the time of the first try."""

    def __init__(self, tries: _Tries, margin: float, before: float) -> None:
        self.tries, self.margin, self.before = tries, margin, before

    def __call__(self, retry_state: RetryCallState) -> bool:
        spent = self.before + (retry_state.seconds_since_start or 0.0)
        took = spent / (retry_state.attempt_number + 1)
        return self.tries.past(self.margin, took)


class Leaf:
    """One provider in a tree: its breaker, retries, rate slot, budget and attempts."""

    runtime: Runtime
    health: LeafHealth

    def __init__(self, provider: Provider) -> None:
        self.provider = provider

    @property
    def name(self) -> str:
        return self.provider.name

    def bind(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.health = runtime.leaf(self.provider)

    def leaves(self) -> Iterator[Provider]:
        yield self.provider

    def available(self) -> bool:
        return self.health.breaker.available()

    def due_at(self) -> float:
        return self.health.breaker.due_at

    async def acquire(self) -> bool:
        return await self.runtime.acquire(self.health)

    def force(self, ctx: SendContext) -> None:
        self.health.breaker.acquire(force=True)

    def why_resting(self) -> str:
        return self.health.breaker.why_resting()

    def __repr__(self) -> str:
        return f"<Leaf {self.name!r}>"

    # -- one send: the breaker's verdict ---------------------------------------------------

    async def try_send(
        self, message: Message, ctx: SendContext, errors: dict[str, DeliveryError]
    ) -> SendResult | None:
        """The decision table of :mod:`mailer._routing.group`, for one provider: one
        try, then tenacity's retries only after a retryable failure.

        The first try is made directly: most sends succeed on it, and building and
        running tenacity's machinery cost about as much as the rest of the routing.

        **One deadline per provider.** The try and its retries share one deadline: the
        send's, or sooner the provider's :attr:`~mailer.Provider.attempts_timeout` from
        the first try's start (an HTTP API's ``timeout``). So a Resend API that takes
        the body and never answers costs one ``timeout``, not one per try: after a read
        timeout its idempotent retry has nothing left, and the send moves on.
        """
        rt = self.runtime
        breaker = self.health.breaker
        name = self.name
        settled = False
        probe = breaker.state is not BreakerState.CLOSED  # acquired as the half-open probe
        try:
            # The first try made here, not in a frame of its own: every frame of a send's
            # chain is resumed on each of its wakes (four a send over SMTP; branch pool5)
            cfg = rt.retry
            started = _clock.now()
            shares = cfg.attempts if self.provider.idempotent else 1
            tries = _Tries(self.provider.attempts_timeout, ctx.deadline, ctx.deadline, shares)
            first: DeliveryError | None = None
            try:
                result = await self._attempt(message, ctx, tries)
            except DeliveryError as exc:
                took = _clock.now() - started
                check = self._retryable(probe)
                if cfg.attempts < 2 or not check(exc) or tries.past(cfg.backoff, took):
                    raise
                first = exc
            if first is not None:  # retried outside the except: no chained context
                result = await self._retry(message, ctx, tries, check, first, took)
        except PermanentError as exc:
            breaker.record_success()  # it answered, so it is healthy
            settled = True
            exc.attempts = ctx.attempts
            rt.emit(Event("failed", provider=name, message_id=message.message_id, error=exc))
            raise
        except DeliveryUncertain as exc:
            if exc is ctx.unjudged:
                breaker.release()  # its wait was cut short by our own loop's lag
            else:
                breaker.record_failure(exc)
            settled = True
            errors[name] = exc
            if rt.on_uncertain == "raise":
                exc.attempts = ctx.attempts
                rt.emit(Event("failed", provider=name, message_id=message.message_id, error=exc))
                raise
            return None
        except DeliveryError as exc:
            if not exc.failover:
                raise
            if exc.no_verdict or exc is ctx.unjudged:
                breaker.release()  # never asked, queued behind our own sends, or released
            else:
                breaker.record_failure(exc)
            settled = True
            errors[name] = exc
            return None
        finally:
            if not settled:
                breaker.release()  # MessageError, cancellation: no verdict on the provider
        breaker.record_success()
        result.attempts = ctx.attempts
        if result.message_id is None:
            result.message_id = message.message_id
        rt.sent(name, message.message_id, result)
        return result

    # -- retries on this provider ----------------------------------------------------------

    def _retryable(self, probe: bool) -> Callable[[BaseException], bool]:
        breaker = self.health.breaker
        idempotent = self.provider.idempotent

        def check(exc: BaseException) -> bool:
            if not probe and breaker.state is not BreakerState.CLOSED:
                return False  # other sends proved it down meanwhile: go elsewhere now
            if isinstance(exc, RateLimited):
                return False  # it asked us to go away: go elsewhere
            if isinstance(exc, DeliveryUncertain):
                return idempotent  # its key makes a re-send safe
            if isinstance(exc, DeliveryError) and not exc.retry_here:
                return False  # a hang, TLS, DNS: does not heal in a retry's backoff
            return isinstance(exc, TransientError)

        return check

    async def _retry(
        self,
        message: Message,
        ctx: SendContext,
        tries: _Tries,
        check: Callable[[BaseException], bool],
        first: DeliveryError,
        took: float,
    ) -> SendResult:
        """Tries 2..N on one provider, with tenacity's backoff (first wait: ``backoff``),
        until the provider's deadline (see :meth:`try_send`)."""
        cfg = self.runtime.retry
        await anyio.sleep(min(cfg.backoff, cfg.max_backoff))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.attempts - 1) | _StopAtTries(tries, cfg.backoff, took),
            wait=wait_exponential(multiplier=cfg.backoff * 2, max=cfg.max_backoff)
            if cfg.backoff
            else (lambda state: 0.0),
            retry=retry_if_exception(check),
            reraise=True,
            sleep=anyio.sleep,
        )
        uncertain = [first] if isinstance(first, DeliveryUncertain) else []
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        return await self._attempt(message, ctx, tries)
                    except DeliveryUncertain as exc:
                        uncertain.append(exc)
                        raise
        except DeliveryError as exc:
            if uncertain and not isinstance(exc, DeliveryUncertain):
                # An earlier attempt may have delivered it (the retry of an idempotent
                # provider failed differently): the outcome is still uncertain.
                raise DeliveryUncertain(
                    f"an earlier attempt may have delivered the message "
                    f"({uncertain[0].args[0]}); the retry then failed: "
                    f"{exc.args[0] if exc.args else exc}",
                    provider=self.name,
                    code=exc.code,
                    response=exc.response,
                ) from exc
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    # -- one attempt -----------------------------------------------------------------------

    async def _attempt(self, message: Message, ctx: SendContext, tries: _Tries) -> SendResult:
        """One try, held to the pre-commit budget before its commit point and to the
        tries' deadline (the send's, or the provider's sooner one) after it."""
        rt = self.runtime
        leaf = self.health
        provider = self.provider
        name = provider.name
        now = _clock.now()
        remaining = ctx.deadline - now
        if remaining <= 0:
            raise _NotTried("send_timeout expired before this provider was tried", provider=name)
        # Providers shorten their own timeouts to the deadline (AttemptContext.timeout)
        # and fail precisely; the scope is the backstop, a little later.
        grace = min(0.5, rt.send_timeout * 0.25)
        estimator = leaf.estimator
        budget = estimator.budget()
        if leaf.limiter is not None:
            # The wait for a slot is checked against the budget but not taken from it:
            # the attempt gets its whole budget once its slot comes.
            try:
                now = await self._wait_for_slot(budget, remaining)
            except _OverRateLimit as exc:  # recorded, so the caller sees why it was skipped
                rt.record(name, message.message_id, ctx.attempts, now, exc, False)
                raise
        deadline = tries.start(now)
        if deadline <= now:
            raise _NotTried(
                f"{name}'s timeout ({tries.window:g}s, for a try and its retries) expired "
                "before this retry",
                provider=name,
            )
        state = AttemptContext.open(
            name,
            deadline=deadline,
            started=now,
            grace=grace,
            budget=budget if provider.reports_commit_point else None,
            cap=ctx.deadline if deadline < ctx.deadline else None,
            loop_lag=estimator.config.loop_lag,
        )
        scope = state.scope
        assert scope is not None
        leaf.inflight.add(state)
        token = None
        try:
            with scope:
                # Entered after the scope: its deadline timer copies the context when it
                # is armed, and a cancelled timer stays in the loop's heap until its time
                # (send_timeout); with this attempt in that context, every attempt of the
                # last minute was kept alive (50,000 fast sends: ~100 MB).
                token = state.enter()
                if not provider.reports_commit_point:
                    # The safe default: we cannot know when it sends, so it counts as
                    # committed from its first instruction (and the hooks run first).
                    await state.commit()
                result = await provider.send(message)
            if scope.cancelled_caught:
                raise TimeoutError
        except anyio.get_cancelled_exc_class():
            self._cancelled(state, message, ctx)
            raise
        except TimeoutError:
            error = self._timed_out(state, budget, ctx)
            if _lag_cut_short(state, error):
                ctx.unjudged = error
            rt.record(name, message.message_id, ctx.attempts, now, error, state.committed)
            raise error from None
        except DeliveryError as exc:
            if exc.provider is None:
                exc.provider = name
            if (state.released and not state.committed) or _lag_cut_short(state, exc):
                # Another send's verdict ended it, or our own loop's lag cut its wait
                # short, not the provider's failure: the breaker must not count it.
                # Kept here, not written onto the error.
                ctx.unjudged = exc
            rt.record(name, message.message_id, ctx.attempts, now, exc, state.reported)
            raise
        finally:
            state.disarm()
            if token is not None:
                state.exit(token)
            leaf.inflight.discard(state)
            tries.queued(state.waited)
        if state.setup_time is not None:
            leaf.estimator.observe(state.setup_time)
        rt.record(name, message.message_id, ctx.attempts, now, None, state.reported)
        return result

    async def _wait_for_slot(self, budget: float, remaining: float) -> float:
        """Wait for the provider's rate-limit slot; the time after. Raises
        _OverRateLimit when it is further away than the send may wait."""
        leaf = self.health
        assert leaf.limiter is not None
        limit = leaf.limiter.limit
        if limit.max_wait == "budget":
            max_wait = min(budget, remaining)
        elif limit.max_wait == "deadline":
            max_wait = remaining
        else:
            max_wait = min(limit.max_wait, remaining)
        wait = await self.runtime.reserve(leaf, max_wait)
        if wait is None:
            if limit.max_wait == "budget":
                what = f"the {budget:.3g}s pre-commit budget"
            elif limit.max_wait == "deadline":
                what = "the send's deadline"
            else:
                what = f"rate_limit.max_wait ({limit.max_wait:g}s)"
            raise _OverRateLimit(
                f"rate limit ({limit.messages} per {limit.per:g}s): the next slot is past "
                f"{what}; nothing was sent",
                provider=self.name,
            )
        if wait > 0:
            await anyio.sleep(wait)
        return _clock.now()

    def _timed_out(self, state: AttemptContext, budget: float, ctx: SendContext) -> DeliveryError:
        """The error for an attempt its scope ended: the deadline, the budget or a
        release, told apart by what the attempt knows."""
        name = state.provider
        window = self.provider.attempts_timeout
        if state.deadline is not None and state.deadline < ctx.deadline and window is not None:
            what = f"{name}'s timeout ({window:g}s, for a try and its retries)"
        else:
            what = f"send_timeout ({self.runtime.send_timeout:g}s)"
        if state.committed:
            # no answer after the commit point: a slow call, as the providers' own
            # post-commit timeouts are (the breaker opens on the first)
            return DeliveryUncertain(
                f"{what} expired during the attempt; the provider may have accepted the message",
                provider=name,
                timed_out=True,
            )
        if state.deadline is not None and _clock.now() >= state.deadline:
            return TransientError(
                f"{what} expired before the commit point: nothing was sent",
                provider=name,
                retry_here=False,
            )
        if state.released:
            return TransientError(
                "released before the commit point: another send found this provider down "
                "(nothing was sent)",
                provider=name,
                retry_here=False,
                no_verdict=True,
            )
        held = (
            f", not counting {state.lagged:.3g}s this process's event loop was held up"
            if state.lagged >= 0.001
            else ""
        )
        return TransientError(
            f"no progress to the commit point within the {budget:.3g}s pre-commit budget"
            f"{held} (a hang: connect, TLS, greeting or a reply never came); nothing was sent",
            provider=name,
            retry_here=False,
            timed_out=True,
        )

    def _cancelled(self, state: AttemptContext, message: Message, ctx: SendContext) -> None:
        """The caller cancelled (its own timeout, a task group)."""
        committed = state.committed
        error: DeliveryError
        if committed:
            error = DeliveryUncertain(
                "the send was cancelled after the commit point; the provider may have "
                "accepted the message",
                provider=state.provider,
            )
            log.warning(
                "send %s via %s cancelled after the commit point: it may have been delivered",
                message.message_id,
                state.provider,
            )
        else:
            error = TransientError(
                "the send was cancelled before the commit point: not sent",
                provider=state.provider,
            )
            log.info(
                "send %s via %s cancelled before the commit point: not sent",
                message.message_id,
                state.provider,
            )
        self.runtime.record(
            state.provider, message.message_id, ctx.attempts, state.started, error, committed
        )
