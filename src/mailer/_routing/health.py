"""A circuit breaker per provider: closed, open, half-open.

::

     failures >= threshold, a slow call, AuthError, RateLimited(retry_after)
   CLOSED ─────────────────────────────────────────────────────────▶ OPEN
     ▲                                                               │ cooldown passes
     │ probe succeeds                                                ▼
     └──────────────────────────────────────────────────────── HALF-OPEN
                         probe fails: OPEN again, cooldown grows (capped)

Why each rule:

* Only failures that say something about the *provider* count: transient errors, auth
  errors and uncertain outcomes. A permanent error (bad mailbox) proves the provider is up
  and answering, so it counts as a success.
* A slow call (no answer in time: a hang) opens at once, as Resilience4j counts slow
  calls: a hang seen by one send is news for every send, and each further send that tries
  would wait out its own budget. The sends already waiting on the provider are released
  to the next one when it opens (see :mod:`mailer._attempt`).
* AuthError opens at once and rests long: credentials do not fix themselves in seconds.
* RateLimited with ``retry_after`` opens for exactly that long: the provider told us.
* Half-open lets a single probe through; other sends go elsewhere until it answers.
  The probe is a background ``verify()`` (connect, TLS, EHLO, AUTH; an HTTP API's cheap
  authenticated GET) when the provider has one, so it costs no caller a wait and puts no
  message at risk; otherwise it is a real send, held to the pre-commit budget.
* The cooldown doubles while a provider keeps failing its probes, up to ``max_cooldown``,
  so a dead provider costs one probe per few minutes, not one per send.

All times come from an injected clock, so tests drive the breaker without sleeping.

With a shared store (``health.store = "redis://..."``, :mod:`mailer._routing.store`) each
process keeps this breaker as its local copy: the store is told of each verdict
(:attr:`CircuitBreaker.observer`) and writes the shared state back with
:meth:`CircuitBreaker.apply_shared`, so the rules above run once, in Redis, for every
process; when Redis is unreachable the local breaker goes on alone, as with the memory
store.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .._errors import AuthError, DeliveryError, DeliveryUncertain, RateLimited
from .._redact import redact_url

__all__ = ["BreakerObserver", "BreakerState", "CircuitBreaker", "HealthConfig"]

_STORE_SCHEMES = ("redis", "rediss", "unix")


class HealthConfig(BaseModel):
    """Breaker settings, shared by every provider of a Mailer. Times in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failure_threshold: int = Field(default=3, ge=1)
    cooldown: float = Field(default=30.0, gt=0)
    max_cooldown: float = Field(default=600.0, gt=0)
    auth_cooldown: float = Field(default=300.0, gt=0)
    backoff_factor: float = Field(default=2.0, ge=1.0)
    #: how a resting provider is tried again: a background verify() (no caller waits, no
    #: message at risk) or a real send held to the pre-commit budget
    probe: Literal["verify", "send"] = "verify"
    #: where breaker state lives: "memory" (this process alone) or a Redis URL
    #: (``redis://host:6379/0``, ``rediss://``, ``unix://``) shared by every process using
    #: it with the same ``prefix``
    store: str = "memory"
    #: the key prefix in the shared store (one per application or environment)
    prefix: str = Field(default="mailer", min_length=1, max_length=100)
    #: how often each process re-reads the shared state (pub/sub carries changes sooner)
    refresh: float = Field(default=0.25, gt=0, le=60)
    #: how long one call to the store may take before the process goes on alone
    store_timeout: float = Field(default=0.25, gt=0, le=10)

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        if value == "memory":
            return value
        scheme = value.partition("://")[0].lower() if "://" in value else ""
        if scheme not in _STORE_SCHEMES:
            raise ValueError(
                "health.store is 'memory' or a Redis URL (redis://host:6379/0, rediss://, unix://)"
            )
        try:
            urlsplit(value).port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(
                "health.store has an invalid host or port; percent-encode a password "
                "holding '/', '@', ':' or '#'"
            ) from None
        return value

    def __repr_args__(self) -> Any:
        # The store URL may carry a password: show only where it points.
        for key, value in super().__repr_args__():
            yield key, (redact_url(value) if key == "store" else value)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class BreakerObserver(Protocol):
    """Told of each verdict after the local breaker applied it (a shared store)."""

    def success(self, breaker: CircuitBreaker, was: tuple[BreakerState, int, int]) -> None:
        """``was``: (state, failures, probation) before; a background verify's success
        leaves ``breaker.probation`` above 0, a real send's leaves it 0."""

    def failure(self, breaker: CircuitBreaker, error: DeliveryError) -> None: ...

    def released(self, breaker: CircuitBreaker) -> None: ...


