"""Provider groups: failover and load sharing as ordinary Providers, so they nest.

The shape of Symfony Mailer's ``FailoverTransport`` and ``RoundRobinTransport``, with our
classification instead of "dead on any error". :class:`Group` is a template: it walks
its children in the order its subclass gives (:meth:`Group._order`, the one step a
subclass fills in) and asks each the same questions (:class:`~mailer._routing.leaf.Node`):
a provider is wrapped in a :class:`~mailer._routing.leaf.Leaf`, which applies its breaker,
pre-commit budget, rate slot and same-provider retries; a child that is itself a group is
asked as a whole, its own children having their own.

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
from collections.abc import Iterator, Sequence
from typing import Any

from .. import _clock
from .._errors import (
    AllProvidersFailed,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    TransientError,
)
from .._log import get_logger
from .._message import Message
from .._provider import Provider, ProviderConfig
from .._result import SendResult
from .events import Event
from .leaf import Leaf, Node
from .runtime import _SEND, Runtime, SendContext

__all__ = ["Failover", "Group", "RoundRobin", "Weighted"]

log = get_logger("mailer")


def node(child: Provider) -> Node:
    """A group's child as a node: a group is one already, any other provider is
    wrapped in a Leaf. The one place that tells them apart."""
    if isinstance(child, Group):
        return child
    return Leaf(child)


class Group(Provider[ProviderConfig]):
    """Base of the provider groups. Subclasses implement :meth:`_order`."""

    #: a group's children report their own commit points
    reports_commit_point = True
    resolves_templates = False
    kind: str = "group"

    def __init__(self, providers: Sequence[Provider], *, name: str | None = None) -> None:
        if not providers:
            raise ConfigError(f"a {self.kind} group needs at least one provider")
        self.children: list[Provider] = list(providers)
        #: the children as nodes (each provider in a Leaf), in the same order
        self.nodes: list[Node] = [node(child) for child in self.children]
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
        for child in self.nodes:
            yield from child.leaves()

    def bind(self, runtime: Runtime) -> None:
        """Share ``runtime`` (settings, health, events) with every node below."""
        self._runtime = runtime
        for child in self.nodes:
            child.bind(runtime)

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            self.bind(Runtime())
        assert self._runtime is not None
        return self._runtime

    def _order(self) -> list[Node]:
        """The children in the order this send should try them."""
        raise NotImplementedError

    # -- a group as a node of its parent -----------------------------------------------

    def available(self) -> bool:
        """Whether some provider below may be tried now (without claiming a probe)."""
        self.runtime  # noqa: B018 - bound (a group used on its own binds on first use)
        return any(child.available() for child in self.nodes)

    def due_at(self) -> float:
        """The soonest time a provider below may be tried again."""
        self.runtime  # noqa: B018 - bound, as above
        return min(child.due_at() for child in self.nodes)

    async def acquire(self) -> bool:
        """A group is asked as a whole: its children claim their own probes."""
        return self.available()

    def force(self, ctx: SendContext) -> None:
        ctx.force = True  # passed down: this group tries its own soonest-due child

    def why_resting(self) -> str:
        return "not tried: " + "; ".join(
            f"{child.name} {child.why_resting().removeprefix('not tried: ')}"
            for child in self.nodes
        )

    async def try_send(
        self, message: Message, ctx: SendContext, errors: dict[str, DeliveryError]
    ) -> SendResult | None:
        """This group as its parent's child: the table's last row."""
        try:
            return await self.send(message)
        except AllProvidersFailed as exc:
            # Reported per provider, not per group: the caller wants to know which
            # provider said what, however the groups nest.
            errors.update(exc.errors or {self.name: exc})
            if exc.failover or self.runtime.on_uncertain == "failover":
                return None
            raise
        except DeliveryUncertain as exc:
            errors[self.name] = exc
            if self.runtime.on_uncertain == "failover":
                return None
            raise

    # -- sending -----------------------------------------------------------------------

    async def _send(self, message: Message) -> SendResult:
        # The routing itself is here too, not in a frame of its own: every frame of a
        # send's chain is resumed on each of its wakes (four a send over SMTP; pool5).
        rt = self.runtime
        if rt.shared is not None:
            await rt.ready()
        ctx = _SEND.get()
        token = None
        if ctx is None:  # used on its own, not under a Mailer
            ctx = SendContext(message.message_id, _clock.now() + rt.send_timeout, root=self)
            token = _SEND.set(ctx)
        try:
            errors: dict[str, DeliveryError] = {}
            plan = self._order()
            tried = False
            # Only the root, or a group the root forced, tries a resting provider early.
            may_force, ctx.force = ctx.force or ctx.root is self, False
            skipped: dict[str, str] = {}
            for index, child in enumerate(plan):
                if not await child.acquire():
                    skipped[child.name] = child.why_resting()
                    continue
                tried = True
                result = await child.try_send(message, ctx, errors)
                if result is not None:
                    return result
                nxt = _next_available(plan[index + 1 :])
                error = errors[child.name] if child.name in errors else list(errors.values())[-1]
                rt.emit(
                    Event(
                        "failover",
                        provider=child.name,
                        message_id=message.message_id,
                        error=error,
                        next_provider=nxt,
                    )
                )
            if not tried and may_force:
                # Every provider is resting: try the one due soonest rather than fail blind.
                child = min(plan, key=lambda n: n.due_at())
                log.warning("every provider is resting; trying %s early", child.name)
                child.force(ctx)
                result = await child.try_send(message, ctx, errors)
                if result is not None:
                    return result
            # Every provider is named, the skipped ones with why (issue 21, item 9): an error
            # that names only the one tried early reads as if the others were never there.
            for name, why in skipped.items():
                if name not in errors:
                    error = TransientError(why, provider=name)
                    error.no_verdict, error.retry_here = True, False
                    errors[name] = error
            raise AllProvidersFailed(errors, message=message)
        finally:
            if token is not None:
                _SEND.reset(token)

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

    def _order(self) -> list[Node]:
        return self.nodes


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

    def _order(self) -> list[Node]:
        rng = self.runtime.rng
        keyed = sorted(
            range(len(self.nodes)),
            key=lambda i: -(rng.random() ** (1.0 / self.weights[i])),
        )
        return [self.nodes[i] for i in keyed]


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

    def _order(self) -> list[Node]:
        total = sum(self.weights)
        for i, weight in enumerate(self.weights):
            self._current[i] += weight
        first = max(range(len(self.children)), key=lambda i: self._current[i])
        self._current[first] -= total
        n = len(self.nodes)
        return [self.nodes[(first + k) % n] for k in range(n)]


def _next_available(children: Sequence[Node]) -> str | None:
    """The child a "failover" event names as next: the first that may be tried now."""
    return next((child.name for child in children if child.available()), None)


def _weights(children: Sequence[Provider], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(children)
    out = [float(w) for w in weights]
    if len(out) != len(children):
        raise ConfigError("a group needs one weight per provider")
    if not all(w > 0 and math.isfinite(w) for w in out):
        raise ConfigError("group weights must be positive numbers")
    return out


GROUPS: dict[str, type[Group]] = {
    "failover": Failover,
    "weighted": Weighted,
    "roundrobin": RoundRobin,
}


def make_group(kind: str, providers: Sequence[Provider], **options: Any) -> Group:
    """A group from its config name (``failover``, ``weighted``, ``roundrobin``)."""
    cls = GROUPS.get(kind)
    if cls is None:
        raise ConfigError(f"unknown group type {kind!r}; use one of {sorted(GROUPS)}")
    return cls(providers, **options)
