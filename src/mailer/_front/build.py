"""What a Mailer is built from: a provider (or group) per config entry, the admission
gate sized from the providers, and the configured parts beside the routing (the outbox,
the delivery events hub with its suppression list, the unsubscribe options).

Each is a function of its options and the providers, called once by ``Mailer.__init__``
or ``Mailer.from_config`` (:mod:`mailer._mailer`): none of it runs on a send.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .._config import ProviderEntry, load_model_config, load_outbox_config
from .._errors import ConfigError
from .._events import DeliveryHub, EventsConfig, Suppression, SuppressionConfig
from .._events.backends import open_backend
from .._options import validation_text
from .._outbox import Outbox, OutboxConfig
from .._outbox.worker import Deliver
from .._plugins import load_provider_class
from .._provider import Provider
from .._routing.admission import PER_SLOT, Admission
from .._routing.group import make_group
from .._unsubscribe import UnsubscribeConfig


def provider_from_entry(entry: ProviderEntry) -> Provider:
    """A provider, or a group of providers, from one config entry."""
    if entry.providers is not None:
        children = [provider_from_entry(child) for child in entry.providers if child.enabled]
        options: dict[str, Any] = {"name": entry.name}
        if entry.weights is not None:
            options["weights"] = entry.weights
        return make_group(entry.type, children, **options)
    provider_cls = load_provider_class(entry.type)
    return provider_cls.from_config(entry.name or entry.type, entry.config)


def admission_gate(leaves: Sequence[Provider]) -> Admission | None:
    """The Mailer's admission gate, sized from its providers' connection slots; None
    when a provider has no bound or a rate limit paces it (mailer/_routing/admission.py)."""
    slots = 0
    for leaf in leaves:
        concurrency = leaf.concurrency
        if concurrency is None or getattr(leaf.config, "rate_limit", None) is not None:
            return None
        slots += concurrency
    return Admission(slots * PER_SLOT)


def model(cls: Any, value: Any) -> Any:
    """``value`` when it is already a ``cls``, else ``cls`` built from its mapping."""
    return value if isinstance(value, cls) else cls(**(value or {}))


def unsubscribe_config(value: UnsubscribeConfig | Mapping[str, Any]) -> UnsubscribeConfig:
    """Validated without ever echoing the key (pydantic's own errors show input values)."""
    if isinstance(value, UnsubscribeConfig):
        return value
    try:
        return UnsubscribeConfig.model_validate(dict(value))
    except ValidationError as exc:
        error = ConfigError(validation_text("unsubscribe", exc, UnsubscribeConfig))
    raise error  # outside the except: the pydantic error (with the key) is not __context__


def outbox_for(
    config: str | Mapping[str, Any] | OutboxConfig | None,
    leaves: Sequence[Provider],
    deliver: Deliver,
    capacity: int | None = None,
) -> Outbox | None:
    """The outbox (docs/outbox.md) whose workers send through ``deliver``; None without
    one. Each provider's idempotency window and whether a rate limit paces any of them
    come from ``leaves``; ``capacity`` is the admission gate's (None: no gate), which
    sizes the worker's ``concurrency = "auto"``."""
    if config is None:
        return None
    if not isinstance(config, OutboxConfig):
        config = load_outbox_config(config)
    windows = {p.name: p.idempotency_window if p.idempotent else 0.0 for p in leaves}
    # a rate limit may hold a claimed send back before it starts (commit_record)
    paced = any(getattr(leaf.config, "rate_limit", None) for leaf in leaves)
    return Outbox(
        config,
        deliver,
        window=lambda n: windows.get(n or "", 0.0),
        paced=paced,
        capacity=capacity,
    )


def events_hub(
    suppression: str | Mapping[str, Any] | SuppressionConfig | None,
    events: Mapping[str, Any] | EventsConfig | None,
    outbox: Outbox | None,
) -> DeliveryHub:
    """The delivery events hub and its suppression list (docs/events.md): events are
    stored in ``events.store``, else the outbox's database, else the suppression store."""
    s_config = load_model_config(SuppressionConfig, suppression, "suppression")
    e_config = load_model_config(EventsConfig, events, "events")
    outbox_url = outbox.config.url if outbox is not None else None
    events_url = e_config.store or outbox_url or s_config.store
    retention = e_config.retention
    s_store = open_backend(s_config.store, retention=retention)
    e_store = (
        s_store if events_url == s_config.store else open_backend(events_url, retention=retention)
    )
    suppression_list = Suppression(s_config, s_store, shared=s_config.store is not None)
    return DeliveryHub(
        e_store,
        suppression_list,
        e_config,
        settle=outbox.settle if outbox is not None else None,
    )


def preload() -> None:
    """Import now what the first send would import inside the event loop.

    anyio loads its asyncio backend on the first cancel scope (100-150 ms of imports),
    which was the first send's stall: every task on the loop waited for it (issue 21,
    item 20; ``benchmarks/memory.py --stall-only``, "ours first send"). A Mailer is built
    at start-up, where that time costs nobody a wait. Both are cached after the first
    Mailer, so this is free from then on.
    """
    import concurrent.futures.thread  # noqa: F401 - the loop's executor (getaddrinfo)
    import encodings.idna  # noqa: F401 - host names on connect

    import anyio._backends._asyncio  # noqa: F401
