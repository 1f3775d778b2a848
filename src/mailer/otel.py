"""OpenTelemetry metrics and traces: ``mailer.otel.instrument(mailer)`` (docs/observability.md).

Needs the ``otel`` extra (``pip install mailer-failover[otel]``): the OpenTelemetry API only.
"""

from ._integrations.otel import BREAKER_STATE_VALUES, Telemetry, instrument

__all__ = ["BREAKER_STATE_VALUES", "Telemetry", "instrument"]
