"""Provider groups: failover and load sharing as ordinary Providers, so they nest.

The shape of Symfony Mailer's ``FailoverTransport`` and ``RoundRobinTransport``, with our
classification instead of "dead on any error". :class:`Group` is a template: it walks
its children in the order its subclass gives (:meth:`Group._order`, the one step a
subclass fills in), and for each leaf applies the breaker, the pre-commit budget and the
same-provider retries. A child that is itself a group is asked as a whole: its own
children have their own breakers and budgets.

The decision table (docs/failure-semantics.md explains each row):

===================  ================  ==========================================
error from a child   breaker           what the group does
===================  ================  ==========================================
(success)            success           return the SendResult
TransientError       failure           retry here if it heals in seconds, then next
  a slow call        opens at once     next child; waiting sends released too
  busy / not tried   (no verdict)      next child
RateLimited          open retry_after  next child at once (no retry here)
AuthError            open long         next child at once
PermanentError       success           raise at once: every provider would refuse
MessageError         (untouched)       raise at once: nothing was sent
DeliveryUncertain    failure           raise (default) or, opted in, next child;
                                       retried here first when the provider is
                                       idempotent (its key makes a re-send safe)
AllProvidersFailed   (its children's)  next child, unless something may have been
  (a nested group)                     delivered: then as DeliveryUncertain
===================  ================  ==========================================

Failover is not sticky: every send starts again from the group's order, and a resting
provider is skipped until its cooldown has passed.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from .._errors import (
    AllProvidersFailed,
    ConfigError,
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
from .attempt import AttemptState, _enter, _exit, commit_point, loop_time
from .events import Event
from .health import BreakerState
from .runtime import _SEND, LeafHealth, Runtime, SendContext

__all__ = ["Failover", "Group", "RoundRobin", "Weighted"]

log = get_logger("mailer")


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


def _past(deadline: float, margin: float, took: float) -> bool:
    """Whether another try, as long as the tries so far, would end past the deadline."""
    return time.monotonic() + margin + took >= deadline


class _StopAtDeadline(stop_base):
    """tenacity's view of :func:`_past`; ``before`` is the time of the first try."""

    def __init__(self, deadline: float, margin: float, before: float) -> None:
        self.deadline, self.margin, self.before = deadline, margin, before

    def __call__(self, retry_state: RetryCallState) -> bool:
        spent = self.before + (retry_state.seconds_since_start or 0.0)
        took = spent / (retry_state.attempt_number + 1)
        return _past(self.deadline, self.margin, took)


