"""OpenTelemetry metrics and traces for a Mailer, from its public event hook.

Only the OpenTelemetry *API* is needed at run time (``pip install mailer-failover[otel]``):
without an SDK configured, every instrument is a no-op. The app chooses the SDK, the
exporters (OTLP, Prometheus) and the sampling.

Names follow OpenTelemetry's messaging conventions where they fit a mail send
(``messaging.client.operation.duration``, ``messaging.client.sent.messages``,
``error.type``); the rest are ``mailer.*``. Every attribute has few values (provider
names, outcome and error class names): no address, subject or Message-ID ever becomes a
metric attribute, so the number of series stays small however much mail goes out.

Spans are built from events that arrive when an attempt *ends* (the hook has no event at
a send's start), so each span is given its start time explicitly: an attempt span starts
at its end minus its duration, and the send span at its first attempt's start.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from .. import __version__
from .._errors import AllProvidersFailed, DeliveryError, DeliveryUncertain
from .._events import DeliveryEvent
from .._mailer import Event, Mailer
from .._routing.health import BreakerState

__all__ = ["BREAKER_STATE_VALUES", "Telemetry", "instrument"]

#: the value the ``mailer.breaker.state`` gauge reports for each state
BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

_SCOPE = "mailer"
_BASE = {
    "messaging.system": "email",
    "messaging.operation.name": "send",
    "messaging.operation.type": "send",
}
# OpenTelemetry's advice for messaging durations (seconds), up to a slow SMTP send.
_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60]
_MAX_PENDING = 10_000
_MAX_AGE = 3600.0  # seconds; far beyond any send_timeout


@dataclass
class _Send:
    """A send in flight: its span, opened at its first attempt."""

    span: Span
    attempts: int = 0
    failovers: int = 0
    last_provider: str | None = None
    opened: float = field(default_factory=time.monotonic)


class Telemetry:
    """The instruments, shared by every Mailer instrumented with the same providers.

    ``instrument(mailer)`` subscribes to a Mailer's events and adds it to the breaker
    gauge; the returned function undoes both.
    """

    def __init__(
        self,
        *,
        meter_provider: metrics.MeterProvider | None = None,
        tracer_provider: trace.TracerProvider | None = None,
        max_pending: int = _MAX_PENDING,
    ) -> None:
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self._duration = meter.create_histogram(
            "messaging.client.operation.duration",
            unit="s",
            description="Duration of each attempt to hand a message to a provider.",
            explicit_bucket_boundaries_advisory=_BUCKETS,
        )
        self._sent = meter.create_counter(
            "messaging.client.sent.messages",
            unit="{message}",
            description="Messages whose send ended: by the provider that took them, or "
            "with error.type when no provider did.",
        )
        self._attempts = meter.create_counter(
            "mailer.attempts", unit="{attempt}", description="Attempts, by provider and outcome."
        )
        self._failovers = meter.create_counter(
            "mailer.failovers",
            unit="{failover}",
            description="Sends that moved from one provider to the next.",
        )
        self._uncertain = meter.create_counter(
            "mailer.uncertain",
            unit="{attempt}",
            description="Attempts that ended without a definitive answer after the message "
            "left: each may have been delivered.",
        )
        self._delivery = meter.create_counter(
            "mailer.delivery.events",
            unit="{event}",
            description="Delivery events stored (webhooks, bounces), by provider and type; "
            "duplicates are not counted.",
        )
        meter.create_observable_gauge(
            "mailer.breaker.state",
            callbacks=[self._observe_breakers],
            unit="{state}",  # not "1": Prometheus would name it mailer_breaker_state_ratio
            description="Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
        )
        self._mailers: weakref.WeakSet[Mailer] = weakref.WeakSet()
        self._sends: OrderedDict[str, _Send] = OrderedDict()
        self._lock = threading.Lock()
        self._max_pending = max_pending
        _instances.add(self)

    def _after_fork_in_child(self) -> None:
        # The parent's sends are not this process's, and a thread of the parent may have
        # held the lock at the fork: both are dropped, never waited on.
        self._lock = threading.Lock()
        self._sends = OrderedDict()

    # -- wiring ----------------------------------------------------------------------

    def instrument(self, mailer: Mailer) -> Callable[[], None]:
        unsubscribe = mailer.subscribe(self._on_event)
        unsubscribe_delivery = mailer.on_delivery(self._on_delivery)
        self._mailers.add(mailer)

        def undo() -> None:
            unsubscribe()
            unsubscribe_delivery()
            self._mailers.discard(mailer)

        return undo

    def _on_delivery(self, event: DeliveryEvent) -> None:
        self._delivery.add(1, {"provider": event.provider, "type": event.type})

    def _observe_breakers(self, options: CallbackOptions) -> Iterable[Observation]:
        for mailer in list(self._mailers):
            for name, health in mailer.health().items():
                value = BREAKER_STATE_VALUES[BreakerState(health["state"])]
                yield Observation(value, {"provider": name})

    # -- events ----------------------------------------------------------------------

    @staticmethod
    def _key(event: Event) -> str:
        """One send call's events share send_id (two sends of one message do not)."""
        return f"#{event.send_id}" if event.send_id is not None else (event.message_id or "")

    def _on_event(self, event: Event) -> None:
        if event.kind == "start":  # the send span starts with the call, not its 1st attempt
            self._open(self._key(event), time.time_ns())
        elif event.kind == "attempt":
            self._on_attempt(event)
        elif event.kind == "failover":
            self._on_failover(event)
        elif event.kind == "sent":
            self._on_end(event, None)
        elif event.kind == "failed":
            self._on_end(event, event.error)

    def _on_attempt(self, event: Event) -> None:
        attempt = event.attempt
        if attempt is None:
            return
        provider = attempt.provider
        error_type = None if attempt.ok else attempt.outcome
        attrs: dict[str, Any] = {**_BASE, "provider": provider}
        if error_type is not None:
            attrs["error.type"] = error_type
        self._duration.record(attempt.duration, attrs)
        self._attempts.add(1, {"provider": provider, "outcome": attempt.outcome})
        if isinstance(event.error, DeliveryUncertain):
            self._uncertain.add(1, {"provider": provider})

        end = time.time_ns()
        start = end - int(attempt.duration * 1e9)
        send = self._open(self._key(event), start)
        send.attempts += 1
        send.last_provider = provider
        if not send.span.is_recording():
            return  # no SDK, or not sampled: no child span to build
        span_attrs: dict[str, Any] = {
            "provider": provider,
            "mailer.outcome": attempt.outcome,
            "mailer.attempt.number": send.attempts,
        }
        if attempt.code is not None:
            span_attrs["mailer.response.code"] = attempt.code
        # The provider says whether the attempt passed its commit point; when it does not
        # (a plugin), a success or an uncertain end still proves it did.
        if attempt.committed is not None:
            span_attrs["mailer.commit_point.reached"] = attempt.committed
        elif attempt.ok or isinstance(event.error, DeliveryUncertain):
            span_attrs["mailer.commit_point.reached"] = True
        if error_type is not None:
            span_attrs["error.type"] = error_type
        child = self._tracer.start_span(
            "attempt",
            context=trace.set_span_in_context(send.span),
            kind=SpanKind.CLIENT,
            attributes=span_attrs,
            start_time=start,
        )
        if error_type is not None:
            child.set_status(Status(StatusCode.ERROR, error_type))
        child.end(end_time=end)

    def _on_failover(self, event: Event) -> None:
        error_type = type(event.error).__name__ if event.error is not None else "unknown"
        self._failovers.add(
            1,
            {
                "provider": event.provider or "unknown",
                "mailer.failover.to": event.next_provider or "none",
                "error.type": error_type,
            },
        )
        send = self._open(self._key(event), time.time_ns())
        send.failovers += 1
        send.span.add_event(
            "failover",
            {
                "provider": event.provider or "unknown",
                "mailer.failover.to": event.next_provider or "none",
                "error.type": error_type,
            },
        )

    def _on_end(self, event: Event, error: DeliveryError | None) -> None:
        with self._lock:
            send = self._sends.pop(self._key(event), None)
        if send is None:  # no attempt event came first (the deadline passed before any)
            send = _Send(self._start_span(time.time_ns()))
        if error is None:
            provider = event.result.provider if event.result is not None else event.provider
        else:
            provider = error.provider or event.provider or send.last_provider
        attrs: dict[str, Any] = {**_BASE}
        if provider is not None:
            attrs["provider"] = provider
        if error is not None:
            attrs["error.type"] = type(error).__name__
        self._sent.add(1, attrs)
        span = send.span
        span.set_attributes(
            {**attrs, "mailer.attempts": send.attempts, "mailer.failovers": send.failovers}
        )
        if event.message_id:
            span.set_attribute("messaging.message.id", event.message_id)
        if error is not None:
            if isinstance(error, AllProvidersFailed):
                span.set_attribute("mailer.possibly_delivered", error.possibly_delivered)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    # -- the send span ---------------------------------------------------------------

    def _start_span(self, start: int) -> Span:
        # The current context is the sending task's: a span the caller has open (a web
        # request's) becomes the parent.
        return self._tracer.start_span(
            "send",
            context=otel_context.get_current(),
            kind=SpanKind.PRODUCER,
            attributes=dict(_BASE),
            start_time=start,
        )

    def _open(self, key: str, start: int) -> _Send:
        with self._lock:
            send = self._sends.get(key)
            if send is not None:
                return send
            send = self._sends[key] = _Send(self._start_span(start))
            evicted = self._evict()
        for stale in evicted:
            stale.span.set_attribute("mailer.outcome", "unknown")
            stale.span.end()
        return send

    def _evict(self) -> list[_Send]:
        """Sends that will never see an end event (cancelled, or ended by an error no
        event reports) must not pile up: the oldest go past ``max_pending`` or an hour."""
        evicted = []
        too_old = time.monotonic() - _MAX_AGE
        while self._sends and (
            len(self._sends) > self._max_pending
            or next(iter(self._sends.values())).opened < too_old
        ):
            evicted.append(self._sends.popitem(last=False)[1])
        return evicted


_instances: weakref.WeakSet[Telemetry] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for telemetry in list(_instances):
        telemetry._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)

_shared: dict[tuple[int, int], tuple[Any, Any, Telemetry]] = {}
_shared_lock = threading.Lock()


def instrument(
    mailer: Mailer,
    *,
    meter_provider: metrics.MeterProvider | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> Callable[[], None]:
    """Export ``mailer``'s metrics and spans; returns a function that stops it.

    Without providers, the global ones (``metrics.set_meter_provider``...) are used.
    One Telemetry is kept per pair of providers: instruments are registered once, so
    the breaker gauge reports every instrumented Mailer.
    """
    key = (id(meter_provider), id(tracer_provider))
    with _shared_lock:
        entry = _shared.get(key)
        if entry is None:
            telemetry = Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)
            # the providers are held, so their ids cannot be reused by other objects
            _shared[key] = (meter_provider, tracer_provider, telemetry)
        else:
            telemetry = entry[2]
    return telemetry.instrument(mailer)
