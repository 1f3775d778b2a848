"""mailer.otel with the real OpenTelemetry SDK (in-memory reader and exporter), real SMTP."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mailer import DeliveryUncertain, Mailer, Message
from mailer.otel import instrument
from mailer.testing import SMTPTestServer

from .conftest import smtp_config

pytestmark = pytest.mark.anyio


class Telemetry:
    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.meters = MeterProvider(metric_readers=[self.reader])
        self.exporter = InMemorySpanExporter()
        self.tracers = TracerProvider()
        self.tracers.add_span_processor(SimpleSpanProcessor(self.exporter))

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """(attributes, value) of every data point of metric ``name``."""
        data = self.reader.get_metrics_data()
        out = []
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == name:
                        for p in metric.data.data_points:
                            value = getattr(p, "value", None)
                            if value is None:  # a histogram point
                                value = (p.count, p.sum)
                            out.append((dict(p.attributes or {}), value))
        return out

    def spans(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == name]


def msg(n: int) -> Message:
    return Message(sender="app@example.com", to=f"user{n}@example.org", subject=f"n{n}", text="x")


async def test_metrics_and_spans_for_failover_and_uncertain(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    primary, secondary = smtp_server(), smtp_server()
    primary.state.fail("MAIL", "451 4.3.0 try later")
    config = smtp_config(primary, secondary, health={"failure_threshold": 1})
    tel = Telemetry()
    async with Mailer.from_config(config) as mailer:
        stop = instrument(mailer, meter_provider=tel.meters, tracer_provider=tel.tracers)
        tracer = tel.tracers.get_tracer("app")
        with tracer.start_as_current_span("request") as request:
            result = await mailer.send(msg(1))
        assert result.provider == "secondary"
        breakers = {a["provider"]: v for a, v in tel.points("mailer.breaker.state")}
        assert breakers == {"primary": 2, "secondary": 0}

        secondary.state.fail("DATA_END", "drop")
        with pytest.raises(DeliveryUncertain):
            await mailer.send(msg(2))
        stop()

    base = {"messaging.system": "email", "messaging.operation.name": "send",
            "messaging.operation.type": "send"}  # fmt: skip
    assert sorted(tel.points("messaging.client.sent.messages"), key=str) == sorted([
        ({**base, "provider": "secondary"}, 1),
        ({**base, "provider": "secondary", "error.type": "DeliveryUncertain"}, 1),
    ], key=str)  # fmt: skip
    attempts = {(a["provider"], a["outcome"]): v for a, v in tel.points("mailer.attempts")}
    assert attempts == {
        ("primary", "TransientError"): 1,
        ("secondary", "sent"): 1,
        ("secondary", "DeliveryUncertain"): 1,
    }
    failover = {"provider": "primary", "mailer.failover.to": "secondary",
                "error.type": "TransientError"}  # fmt: skip
    assert tel.points("mailer.failovers") == [(failover, 1)]
    assert tel.points("mailer.uncertain") == [({"provider": "secondary"}, 1)]
    durations = {
        (a["provider"], a.get("error.type")): v
        for a, v in tel.points("messaging.client.operation.duration")
    }
    assert set(durations) == {
        ("primary", "TransientError"), ("secondary", None), ("secondary", "DeliveryUncertain")
    }  # fmt: skip
    assert all(count == 1 and total >= 0 for count, total in durations.values())
    # Low cardinality: no address or subject in any metric attribute.
    for name in ("messaging.client.sent.messages", "mailer.attempts", "mailer.failovers",
                 "messaging.client.operation.duration", "mailer.breaker.state"):  # fmt: skip
        for attrs, _ in tel.points(name):
            assert not any("@" in str(v) or str(v).startswith("n") for v in attrs.values())

    first, second = tel.spans("send")
    assert first.kind is SpanKind.PRODUCER
    assert first.parent is not None and first.parent.span_id == request.get_span_context().span_id
    assert first.attributes is not None and second.attributes is not None
    assert first.attributes["provider"] == "secondary"
    assert first.attributes["mailer.attempts"] == 2
    assert first.attributes["mailer.failovers"] == 1
    assert first.status.status_code is StatusCode.UNSET
    assert [e.name for e in first.events] == ["failover"]
    assert second.status.status_code is StatusCode.ERROR
    assert second.attributes["error.type"] == "DeliveryUncertain"

    attempts_of_first = [
        s for s in tel.spans("attempt") if s.parent and s.parent.span_id == first.context.span_id
    ]
    assert [s.attributes["provider"] for s in attempts_of_first if s.attributes] == [
        "primary", "secondary"
    ]  # fmt: skip
    failed, ok = attempts_of_first
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes is not None and ok.attributes is not None
    assert failed.attributes["mailer.response.code"] == 451
    assert failed.attributes["mailer.commit_point.reached"] is False  # refused at MAIL
    assert ok.attributes["mailer.commit_point.reached"] is True
    assert first.start_time is not None and first.end_time is not None
    for span in attempts_of_first:
        assert span.start_time is not None and span.end_time is not None
        assert first.start_time <= span.start_time <= span.end_time <= first.end_time
    (uncertain,) = [
        s for s in tel.spans("attempt") if s.parent and s.parent.span_id == second.context.span_id
    ]
    assert uncertain.attributes is not None
    assert uncertain.attributes["mailer.commit_point.reached"] is True


async def test_global_providers_by_default(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    server = smtp_server()
    async with Mailer.from_config(smtp_config(server)) as mailer:
        stop = instrument(mailer)  # the global providers (no-op ones without an SDK)
        assert (await mailer.send(msg(1))).provider == "primary"
        stop()


async def test_delivery_events_counter() -> None:
    """One count per stored delivery event, by provider and type; duplicates are not."""
    from datetime import UTC, datetime

    from mailer import DeliveryEvent
    from mailer.testing import MemoryProvider

    def ev(kind: str, event_id: str, provider: str = "primary") -> DeliveryEvent:
        return DeliveryEvent(type=kind, provider=provider, recipient="u@example.org",  # type: ignore[arg-type]
                             timestamp=datetime.now(UTC), event_id=event_id)  # fmt: skip

    tel = Telemetry()
    async with Mailer([MemoryProvider("primary"), MemoryProvider("backup")]) as mailer:
        stop = instrument(mailer, meter_provider=tel.meters, tracer_provider=tel.tracers)
        await mailer.ingest_events([ev("delivered", "1"), ev("delivered", "2"),
                                    ev("opened", "3", "backup"), ev("delivered", "1")])  # fmt: skip
        stop()
        await mailer.ingest_events([ev("delivered", "9")])  # after undo: not counted
    counts = {(a["provider"], a["type"]): v for a, v in tel.points("mailer.delivery.events")}
    assert counts == {("primary", "delivered"): 2, ("backup", "opened"): 1}