class Group(Provider):
    """Base of the provider groups. Subclasses implement :meth:`_order`."""

    #: a group's children report their own commit points
    reports_commit_point = True
    resolves_templates = False
    kind: str = "group"

    def __init__(self, providers: Sequence[Provider], *, name: str | None = None) -> None:
        if not providers:
            raise ConfigError(f"a {self.kind} group needs at least one provider")
        self.children: list[Provider] = list(providers)
        super().__init__(name or f"{self.kind}({' '.join(p.name for p in self.children)})")
        seen: set[str] = set()
        for leaf in self.leaves():
            if leaf.name in seen:
                raise ConfigError(f"two providers are named {leaf.name!r}; give each a unique name")
            seen.add(leaf.name)
        self._runtime: Runtime | None = None

    # -- the tree ----------------------------------------------------------------------

    def leaves(self) -> Iterator[Provider]:
        """Every non-group provider under this group, depth first, in config order."""
        for child in self.children:
            if isinstance(child, Group):
                yield from child.leaves()
            else:
                yield child

    def bind(self, runtime: Runtime) -> None:
        """Share ``runtime`` (settings, health, events) with every group below."""
        self._runtime = runtime
        for child in self.children:
            if isinstance(child, Group):
                child.bind(runtime)
            else:
                runtime.leaf(child)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self.bind(Runtime())
        assert self._runtime is not None
        return self._runtime

    def _order(self) -> list[Provider]:
        """The children in the order this send should try them."""
        raise NotImplementedError

    def available(self) -> bool:
        """Whether some provider below may be tried now (without claiming a probe)."""
        rt = self.runtime
        for child in self.children:
            if isinstance(child, Group):
                if child.available():
                    return True
            elif rt.leaf(child).breaker.available():
                return True
        return False

    def due_at(self) -> float:
        """The soonest time a provider below may be tried again."""
        rt = self.runtime
        return min(
            child.due_at() if isinstance(child, Group) else rt.leaf(child).breaker.due_at
            for child in self.children
        )

    # -- sending -----------------------------------------------------------------------

    async def _send(self, message: Message) -> SendResult:
        rt = self.runtime
        if rt.shared is not None:
            await rt.ready()
        ctx = _SEND.get()
        token = None
        if ctx is None:  # used on its own, not under a Mailer
            ctx = SendContext(message.message_id, time.monotonic() + rt.send_timeout, root=self)
            token = _SEND.set(ctx)
        try:
            return await self._route(message, ctx)
        finally:
            if token is not None:
                _SEND.reset(token)

    async def _route(self, message: Message, ctx: SendContext) -> SendResult:
        rt = self.runtime
        errors: dict[str, DeliveryError] = {}
        plan = self._order()
        tried = False
        # Only the root, or a group the root forced, tries a resting provider early.
        may_force, ctx.force = ctx.force or ctx.root is self, False
        for index, child in enumerate(plan):
            if not await self._acquire(child):
                continue
            tried = True
            result = await self._try(child, message, ctx, errors)
            if result is not None:
                return result
            nxt = self._next_available(plan[index + 1 :])
            error = errors[child.name] if child.name in errors else list(errors.values())[-1]
            rt.emit(Event("failover", provider=child.name, message_id=message.message_id,
                          error=error, next_provider=nxt))  # fmt: skip
        if not tried and may_force:
            # Every provider is resting: try the one due soonest rather than fail blind.
            child = min(plan, key=self._due)
            log.warning("every provider is resting; trying %s early", child.name)
            if isinstance(child, Group):
                ctx.force = True
            else:
                rt.leaf(child).breaker.acquire(force=True)
            result = await self._try(child, message, ctx, errors)
            if result is not None:
                return result
        raise AllProvidersFailed(errors, message=message)

    def _due(self, child: Provider) -> float:
        if isinstance(child, Group):
            return child.due_at()
        return self.runtime.leaf(child).breaker.due_at

    async def _acquire(self, child: Provider) -> bool:
        if isinstance(child, Group):
            return child.available()
        return await self.runtime.acquire(self.runtime.leaf(child))

    def _next_available(self, children: Sequence[Provider]) -> str | None:
        rt = self.runtime
        for child in children:
            if isinstance(child, Group):
                if child.available():
                    return child.name
            elif rt.leaf(child).breaker.available():
                return child.name
        return None

    async def _try(
        self,
        child: Provider,
        message: Message,
        ctx: SendContext,
        errors: dict[str, DeliveryError],
    ) -> SendResult | None:
        """Send through one child. None means: go on to the next."""
        if isinstance(child, Group):
            return await self._try_group(child, message, errors)
        return await self._try_leaf(self.runtime.leaf(child), message, ctx, errors)

    async def _try_group(
        self, child: Group, message: Message, errors: dict[str, DeliveryError]
    ) -> SendResult | None:
        try:
            return await child.send(message)
        except AllProvidersFailed as exc:
            # Reported per provider, not per group: the caller wants to know which
            # provider said what, however the groups nest.
            errors.update(exc.errors or {child.name: exc})
            if exc.failover or self.runtime.on_uncertain == "failover":
                return None
            raise
        except DeliveryUncertain as exc:
            errors[child.name] = exc
            if self.runtime.on_uncertain == "failover":
                return None
            raise

    async def _try_leaf(
        self,
        leaf: LeafHealth,
        message: Message,
        ctx: SendContext,
        errors: dict[str, DeliveryError],
    ) -> SendResult | None:
        rt = self.runtime
        breaker = leaf.breaker
        name = leaf.provider.name
        settled = False
        probe = breaker.state is not BreakerState.CLOSED  # acquired as the half-open probe
        try:
            result = await self._with_retries(leaf, message, ctx, probe)
        except PermanentError as exc:
            breaker.record_success()  # it answered, so it is healthy
            settled = True
            exc.attempts = ctx.attempts
            rt.emit(Event("failed", provider=name, message_id=message.message_id, error=exc))
            raise
        except DeliveryUncertain as exc:
            breaker.record_failure(exc)
            settled = True
            errors[name] = exc
            if rt.on_uncertain == "raise":
                exc.attempts = ctx.attempts
                rt.emit(Event("failed", provider=name, message_id=message.message_id,
                              error=exc))  # fmt: skip
                raise
            return None
        except DeliveryError as exc:
            if not exc.failover:
                raise
            if exc.no_verdict:
                breaker.release()  # never asked, or queued behind our own sends
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

    def _retryable(self, leaf: LeafHealth, probe: bool) -> Callable[[BaseException], bool]:
        def check(exc: BaseException) -> bool:
            if not probe and leaf.breaker.state is not BreakerState.CLOSED:
                return False  # other sends proved it down meanwhile: go elsewhere now
            if isinstance(exc, RateLimited):
                return False  # it asked us to go away: go elsewhere
            if isinstance(exc, DeliveryUncertain):
                return leaf.provider.idempotent  # its key makes a re-send safe
            if isinstance(exc, DeliveryError) and not exc.retry_here:
                return False  # a hang, TLS, DNS: does not heal in a retry's backoff
            return isinstance(exc, TransientError)

        return check

    async def _with_retries(
        self, leaf: LeafHealth, message: Message, ctx: SendContext, probe: bool
    ) -> SendResult:
        """One try, then tenacity's retries only after a retryable failure.

        The first try is made directly: most sends succeed on it, and building and
        running tenacity's machinery cost about as much as the rest of the routing.
        """
        cfg = self.runtime.retry
        check = self._retryable(leaf, probe)
        started = time.monotonic()
        try:
            return await self._attempt(leaf, message, ctx)
        except DeliveryError as exc:
            took = time.monotonic() - started
            if cfg.attempts < 2 or not check(exc) or _past(ctx.deadline, cfg.backoff, took):
                raise
            first = exc
        return await self._retry(leaf, message, ctx, check, first, took)

    async def _retry(
        self,
        leaf: LeafHealth,
        message: Message,
        ctx: SendContext,
        check: Callable[[BaseException], bool],
        first: DeliveryError,
        took: float,
    ) -> SendResult:
        """Tries 2..N on one provider, with tenacity's backoff (first wait: ``backoff``)."""
        cfg = self.runtime.retry
        await anyio.sleep(min(cfg.backoff, cfg.max_backoff))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.attempts - 1)
            | _StopAtDeadline(ctx.deadline, cfg.backoff, took),
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
                        return await self._attempt(leaf, message, ctx)
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
                    provider=leaf.provider.name, code=exc.code, response=exc.response,
                ) from exc  # fmt: skip
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt(self, leaf: LeafHealth, message: Message, ctx: SendContext) -> SendResult:
        """One try, held to the pre-commit budget before its commit point and to the
        send's deadline after it."""
        rt = self.runtime
        provider = leaf.provider
        name = provider.name
        now = time.monotonic()
        remaining = ctx.deadline - now
        if remaining <= 0:
            raise _NotTried("send_timeout expired before this provider was tried", provider=name)
        # Providers shorten their own timeouts to the deadline (deadline_remaining) and
        # fail precisely; the scope is the backstop, a little later.
        grace = min(0.5, rt.send_timeout * 0.25)
        budget = leaf.estimator.budget()
        if leaf.limiter is not None:
            # The wait for a slot is checked against the budget but not taken from it:
            # the attempt gets its whole budget once its slot comes.
            try:
                now = await self._wait_for_slot(leaf, budget, remaining)
            except _OverRateLimit as exc:  # recorded, so the caller sees why it was skipped
                rt.record(name, message.message_id, ctx.attempts, now, exc, False)
                raise
            remaining = ctx.deadline - now
        state = AttemptState(name, send_deadline=ctx.deadline, started=now)
        base = loop_time()
        state.lift_to = base + remaining + grace
        scope = anyio.CancelScope(deadline=state.lift_to)
        state.scope = scope
        if provider.reports_commit_point:
            state.budget_deadline = now + budget
            state.budget, state.grace = budget, min(0.25, budget * 0.1)
            state.arm(base + budget + state.grace)
        leaf.inflight.add(state)
        token = _enter(state)
        error: DeliveryError
        try:
            with scope:
                if not provider.reports_commit_point:
                    # The safe default: we cannot know when it sends, so it counts as
                    # committed from its first instruction (and the hooks run first).
                    await commit_point()
                result = await provider.send(message)
            if scope.cancelled_caught:
                raise TimeoutError
        except anyio.get_cancelled_exc_class():
            self._cancelled(state, message, ctx)
            raise
        except TimeoutError:
            error = self._timed_out(state, budget)
            rt.record(name, message.message_id, ctx.attempts, now, error, state.committed)
            raise error from None
        except DeliveryError as exc:
            if exc.provider is None:
                exc.provider = name
            if state.released and not state.committed:
                exc.no_verdict = True  # another send's verdict, not this attempt's
            rt.record(name, message.message_id, ctx.attempts, now, exc, self._committed(state))
            raise
        finally:
            state.disarm()
            _exit(token)
            leaf.inflight.discard(state)
        if state.setup_time is not None:
            leaf.estimator.observe(state.setup_time)
        rt.record(name, message.message_id, ctx.attempts, now, None, self._committed(state))
        return result

    async def _wait_for_slot(self, leaf: LeafHealth, budget: float, remaining: float) -> float:
        """Wait for the provider's rate-limit slot; the time after. Raises
        _OverRateLimit when it is further away than the send may wait."""
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
                f"{what}; nothing was sent", provider=leaf.provider.name,
            )  # fmt: skip
        if wait > 0:
            await anyio.sleep(wait)
        return time.monotonic()

    @staticmethod
    def _committed(state: AttemptState) -> bool | None:
        return state.committed if state.budget_deadline is not None else None

    def _timed_out(self, state: AttemptState, budget: float) -> DeliveryError:
        name = state.provider
        if state.committed:
            return DeliveryUncertain(
                f"send_timeout ({self.runtime.send_timeout:g}s) expired during the attempt; "
                "the provider may have accepted the message", provider=name,
            )  # fmt: skip
        if state.send_deadline is not None and time.monotonic() >= state.send_deadline:
            error = TransientError(
                f"send_timeout ({self.runtime.send_timeout:g}s) expired before the commit "
                "point: nothing was sent", provider=name,
            )  # fmt: skip
        elif state.released:
            error = TransientError(
                "released before the commit point: another send found this provider "
                "down (nothing was sent)", provider=name,
            )  # fmt: skip
            error.no_verdict = True
        else:
            error = TransientError(
                f"no progress to the commit point within the {budget:.3g}s pre-commit "
                "budget (a hang: connect, TLS, greeting or a reply never came); nothing "
                "was sent", provider=name,
            )  # fmt: skip
            error.timed_out = True
        error.retry_here = False
        return error

    def _cancelled(self, state: AttemptState, message: Message, ctx: SendContext) -> None:
        """The caller cancelled (its own timeout, a task group)."""
        committed = state.committed
        if committed:
            error: DeliveryError = DeliveryUncertain(
                "the send was cancelled after the commit point; the provider may have "
                "accepted the message", provider=state.provider,
            )  # fmt: skip
            log.warning("send %s via %s cancelled after the commit point: it may have "
                        "been delivered", message.message_id, state.provider)  # fmt: skip
        else:
            error = TransientError("the send was cancelled before the commit point: not "
                                   "sent", provider=state.provider)  # fmt: skip
            log.info("send %s via %s cancelled before the commit point: not sent",
                     message.message_id, state.provider)  # fmt: skip
        self.runtime.record(state.provider, message.message_id, ctx.attempts,
                            state.started, error, committed)  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------

    async def verify(self) -> None:
        """Verify every provider below; raise the first failure (Mailer.verify reports
        each)."""
        for leaf in self.leaves():
            await leaf.verify()

    async def aclose(self) -> None:
        failures: list[Exception] = []
        for child in self.children:
            try:
                closing = child.aclose()
                if inspect.isawaitable(closing):
                    await closing
            except Exception as exc:
                log.warning("closing provider %s failed: %s", child.name, exc)
                failures.append(exc)
        if failures:
            raise ExceptionGroup("some providers failed to close", failures)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class Failover(Group):
    """Try the children in order; the first is the primary."""

    kind = "failover"

    def _order(self) -> list[Provider]:
        return self.children


