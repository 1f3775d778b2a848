"""What a webhook POST is answered, whichever server received it.

The order is the contract (docs/events.md, "Answers"): 405 for anything but POST (and
an OPTIONS to a receiver that answers CloudEvents' validation request), 404
for a provider name the config lacks (or one without a ``webhook`` block), 413 for a
body over :data:`MAX_BODY` (a declared length is refused before reading; the adapters
stop reading at the limit otherwise), then the ESP's own check (401: signature,
credentials, replayed timestamp), then the parser's handshake (a verified question such
as Event Grid's subscription validation: 200 with the body the parser chose, nothing
stored), then parsing (400), then
:meth:`Mailer.ingest_events`; only once it returns is the answer 200, so the ESP retries
anything not stored. A failing store answers 503 (the ESP retries later).

Nothing is stored or changed before verification passes, and no answer or log line
carries a secret or a payload: the refusal names the check that failed.

CloudEvents 1.0's abuse protection (Event Grid's validation for a subscription with the
CloudEvents schema) is an OPTIONS with ``WebHook-Request-Origin``: a parser that lists
that origin in ``preflight_origins`` has the request verified as a post is (Azure: the
URL's secret), and the answer is 200 with ``WebHook-Allowed-Origin`` (the origin) and
``WebHook-Allowed-Rate`` (``*``, or the ``WebHook-Request-Rate`` asked for); an origin
not listed is 403, and nothing is stored either way.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import ConfigError
from .._log import get_logger
from .._mailer import Mailer
from ..providers.http.webhook import (
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
)

__all__ = ["MAX_BODY", "UNSUBSCRIBE_SEGMENT", "Reply", "WebhookHandler", "serves_unsubscribe"]

#: the path segment before a one-click token: ``.../u/{token}`` (docs/deliverability.md)
UNSUBSCRIBE_SEGMENT = "u"

#: the largest body accepted (bytes): 5 MiB, above any ESP's batch (SendGrid: 1,000 events)
MAX_BODY = 5 * 1024 * 1024

log = get_logger("mailer.webhooks")


@dataclass(frozen=True)
class Reply:
    """An answer: status and a small JSON body (never the payload)."""

    status: int
    body: dict[str, Any]
    #: headers of the answer beyond the content type (a validation's consent)
    extra: tuple[tuple[str, str], ...] = ()

    def json(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()

    @property
    def headers(self) -> list[tuple[str, str]]:
        allow = [("allow", "POST")] if self.status == 405 else []
        return [("content-type", "application/json"), *allow, *self.extra]


def _refused(status: int, error: str) -> Reply:
    return Reply(status, {"error": error})


class WebhookHandler:
    """One Mailer's receivers, by provider name; ``clock`` is for tests of the replay
    window (the default is the wall clock)."""

    def __init__(self, mailer: Mailer, *, clock: Callable[[], float] = time.time) -> None:
        self.mailer = mailer
        self.clock = clock
        self.parsers: dict[str, WebhookParser[Any]] = {}
        for provider in mailer.providers:
            make = getattr(provider, "webhook", None)
            parser = make() if callable(make) else None
            if isinstance(parser, WebhookParser):
                self.parsers[provider.name] = parser

    def route(self, method: str, provider: str, length: int | None) -> Reply | WebhookParser[Any]:
        """The parser for ``provider``, or the answer that ends the request before its
        body is read."""
        method = method.upper()
        parser = self.parsers.get(provider)
        if method == "OPTIONS" and parser is not None and parser.preflight_origins:
            return parser  # CloudEvents' validation request: process(method="OPTIONS")
        if method != "POST":
            return _refused(405, "only POST is accepted")
        if parser is None:
            return _refused(404, "no webhook is configured for this provider name")
        if length is not None and length > MAX_BODY:
            return too_large()
        return parser

    async def process(
        self,
        parser: WebhookParser[Any],
        headers: Mapping[str, str],
        body: bytes,
        query: Mapping[str, str] | None = None,
        method: str = "POST",
    ) -> Reply:
        """Verify, parse, store; the answer. ``method``: as routed (POST, or OPTIONS for
        a parser with ``preflight_origins``)."""
        request = WebhookRequest(
            provider=parser.provider,
            headers={k.lower(): v for k, v in headers.items()},
            body=body,
            query=dict(query or {}),
            now=self.clock(),
        )
        try:
            await parser.verify(request)
        except WebhookRefused as exc:
            _log(parser, "webhook_refused", f"refused: {exc}")
            return _refused(401, str(exc))
        if method.upper() == "OPTIONS":
            return _preflight(parser, request)
        try:
            answer = await parser.handshake(request)
        except WebhookMalformed as exc:
            _log(parser, "webhook_malformed", f"malformed: {exc}")
            return _refused(400, str(exc))
        if answer is not None:
            log.info(
                "webhook from %s: handshake answered",
                parser.provider,
                extra={"event": "webhook_handshake", "provider": parser.provider},
            )
            return Reply(200, answer)
        try:
            events = await parser.parse(request)
        except WebhookMalformed as exc:
            _log(parser, "webhook_malformed", f"malformed: {exc}")
            return _refused(400, str(exc))
        try:
            report = await self.mailer.ingest_events(events)
        except Exception as exc:  # the store is down: the ESP must retry, so not 2xx
            _log(parser, "webhook_not_stored", f"not stored: {type(exc).__name__}")
            return _refused(503, "the events could not be stored; retry later")
        return Reply(200, {"stored": report.new, "duplicates": report.duplicates})


def _preflight(parser: WebhookParser[Any], request: WebhookRequest) -> Reply:
    """CloudEvents 1.0 abuse protection (its HTTP webhook spec, section 4): consent to
    deliveries from a verified request's origin, if the parser expects that sender."""
    origin = (request.header("webhook-request-origin") or "").strip()
    if origin.lower() not in parser.preflight_origins:
        _log(parser, "webhook_refused", "refused: a validation request from another origin")
        return _refused(403, "this receiver does not take events from that origin")
    rate = (request.header("webhook-request-rate") or "").strip()
    log.info(
        "webhook from %s: validation request answered",
        parser.provider,
        extra={"event": "webhook_handshake", "provider": parser.provider},
    )
    consent = (("webhook-allowed-origin", origin),
               ("webhook-allowed-rate", rate if rate.isdigit() else "*"))  # fmt: skip
    return Reply(200, {}, extra=(*consent, ("allow", "POST, OPTIONS")))


