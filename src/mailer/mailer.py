"""The Mailer: priority routing, failover, same-provider retries, health.

The decision table (docs/failure-semantics.md explains each row):

===================  ================  ==========================================
error from provider  breaker           what the Mailer does
===================  ================  ==========================================
(success)            success           return the SendResult
TransientError       failure           retry here (few, short), then next provider
RateLimited          open retry_after  next provider at once (no retry here)
AuthError            open long         next provider at once
PermanentError       success           raise at once: every provider would refuse
MessageError         (untouched)       raise at once: nothing was sent
DeliveryUncertain    failure           raise (default) or, opted in, next provider;
                                       retried here first when the provider is
                                       idempotent (its key makes a re-send safe)
===================  ================  ==========================================

Failover is not sticky: every send starts again from the top of the priority list, and a
provider whose breaker is open is skipped until its cooldown has passed; then a single
probe send decides whether it is back.
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)
from tenacity.stop import stop_base

from ._log import get_logger, register_secret, secret_values
from .config import MailerConfig, RetryConfig, load_config
from .errors import (
    AllProvidersFailed,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    PermanentError,
    RateLimited,
    TransientError,
)
from .health import BreakerState, CircuitBreaker, HealthConfig
from .message import Address, Message
from .plugins import load_provider_class
from .provider import _DEADLINE, AsyncClosing, Provider
from .result import Attempt, SendResult

__all__ = ["Event", "Mailer", "Route"]

log = get_logger("mailer")

EventKind = Literal["attempt", "failover", "sent", "failed", "breaker"]


@dataclass(frozen=True, slots=True)
class Event:
    """What listeners receive. ``kind`` says which of the optional fields are set."""

    kind: EventKind
    provider: str | None = None
    message_id: str | None = None
    attempt: Attempt | None = None
    error: DeliveryError | None = None
    result: SendResult | None = None
    next_provider: str | None = None
    old_state: BreakerState | None = None
    new_state: BreakerState | None = None


@dataclass(eq=False)
class Route:
    """A provider with its place in the order. Lower priority numbers go first."""

    provider: Provider
    priority: int = 1
    weight: float = 1.0
    breaker: CircuitBreaker = field(init=False)

    @property
    def name(self) -> str:
        return self.provider.name


class _NotTried(TransientError):
    """The send's deadline passed before this provider was asked: nothing was sent, and
    the provider's health is unknown, so its breaker must not count it as a failure."""


def _past(deadline: float, margin: float, took: float) -> bool:
    """Whether another try, as long as the tries so far, would end past the deadline.

    A retry that cannot finish only takes the time the next provider needs (a slow
    failure, e.g. queued behind a hung server, is not retried).
    """
    return time.monotonic() + margin + took >= deadline


class _StopAtDeadline(stop_base):
    """tenacity's view of :func:`_past`; ``before`` is the time of the first try."""

    def __init__(self, deadline: float, margin: float, before: float) -> None:
        self.deadline, self.margin, self.before = deadline, margin, before

    def __call__(self, retry_state: RetryCallState) -> bool:
        spent = self.before + (retry_state.seconds_since_start or 0.0)
        took = spent / (retry_state.attempt_number + 1)
        return _past(self.deadline, self.margin, took)