@dataclass
class CircuitBreaker:
    config: HealthConfig
    clock: Callable[[], float]
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive failures while closed
    trips: int = 0  # consecutive openings without a success in between
    open_until: float = 0.0
    probe_in_flight: bool = False
    #: called with (old, new) on each state change
    on_change: Callable[[BreakerState, BreakerState], None] | None = None
    #: whether what opened it is something a verify() can see has cleared (a hang, a
    #: connection, TLS or DNS failure, credentials) rather than a refusal of sends (a
    #: 429, a 503, an uncertain outcome), which only a send can test
    verify_can_probe: bool = False
    #: whether the last failure was a slow call (a hang): when that opens the breaker,
    #: the sends waiting on the provider before their commit point are released
    slow_call: bool = False
    #: a shared store mirroring the verdicts; None: this breaker is all there is
    observer: BreakerObserver | None = None
    #: the last failure this process saw (class and text, already redacted), for "why
    #: it was skipped" when every provider rests
    last_error: str | None = None
    #: the openings in a row before a background verify closed it: a verify checks less
    #: than a send (no MAIL, RCPT, DATA), so until a real send succeeds, the next
    #: opening grows the rest from here instead of starting again at ``cooldown``
    probation: int = 0

    def _set(self, new: BreakerState) -> None:
        old, self.state = self.state, new
        if old is not new and self.on_change is not None:
            self.on_change(old, new)

    @property
    def closed(self) -> bool:
        return self.state is BreakerState.CLOSED

    @property
    def due_at(self) -> float:
        """When this provider may be tried again (now or past, if it may be tried now)."""
        return self.open_until if self.state is BreakerState.OPEN else 0.0

    def available(self) -> bool:
        """Whether a send may go to this provider now, without claiming the probe."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            return self.clock() >= self.open_until
        return not self.probe_in_flight

    def why_resting(self) -> str:
        """Why a send skips it now: resting until when (wall clock, and how long more)
        and after what, or another send holding its probe."""
        if self.state is BreakerState.HALF_OPEN:
            return "not tried: another send is probing it after its rest"
        left = max(self.open_until - self.clock(), 0.0)
        until = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
        after = f" after {self.last_error}" if self.last_error else ""
        return f"not tried: resting until {until} ({left:.3g}s more){after}"

    def acquire(self, *, force: bool = False) -> bool:
        """Claim the right to send now. In half-open, only one caller gets it (the probe).

        ``force`` is for when every provider is open: the one due soonest is tried anyway.
        """
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN:
            if not force and self.clock() < self.open_until:
                return False
            self._set(BreakerState.HALF_OPEN)
            self.probe_in_flight = False
        if self.probe_in_flight and not force:
            return False
        self.probe_in_flight = True
        return True

    def release(self) -> None:
        """Give the probe back without a verdict (e.g. the send was cancelled)."""
        held, self.probe_in_flight = self.probe_in_flight, False
        if held and self.observer is not None:
            self.observer.released(self)

    def record_success(self) -> None:
        """A real send got an answer: healthy, and off probation."""
        self._succeed(0)

    def _succeed(self, probation: int) -> None:
        was = (self.state, self.failures, self.probation)
        self.failures = 0
        self.trips = 0
        self.probation = probation
        self.probe_in_flight = False
        self._set(BreakerState.CLOSED)
        if self.observer is not None:
            self.observer.success(self, was)

    def record_probe_success(self) -> None:
        """A background verify passed: back in service, on probation.

        A primary that hangs at MAIL passes a verify (connect, EHLO, QUIT), so a plain
        success here made every cooldown end the same way: closed, then the next real
        send hung for the whole budget, then the same rest again, forever (issue 21,
        item 18). The openings so far are kept: if the next real send fails, the rest
        grows (``backoff_factor``, up to ``max_cooldown``); a real send's success clears
        them. So a hung primary costs one user-visible wait per growing interval.
        With a shared store the count is kept in Redis too, so a probe in one process
        and the failed send in another still grow the rest.
        """
        self._succeed(max(self.trips, self.probation, 1))

    def record_failure(self, error: DeliveryError) -> None:
        self._record_failure(error)
        if self.observer is not None:
            self.observer.failure(self, error)

    def apply_shared(
        self,
        state: BreakerState,
        *,
        remaining: float,
        failures: int,
        trips: int,
        slow_call: bool,
        verify_can_probe: bool,
        probe_held: bool | None = None,
        probation: int = 0,
    ) -> None:
        """Take the shared store's view (``remaining``: seconds of rest left, by the
        store's clock, so no host's clock is compared with another's)."""
        self.failures, self.trips, self.probation = failures, trips, probation
        self.slow_call, self.verify_can_probe = slow_call, verify_can_probe
        if state is BreakerState.OPEN:
            self.open_until = self.clock() + max(remaining, 0.0)
            self.probe_in_flight = False
        elif probe_held is not None:
            self.probe_in_flight = probe_held
        if state is BreakerState.CLOSED:
            self.probe_in_flight = False
        self._set(state)

    def _record_failure(self, error: DeliveryError) -> None:
        self.probe_in_flight = False
        self.last_error = f"{type(error).__name__}: {error.args[0] if error.args else ''}"
        self.slow_call = error.timed_out
        self.verify_can_probe = (
            error.timed_out or isinstance(error, AuthError) or not error.retry_here
        ) and not isinstance(error, RateLimited | DeliveryUncertain)
        now = self.clock()
        cfg = self.config
        if isinstance(error, RateLimited) and error.retry_after:
            self._open(now, max(error.retry_after, 0.0), grow=False)
            return
        if isinstance(error, AuthError):
            self._open(now, cfg.auth_cooldown, grow=False)
            return
        if error.timed_out:  # a slow call: every send that tries would wait too
            self._open(now, cfg.cooldown)
            return
        if self.state is BreakerState.HALF_OPEN:
            self._open(now, cfg.cooldown)
            return
        self.failures += 1
        if self.failures >= cfg.failure_threshold:
            self._open(now, cfg.cooldown)

    def _open(self, now: float, rest: float, *, grow: bool = True) -> None:
        cfg = self.config
        self.trips, self.probation = max(self.trips, self.probation), 0
        if grow:
            rest = min(rest * cfg.backoff_factor**self.trips, cfg.max_cooldown)
        self.trips += 1
        # Never shorten a rest that is already running (a 429 inside an open period).
        self.open_until = max(
            now + rest, self.open_until if self.state is not BreakerState.CLOSED else 0.0
        )
        self.failures = 0
        self._set(BreakerState.OPEN)