def _log(parser: WebhookParser[Any], event: str, text: str) -> None:
    log.warning(
        "webhook from %s %s",
        parser.provider,
        text,
        extra={"event": event, "provider": parser.provider},
    )


def too_large() -> Reply:
    return _refused(413, f"the body is over {MAX_BODY} bytes")


_HANDLERS: weakref.WeakKeyDictionary[Mailer, WebhookHandler] = weakref.WeakKeyDictionary()


def handler_for(mailer: Mailer) -> WebhookHandler:
    """One handler per Mailer (a SyncMailer may build its Mailer again after a fork)."""
    handler = _HANDLERS.get(mailer)
    if handler is None:
        handler = _HANDLERS[mailer] = WebhookHandler(mailer)
    return handler


def serves_unsubscribe(handler: WebhookHandler) -> bool:
    """Whether the webhook app also answers ``.../u/{token}`` (the Mailer has an
    ``unsubscribe`` config). A provider named ``u`` with a ``webhook`` block is then
    refused (ConfigError): its posts (``.../u``) and the unsubscribe links
    (``.../u/{token}``) would share a path segment, which invites a misrouted URL."""
    if handler.mailer.unsubscribe is None:
        return False
    if UNSUBSCRIBE_SEGMENT in handler.parsers:
        raise ConfigError(
            f"a provider named {UNSUBSCRIBE_SEGMENT!r} has a webhook, but the webhook app "
            f"serves one-click unsubscribes at /{UNSUBSCRIBE_SEGMENT}/{{token}}: rename the "
            "provider"
        )
    return True