class Mailer(AsyncClosing):
    """Sends each message through the first healthy provider that takes it.

    ``providers`` are Provider instances (priority = position, 1 first) or Routes.
    ``clock`` drives the breakers (inject a fake one in tests); deadlines use real time.
    """

    def __init__(
        self,
        providers: Sequence[Provider | Route],
        *,
        defaults: Mapping[str, Any] | None = None,
        on_uncertain: Literal["raise", "failover"] = "raise",
        send_timeout: float = 60.0,
        health: HealthConfig | Mapping[str, Any] | None = None,
        retry: RetryConfig | Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not providers:
            raise ConfigError("a Mailer needs at least one provider")
        if on_uncertain not in ("raise", "failover"):
            raise ConfigError("on_uncertain must be 'raise' or 'failover'")
        if not send_timeout > 0:
            raise ConfigError("send_timeout must be a positive number of seconds")
        self.on_uncertain = on_uncertain
        self.send_timeout = float(send_timeout)
        self.health_config = (
            health if isinstance(health, HealthConfig) else HealthConfig(**(health or {}))
        )
        self.retry_config = (
            retry if isinstance(retry, RetryConfig) else RetryConfig(**(retry or {}))
        )
        self.defaults = self._check_defaults(defaults or {})
        self._clock = clock
        self._rng = rng or random.Random()
        self._listeners: list[Callable[[Event], Any]] = []
        self._routes: list[Route] = []
        names: set[str] = set()
        for i, item in enumerate(providers):
            route = item if isinstance(item, Route) else Route(item, priority=i + 1)
            if route.name in names:
                raise ConfigError(
                    f"two providers are named {route.name!r}; give each a unique name"
                )
            names.add(route.name)
            route.breaker = CircuitBreaker(self.health_config, clock)
            route.breaker.on_change = self._breaker_listener(route.name)
            for secret in secret_values(route.provider.config):
                register_secret(secret)
            self._routes.append(route)

    # -- construction ------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, source: Mapping[str, Any] | str | Path | MailerConfig, **kwargs: Any
    ) -> Mailer:
        """Build from a mapping, a TOML/JSON file, or a MailerConfig (see docs)."""
        config = load_config(source)
        routes = []
        for i, entry in enumerate(config.providers):
            if not entry.enabled:
                continue
            provider_cls = load_provider_class(entry.type)
            name = entry.name or entry.type
            provider = provider_cls.from_config(name, entry.config)
            priority = entry.priority if entry.priority is not None else i + 1
            routes.append(Route(provider, priority=priority, weight=entry.weight))
        if not routes:
            raise ConfigError("every provider in the config is disabled")
        options: dict[str, Any] = {
            "defaults": config.defaults,
            "on_uncertain": config.on_uncertain,
            "send_timeout": config.send_timeout,
            "health": config.health,
            "retry": config.retry,
        }
        options.update(kwargs)
        return cls(routes, **options)

    @staticmethod
    def _check_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(defaults)
        if "from" in out:
            out["sender"] = out.pop("from")
        try:
            for key in ("sender",):
                if out.get(key) is not None:
                    out[key] = Address.parse(out[key])
        except MessageError as exc:
            raise ConfigError(f"invalid defaults: {exc}") from None
        return out

    # -- introspection -----------------------------------------------------------------

    @property
    def providers(self) -> list[Provider]:
        return [r.provider for r in self._routes]

    def health(self) -> dict[str, dict[str, Any]]:
        """Each provider's breaker state, for dashboards and the CLI."""
        now = self._clock()
        return {
            r.name: {
                "state": r.breaker.state.value,
                "priority": r.priority,
                "retry_in": max(r.breaker.open_until - now, 0.0)
                if r.breaker.state is BreakerState.OPEN
                else 0.0,
            }
            for r in self._routes
        }

    def subscribe(self, listener: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``listener(event)`` for each attempt, failover, result and breaker change.

        Listeners run inline and must be quick; an exception in one is logged, not raised.
        Returns a function that unsubscribes.
        """
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _emit(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.exception("mailer event listener failed")

    def _breaker_listener(self, name: str) -> Callable[[BreakerState, BreakerState], None]:
        def changed(old: BreakerState, new: BreakerState) -> None:
            level = 30 if new is BreakerState.OPEN else 20
            log.log(level, "provider %s: circuit %s -> %s", name, old.value, new.value)
            self._emit(Event("breaker", provider=name, old_state=old, new_state=new))

        return changed

    # -- routing -----------------------------------------------------------------------

    def _plan(self) -> list[Route]:
        """Priority order; equal priorities in a weighted random order (load spreading)."""
        keyed = [
            (r.priority, -(self._rng.random() ** (1.0 / r.weight)), i, r)
            for i, r in enumerate(self._routes)
        ]
        keyed.sort(key=lambda k: (k[0], k[1], k[2]))
        return [k[3] for k in keyed]

    # -- sending -----------------------------------------------------------------------

    async def send(self, message: Message) -> SendResult:
        """Deliver ``message`` once, through the first provider that takes it.

        Raises MessageError (bad message, before any I/O), PermanentError (refused for a
        reason every provider shares), DeliveryUncertain (may have been delivered; with
        ``on_uncertain="raise"``) or AllProvidersFailed (keeps the message and each
        provider's error, so the caller can store it and retry).
        """
        msg = message.with_defaults(self.defaults)
        msg.as_bytes()  # render and check once, before any I/O
        msg.envelope_sender  # noqa: B018 - raises MessageError without a sender
        deadline = time.monotonic() + self.send_timeout
        token = _DEADLINE.set(deadline)
        attempts: list[Attempt] = []
        errors: dict[str, DeliveryError] = {}
        try:
            plan = self._plan()
            tried = False
            for index, route in enumerate(plan):
                if not route.breaker.acquire():
                    continue
                tried = True
                result = await self._try_route(route, msg, deadline, attempts, errors)
                if result is not None:
                    return result
                nxt = self._next_available(plan[index + 1 :])
                self._emit(
                    Event("failover", provider=route.name, message_id=msg.message_id,
                          error=errors[route.name], next_provider=nxt)
                )  # fmt: skip
                log.info("failover from %s (%s) to %s", route.name,
                         type(errors[route.name]).__name__, nxt or "nobody")  # fmt: skip
            if not tried:
                # Every breaker is open: try the provider due soonest rather than fail blind.
                route = min(plan, key=lambda r: (r.breaker.due_at, r.priority))
                route.breaker.acquire(force=True)
                log.warning("every provider is resting; trying %s early", route.name)
                result = await self._try_route(route, msg, deadline, attempts, errors)
                if result is not None:
                    return result
            failure = AllProvidersFailed(errors, message=msg)
            failure.attempts = attempts
            self._emit(Event("failed", message_id=msg.message_id, error=failure))
            raise failure
        finally:
            _DEADLINE.reset(token)

    def _next_available(self, routes: Sequence[Route]) -> str | None:
        for r in routes:
            if r.breaker.available():
                return r.name
        return None

    async def _try_route(
        self,
        route: Route,
        msg: Message,
        deadline: float,
        attempts: list[Attempt],
        errors: dict[str, DeliveryError],
    ) -> SendResult | None:
        """Send through one provider (with its retries). None means: fail over."""
        breaker = route.breaker
        settled = False
        probe = breaker.state is not BreakerState.CLOSED  # acquired as the half-open probe
        try:
            result = await self._send_with_retries(route, msg, deadline, attempts, probe)
        except PermanentError as exc:
            breaker.record_success()  # it answered, so it is healthy
            settled = True
            exc.attempts = attempts
            self._emit(Event("failed", provider=route.name, message_id=msg.message_id,
                             error=exc))  # fmt: skip
            raise
        except DeliveryUncertain as exc:
            breaker.record_failure(exc)
            settled = True
            errors[route.name] = exc
            if self.on_uncertain == "raise":
                exc.attempts = attempts
                self._emit(Event("failed", provider=route.name, message_id=msg.message_id,
                                 error=exc))  # fmt: skip
                raise
            return None
        except DeliveryError as exc:
            if not exc.failover:
                raise
            if isinstance(exc, _NotTried):
                breaker.release()  # never contacted: no verdict on its health
            else:
                breaker.record_failure(exc)
            settled = True
            errors[route.name] = exc
            return None
        finally:
            if not settled:
                breaker.release()  # MessageError, cancellation: no verdict on the provider
        breaker.record_success()
        settled = True
        result.attempts = attempts
        if result.message_id is None:
            result.message_id = msg.message_id
        self._emit(Event("sent", provider=route.name, message_id=msg.message_id,
                         result=result))  # fmt: skip
        return result

    def _retryable(self, route: Route, probe: bool) -> Callable[[BaseException], bool]:
        def check(exc: BaseException) -> bool:
            if not probe and route.breaker.state is not BreakerState.CLOSED:
                return False  # other sends proved it down meanwhile: go elsewhere now
            if isinstance(exc, RateLimited):
                return False  # it asked us to go away: go elsewhere
            if isinstance(exc, DeliveryUncertain):
                return route.provider.idempotent  # its key makes a re-send safe
            return isinstance(exc, TransientError)

        return check

    async def _send_with_retries(
        self,
        route: Route,
        msg: Message,
        deadline: float,
        attempts: list[Attempt],
        probe: bool = False,
    ) -> SendResult:
        """One try, then tenacity's retries only after a retryable failure.

        The first try is made directly: most sends succeed on it, and building and
        running tenacity's machinery cost about as much as the rest of the Mailer.
        """
        cfg = self.retry_config
        check = self._retryable(route, probe)
        started = time.monotonic()
        try:
            return await self._attempt_once(route, msg, deadline, attempts)
        except DeliveryError as exc:
            took = time.monotonic() - started
            if cfg.attempts < 2 or not check(exc) or _past(deadline, cfg.backoff, took):
                raise
            first = exc
        return await self._retry(route, msg, deadline, attempts, check, first, took)

    async def _retry(
        self,
        route: Route,
        msg: Message,
        deadline: float,
        attempts: list[Attempt],
        check: Callable[[BaseException], bool],
        first: DeliveryError,
        took: float,
    ) -> SendResult:
        """Tries 2..N on one provider, with tenacity's backoff (first wait: ``backoff``)."""
        cfg = self.retry_config
        await anyio.sleep(min(cfg.backoff, cfg.max_backoff))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(cfg.attempts - 1)
            | _StopAtDeadline(deadline, cfg.backoff, took),
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
                        return await self._attempt_once(route, msg, deadline, attempts)
                    except DeliveryUncertain as exc:
                        uncertain.append(exc)
                        raise
        except DeliveryError as exc:
            if uncertain and not isinstance(exc, DeliveryUncertain):
                # An earlier attempt may have delivered it (the retry of an idempotent
                # provider failed differently): the outcome is still uncertain. Reporting
                # the last error alone would fail over, or report a failure, and risk a
                # duplicate.
                raise DeliveryUncertain(
                    f"an earlier attempt may have delivered the message "
                    f"({uncertain[0].args[0]}); the retry then failed: "
                    f"{exc.args[0] if exc.args else exc}",
                    provider=route.name, code=exc.code, response=exc.response,
                ) from exc  # fmt: skip
            raise
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _attempt_once(
        self, route: Route, msg: Message, deadline: float, attempts: list[Attempt]
    ) -> SendResult:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _NotTried("send_timeout expired before this provider was tried",
                            provider=route.name)  # fmt: skip
        # Providers shorten their own timeouts to the deadline and fail precisely; this
        # backstop only catches one that does not, and then we cannot know what was sent.
        grace = min(0.5, self.send_timeout * 0.25)
        started = time.monotonic()
        # A bare CancelScope rather than anyio.fail_after: same effect, without two
        # generator-based context managers on every send's hot path.
        scope = anyio.CancelScope(deadline=anyio.current_time() + remaining + grace)
        try:
            with scope:
                result = await route.provider.send(msg)
            if scope.cancelled_caught:
                raise TimeoutError
        except anyio.get_cancelled_exc_class():
            # The caller cancelled (its own timeout, a task group): we cannot know how far
            # the provider got, so the attempt is reported uncertain to listeners and logs
            # while the cancellation itself goes on up.
            cancelled = DeliveryUncertain(
                "the send was cancelled during the attempt; the provider may have accepted "
                "the message", provider=route.name,
            )  # fmt: skip
            self._record(route, msg, attempts, started, cancelled)
            log.warning("send %s via %s cancelled: it may have been delivered",
                        msg.message_id, route.name)  # fmt: skip
            raise
        except TimeoutError:
            error: DeliveryError = DeliveryUncertain(
                f"send_timeout ({self.send_timeout:g}s) expired during the attempt; "
                "the provider may have accepted the message", provider=route.name,
            )  # fmt: skip
            self._record(route, msg, attempts, started, error)
            raise error from None
        except DeliveryError as exc:
            if exc.provider is None:
                exc.provider = route.name
            self._record(route, msg, attempts, started, exc)
            raise
        self._record(route, msg, attempts, started, None)
        return result

    def _record(
        self,
        route: Route,
        msg: Message,
        attempts: list[Attempt],
        started: float,
        error: DeliveryError | None,
    ) -> None:
        attempt = Attempt(
            provider=route.name,
            outcome="sent" if error is None else type(error).__name__,
            duration=time.monotonic() - started,
            error=None if error is None else str(error.args[0] if error.args else error),
            code=None if error is None else error.code,
        )
        attempts.append(attempt)
        if error is not None:
            log.debug("attempt %s via %s: %s", msg.message_id, route.name, attempt.error)
        self._emit(Event("attempt", provider=route.name, message_id=msg.message_id,
                         attempt=attempt, error=error))  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------

    async def verify(self) -> dict[str, Exception | None]:
        """Check every provider concurrently: None where it is fine, else the error."""
        results: dict[str, Exception | None] = {}

        async def one(route: Route) -> None:
            try:
                await route.provider.verify()
                results[route.name] = None
            except Exception as exc:
                results[route.name] = exc

        async with anyio.create_task_group() as tg:
            for route in self._routes:
                tg.start_soon(one, route)
        return {r.name: results[r.name] for r in self._routes}

    async def aclose(self) -> None:
        """Close every provider; if some fail to close, raise them all together."""
        failures: list[Exception] = []
        for route in self._routes:
            try:
                result = route.provider.aclose()
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                log.warning("closing provider %s failed: %s", route.name, exc)
                failures.append(exc)
        if failures:
            raise ExceptionGroup("some providers failed to close", failures)

    def __repr__(self) -> str:
        names = ", ".join(f"{r.name}(p{r.priority})" for r in self._routes)
        return f"<Mailer [{names}] on_uncertain={self.on_uncertain!r}>"