class _Shares(Group):
    """A group whose children have weights (one each; all 1 by default)."""

    def __init__(
        self,
        providers: Sequence[Provider],
        weights: Sequence[float] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(providers, name=name)
        self.weights = _weights(self.children, weights)


class Weighted(_Shares):
    """Share load at random in proportion to ``weights``; fail over within the group.

    Each send draws a full order (weighted sampling without replacement), so the
    provider a send did not draw first is still its fallback.
    """

    kind = "weighted"

    def _order(self) -> list[Provider]:
        rng = self.runtime.rng
        keyed = sorted(
            range(len(self.children)),
            key=lambda i: -(rng.random() ** (1.0 / self.weights[i])),
        )
        return [self.children[i] for i in keyed]


class RoundRobin(_Shares):
    """Take turns, in proportion to ``weights`` (smooth weighted round robin, as nginx
    does), and fail over to the rest in turn order. Symfony's ``roundrobin(a b)``."""

    kind = "roundrobin"

    def __init__(
        self,
        providers: Sequence[Provider],
        weights: Sequence[float] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        super().__init__(providers, weights, name=name)
        self._current = [0.0] * len(self.children)

    def _order(self) -> list[Provider]:
        total = sum(self.weights)
        for i, weight in enumerate(self.weights):
            self._current[i] += weight
        first = max(range(len(self.children)), key=lambda i: self._current[i])
        self._current[first] -= total
        n = len(self.children)
        return [self.children[(first + k) % n] for k in range(n)]


def _weights(children: Sequence[Provider], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(children)
    out = [float(w) for w in weights]
    if len(out) != len(children):
        raise ConfigError("a group needs one weight per provider")
    if not all(w > 0 and math.isfinite(w) for w in out):
        raise ConfigError("group weights must be positive numbers")
    return out


GROUPS: dict[str, type[Group]] = {"failover": Failover, "weighted": Weighted,
                                  "roundrobin": RoundRobin}  # fmt: skip


def make_group(kind: str, providers: Sequence[Provider], **options: Any) -> Group:
    """A group from its config name (``failover``, ``weighted``, ``roundrobin``)."""
    cls = GROUPS.get(kind)
    if cls is None:
        raise ConfigError(f"unknown group type {kind!r}; use one of {sorted(GROUPS)}")
    return cls(providers, **options)
