"""The Mailer: a thin front end over one root provider.

It applies the defaults, sets the send's deadline, renders and checks the message once
before any I/O, and reports events; the routing itself (order, breakers, the pre-commit
budget, retries, failover) belongs to the provider groups in :mod:`mailer._routing`, so
that it nests and can be tested group by group. ``Mailer([a, b])`` builds
``Failover([a, b])``; providers of equal priority share load in a ``Weighted`` group.

The decision table lives in :mod:`mailer._routing.group`; docs/failure-semantics.md
explains each row. What the Mailer is built from (config entries, the outbox, the events
hub) is made in :mod:`mailer._front.build`; the send path's steps around routing (the
suppression check, a template's rendering, what an unfinished send means) are in
:mod:`mailer._front.send`. This module keeps the class, its order of steps and its hot path.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

import anyio

from . import _clock
from ._backend import current_async_library
from ._config import MailerConfig, load_config
from ._errors import (
    AllProvidersFailed,
    ConfigError,
    DeliveryError,
    MessageError,
    UnsupportedFeature,
)
from ._events import (
    DeliveryEvent,
    EventsConfig,
    IngestReport,
    Suppression,
    SuppressionConfig,
)
from ._events.bounces import parse as parse_bounce
from ._events.hub import Listener
from ._front.build import (
    admission_gate,
    events_hub,
    model,
    outbox_for,
    preload,
    provider_from_entry,
    unsubscribe_config,
)
from ._front.send import check_suppression, ending_error, render_template
from ._message import Message, MessageDefaults
from ._message.template import variant_of
from ._outbox import Outbox, OutboxConfig
from ._outbox.reconcile import ReconcileReport, reconcile
from ._provider import AsyncClosing, Provider
from ._redact import register_config
from ._result import SendResult
from ._routing.budget import BudgetConfig
from ._routing.events import Event
from ._routing.group import Failover, Group, Weighted
from ._routing.health import BreakerState, HealthConfig
from ._routing.runtime import _SEND, RetryConfig, Runtime, SendContext
from ._templates import LocalTemplates, TemplatesConfig
from ._unsubscribe import UnsubscribeConfig, unsubscribe_headers
from .providers._coalesce import batching

__all__ = ["Event", "Mailer", "Route"]


@dataclass(eq=False)
class Route:
    """A provider with its place in the order. Lower priority numbers go first; equal
    priorities share load by ``weight``."""

    provider: Provider
    priority: int = 1
    weight: float = 1.0

    @property
    def name(self) -> str:
        return self.provider.name


def _root(routes: Sequence[Route]) -> Group:
    """Priority tiers in order; a tier of several providers is a Weighted group."""
    if len(routes) == 1 and isinstance(routes[0].provider, Group):
        return routes[0].provider
    tiers: list[Provider] = []
    ordered = sorted(routes, key=lambda r: r.priority)  # stable: config order within a tier
    for priority, tier in groupby(ordered, key=lambda r: r.priority):
        members = list(tier)
        if len(members) == 1:
            tiers.append(members[0].provider)
        else:
            tiers.append(
                Weighted(
                    [r.provider for r in members],
                    [r.weight for r in members],
                    name=f"priority {priority}",
                )
            )
    return Failover(tiers, name="mailer")


class Mailer(AsyncClosing):
    """Sends each message through the first healthy provider that takes it.

    ``providers`` are Provider instances (priority = position, 1 first), Routes, or one
    group (``Failover``, ``Weighted``, ``RoundRobin``), which may nest.
    ``clock`` drives this Mailer's breakers; to move every clock at once (breakers,
    deadlines, budgets, rate limits) install a ``mailer._clock.FakeClock`` instead.
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
        budget: BudgetConfig | Mapping[str, Any] | None = None,
        clock: Callable[[], float] = _clock.now,
        rng: random.Random | None = None,
        outbox: str | Mapping[str, Any] | OutboxConfig | None = None,
        on_all_failed: Literal["raise", "enqueue"] = "raise",
        templates: TemplatesConfig | Mapping[str, Any] | None = None,
        unsubscribe: UnsubscribeConfig | Mapping[str, Any] | None = None,
        suppression: str | Mapping[str, Any] | SuppressionConfig | None = None,
        events: Mapping[str, Any] | EventsConfig | None = None,
    ) -> None:
        if not providers:
            raise ConfigError("a Mailer needs at least one provider")
        if on_uncertain not in ("raise", "failover"):
            raise ConfigError("on_uncertain must be 'raise' or 'failover'")
        if not send_timeout > 0:
            raise ConfigError("send_timeout must be a positive number of seconds")
        self.on_uncertain = on_uncertain
        self.send_timeout = float(send_timeout)
        self._defaults = self._check_defaults(defaults or {})
        #: the defaults as validated values (``sender`` an Address, ``cc`` a list of them)
        self.defaults: dict[str, Any] = self._defaults.values
        self._runtime = Runtime(
            health=model(HealthConfig, health),
            retry=model(RetryConfig, retry),
            budget=model(BudgetConfig, budget),
            on_uncertain=on_uncertain,
            send_timeout=self.send_timeout,
            clock=clock,
            rng=rng,
        )
        routes = [
            p if isinstance(p, Route) else Route(p, priority=i + 1) for i, p in enumerate(providers)
        ]
        self._priority = {r.name: r.priority for r in routes}
        self.root = _root(routes)
        self.root.bind(self._runtime)
        # config order (not priority order), groups flattened
        self._leaves = [leaf for r in routes for leaf in _flatten(r.provider)]
        for leaf in self._leaves:
            register_config(leaf.config)
        self._subsets: dict[tuple[str, ...], Group] = {}
        #: sends past a few per connection slot wait here (None: no gate, see admission_gate)
        self._admission = admission_gate(self._leaves)
        if on_all_failed not in ("raise", "enqueue"):
            raise ConfigError("on_all_failed must be 'raise' or 'enqueue'")
        if on_all_failed == "enqueue" and outbox is None:
            raise ConfigError('on_all_failed="enqueue" needs an outbox (the outbox option)')
        self.on_all_failed = on_all_failed
        # the gate's capacity sizes the worker's concurrency = "auto" (_outbox/claiming.py)
        capacity = None if self._admission is None else self._admission.capacity
        self._outbox = outbox_for(outbox, self._leaves, self._deliver, capacity)
        #: the local templates (``templates.dir``), None without them
        self.templates = None if templates is None else LocalTemplates(templates)
        #: one-click unsubscribe: the token key and the endpoint's base URL
        self.unsubscribe = None if unsubscribe is None else unsubscribe_config(unsubscribe)
        self._hub = events_hub(suppression, events, self._outbox)
        #: the suppression list (docs/suppression.md): ``add``, ``remove``, ``get``, ``list``
        self.suppression: Suppression = self._hub.suppression
        preload()

    @property
    def health_config(self) -> HealthConfig:
        return self._runtime.health

    @property
    def retry_config(self) -> RetryConfig:
        return self._runtime.retry

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
            provider = provider_from_entry(entry)
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
            "budget": config.budget,
            "outbox": config.outbox,
            "on_all_failed": config.on_all_failed,
            "templates": config.templates,
            "unsubscribe": config.unsubscribe,
            "suppression": config.suppression,
            "events": config.events,
        }
        options.update(kwargs)
        return cls(routes, **options)

    @staticmethod
    def _check_defaults(defaults: Mapping[str, Any]) -> MessageDefaults:
        try:
            return MessageDefaults(defaults)
        except MessageError as exc:
            raise ConfigError(f"invalid defaults: {exc}") from None

    # -- introspection -----------------------------------------------------------------

    @property
    def providers(self) -> list[Provider]:
        """Every provider that sends (groups flattened), in config order."""
        return list(self._leaves)

    def health(self) -> dict[str, dict[str, Any]]:
        """Each provider's breaker state, for dashboards and the CLI."""
        now = self._runtime.clock()
        out: dict[str, dict[str, Any]] = {}
        for leaf in self._leaves:
            h = self._runtime.leaf(leaf)
            b = h.breaker
            out[leaf.name] = {
                "state": b.state.value,
                "priority": self._priority.get(leaf.name),
                "retry_in": max(b.open_until - now, 0.0) if b.state is BreakerState.OPEN else 0.0,
                "budget": h.estimator.budget(),
            }
        return out

    def subscribe(self, listener: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``listener(event)`` for each attempt, failover, result and breaker change.

        Listeners run inline and must be quick; an exception in one is logged, not raised.
        Returns a function that unsubscribes.
        """
        listeners = self._runtime.listeners
        listeners.append(listener)
        return lambda: listeners.remove(listener)

    # -- sending -----------------------------------------------------------------------

    async def send(
        self,
        message: Message,
        *,
        providers: Sequence[str] | None = None,
        suppression: bool = True,
    ) -> SendResult:
        """Deliver ``message`` once, through the first provider that takes it.

        ``providers`` names the providers to use for this message, in that order (the
        others are not tried). Raises MessageError (bad message, before any I/O),
        PermanentError (refused for a reason every provider shares), DeliveryUncertain
        (may have been delivered; with ``on_uncertain="raise"``) or AllProvidersFailed
        (keeps the message and each provider's error, so the caller can store it and
        retry). With an outbox and ``on_all_failed="enqueue"``, a send that every provider
        failed before its commit point is stored instead, and the result's ``status`` is
        ``"queued"``.

        Recipients on the suppression list are left out before any I/O (the result's
        ``suppressed`` lists them); when all are, RecipientsSuppressed is raised and no
        provider is tried. ``suppression=False`` bypasses the list (logged), for legal or
        security notices.
        """
        if self._outbox is None or self.on_all_failed == "raise":
            return await self._deliver(message, providers, suppression)
        try:
            return await self._deliver(message, providers, suppression)
        except AllProvidersFailed as failure:
            if failure.possibly_delivered or failure.message is None:
                raise
            error = failure
        return await self._outbox.queue_failed(error)  # outside except: no chained context

    async def _deliver(
        self, message: Message, providers: Sequence[str] | None = None, suppression: bool = True
    ) -> SendResult:
        """``send`` without the outbox: what the outbox's workers call.

        A send past the admission gate's capacity waits there first, before it builds
        anything (mailer/_routing/admission.py); that wait counts against its deadline.
        The send past the gate is in this frame too, not in one of its own: every frame
        of a send's chain is resumed on each of its wakes (four a send over SMTP; pool5).
        """
        gate = self._admission
        waited = 0.0
        if gate is not None and (providers is not None or not gate.try_enter()):
            if providers is not None or current_async_library() != "asyncio":
                gate = None  # not gated: a chosen subset, or not asyncio (the gate's futures)
            else:
                began = _clock.now()
                await gate.enter(began + self.send_timeout)
                waited = _clock.now() - began
        try:  # past the gate (left in ``finally``), or not gated (``gate`` is None)
            root = self.root if providers is None else self._subset(providers)
            msg = message.with_defaults(self._defaults)
            dropped = await check_suppression(msg, suppression, self.suppression, self.unsubscribe)
            if dropped:
                msg = msg.without_recipients(frozenset(dropped))
            if msg.unsubscribe:  # the same two headers whichever provider sends
                headers = unsubscribe_headers(self.unsubscribe, msg)
                msg = msg.with_defaults(MessageDefaults.made({"headers": headers}))
            if msg.template is not None:
                render_template(msg, self.templates, self._leaves)
            # render and check once, before any I/O (a template's local rendering, if any); a
            # large text or HTML part a slice at a time, so the loop is not held
            await (variant_of(msg) or msg).render_async()
            msg.envelope_sender  # noqa: B018 - raises MessageError without a sender
            if msg.provider_options:  # refused before any I/O, not half-way through failover
                for leaf in self._leaves:
                    options = leaf.options_for(msg)
                    if options is not None:
                        leaf.check_options(options)
            ctx = SendContext(msg.message_id, _clock.now() + self.send_timeout - waited, root=root)
            send_token = _SEND.set(ctx)
            rt = self._runtime
            emit = rt.emit
            if rt.listening(None):  # the log writes no record of a start
                emit(Event("start", message_id=msg.message_id))
            try:
                result = await root.send(msg)
            except AllProvidersFailed as failure:
                failure.attempts = ctx.attempts
                errors = list(failure.errors.values())
                ending: DeliveryError = failure
                if errors and all(isinstance(e, UnsupportedFeature) for e in errors):
                    # No provider can carry it: a message problem for this Mailer.
                    ending = UnsupportedFeature(
                        "no provider of this Mailer can send this message: "
                        + "; ".join(str(e.args[0]) for e in errors)
                    )
                    ending.attempts = ctx.attempts
                emit(Event("failed", message_id=msg.message_id, error=ending))
                if ending is failure:
                    raise
                raise ending from failure
            except BaseException as exc:
                if not ctx.ended:  # every send ends with one "sent" or "failed" event
                    emit(Event("failed", message_id=msg.message_id, error=ending_error(exc, ctx)))
                raise
            finally:
                _SEND.reset(send_token)
            if dropped:
                result.suppressed = dropped
            if result.provider_message_id and result.message_id and result.status == "sent":
                hub = self._hub
                hub.record_send(result.provider, result.provider_message_id, result.message_id)
                if hub.flush_due():
                    await hub.flush_soon()
            return result
        finally:
            if gate is not None:
                gate.leave()

    async def send_many(
        self,
        messages: Sequence[Message],
        *,
        providers: Sequence[str] | None = None,
        concurrency: int = 100,
    ) -> list[SendResult | DeliveryError | MessageError]:
        """Send every message; one result or error per message, in order.

        One message's failure never raises for the others. Each message is routed as by
        :meth:`send` (so only the items that failed fail over, and breakers and events
        see each item), ``concurrency`` at a time; HTTP providers with a batch endpoint
        (Postmark, Resend, Mailjet) carry concurrent sends in batch requests.
        """
        if concurrency < 1:
            raise ConfigError("send_many needs concurrency >= 1")
        results: list[SendResult | DeliveryError | MessageError | None] = [None] * len(messages)
        limit = anyio.Semaphore(concurrency)

        async def one(index: int, message: Message) -> None:
            async with limit:
                try:
                    results[index] = await self.send(message, providers=providers)
                except (DeliveryError, MessageError) as exc:
                    results[index] = exc

        token = batching.set(True)
        try:
            async with anyio.create_task_group() as tg:
                for index, message in enumerate(messages):
                    tg.start_soon(one, index, message)
        finally:
            batching.reset(token)
        return [r for r in results if r is not None]

    def _subset(self, names: Sequence[str]) -> Group:
        key = tuple(names)
        group = self._subsets.get(key)
        if group is not None:
            return group
        by_name = {p.name: p for p in self._leaves}
        unknown = [n for n in key if n not in by_name]
        if unknown or not key:
            raise MessageError(
                f"send(providers=...) names no provider of this Mailer: {unknown or '[]'}; "
                f"it has {sorted(by_name)}"
            )
        group = Failover([by_name[n] for n in key], name=f"providers({' '.join(key)})")
        group.bind(self._runtime)
        self._subsets[key] = group
        return group

    # -- delivery events and suppression (docs/events.md) --------------------------------

    def on_delivery(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` once per delivery event stored (sync or async);
        returns a function that unsubscribes. An exception in it is logged, not raised."""
        return self._hub.on_delivery(listener)

    async def ingest_events(self, events: Sequence[DeliveryEvent]) -> IngestReport:
        """Store ``events`` durably (one transaction), drop those already seen (by
        provider and event id), then apply the new ones: the suppression list, settling
        ``unknown`` outbox rows, listeners. Returns once they are stored and applied."""
        return await self._hub.ingest(events)

    async def ingest_bounce(self, raw: bytes, *, provider: str = "smtp") -> IngestReport:
        """Parse an SMTP bounce (RFC 3464 DSN) or complaint (RFC 5965 ARF) and ingest
        its events, recorded for ``provider``; a message that is neither gives an empty
        report."""
        return await self._hub.ingest(parse_bounce(raw, provider=provider))

    async def delivery_events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        """The events stored for ``message_id``, oldest first."""
        return await self._hub.events(message_id, limit)

    async def purge_events(self, older_than: float | None = None) -> int:
        """Delete events stored more than ``older_than`` seconds ago (by default
        ``events.retention``), with the sends' id records of that age; returns how many
        events. ``mailer events purge`` runs it."""
        return await self._hub.purge(older_than)

    # -- the outbox (docs/outbox.md) ----------------------------------------------------

    @property
    def outbox(self) -> Outbox:
        """The outbox (stats, list, retry, purge); ConfigError when there is none."""
        if self._outbox is None:
            raise ConfigError("this Mailer has no outbox (set the outbox option)")
        return self._outbox

    async def reconcile(self, *, limit: int = 1000) -> ReconcileReport:
        """Ask the providers about each ``unknown`` outbox row: settle it to ``sent``,
        re-queue it where the provider's record proves it never arrived, or leave it
        (docs/outbox.md, ``mailer outbox reconcile``)."""
        return await reconcile(self.outbox, self._leaves, limit=limit)

    async def enqueue(self, message: Message) -> str:
        """Store ``message`` durably for a worker to send; returns its Message-ID.

        The Mailer's defaults are applied and attachments given by path are read now;
        the message is committed to the outbox before this returns.
        """
        msg = message.with_defaults(self._defaults)
        if msg.template is not None:  # a missing variable fails now, not in the worker
            render_template(msg, self.templates, self._leaves)
        return await self.outbox.enqueue(msg)

    async def drain(self, timeout: float | None = None) -> dict[str, int]:
        """Deliver what the outbox has due, in this process, until nothing is due (with
        a ``timeout``: nothing comes due before it passes). Returns how many messages
        went to each state."""
        return await self.outbox.drain(timeout)

    # -- lifecycle ---------------------------------------------------------------------

    async def verify(self) -> dict[str, Exception | None]:
        """Check every provider concurrently: None where it is fine, else the error."""
        results: dict[str, Exception | None] = {}

        async def one(provider: Provider) -> None:
            try:
                await provider.verify()
                results[provider.name] = None
            except Exception as exc:
                results[provider.name] = exc

        async with anyio.create_task_group() as tg:
            for provider in self._leaves:
                tg.start_soon(one, provider)
        return {p.name: results[p.name] for p in self._leaves}

    async def aclose(self) -> None:
        """Stop background probes and close every provider; raise failures together."""
        await self._runtime.aclose()
        try:
            await self._hub.aclose()
        finally:
            await self.suppression.aclose()
        if self._outbox is not None:
            await self._outbox.aclose()
        await self.root.aclose()

    def __repr__(self) -> str:
        names = ", ".join(f"{p.name}(p{self._priority.get(p.name)})" for p in self._leaves)
        return f"<Mailer [{names}] on_uncertain={self.on_uncertain!r}>"


def _flatten(provider: Provider) -> list[Provider]:
    return list(provider.leaves()) if isinstance(provider, Group) else [provider]
