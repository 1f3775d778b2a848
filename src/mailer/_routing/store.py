"""The shared health store: breaker state and rate limits in Redis, for every process.

With the memory store (the default) each process learns about an outage alone. With
``health.store = "redis://..."`` every process using the same store and ``prefix``
shares, per provider: the consecutive failures (slow calls included), the state, when an
open breaker may be probed, how often it tripped (the cooldown's growth), any rest a
provider asked for (429 Retry-After), the half-open probe, and the rate limiter.

How it stays correct across processes and machines:

* **One Lua script per transition** (failure, success, probe claim, probe release,
  merge, read, rate slot), so two processes never interleave a read and a write
  (:mod:`mailer._routing.store_scripts`).
* **Redis's clock only.** ``open_until`` is computed inside the scripts from ``TIME``, and
  a process is told how long the rest has *left*, which it adds to its own monotonic
  clock. No host ever compares its clock with another's (pybreaker compares each host's
  local time with another host's ``opened_at``).
* **One probe across all processes.** Half-open is entered by claiming a lease
  (``SET NX PX``): one process wins, the others go elsewhere. The lease expires, so a
  probe owner that dies cannot wedge the provider.

How it stays cheap:

* Each process keeps its :class:`~mailer._routing.health.CircuitBreaker` as its local copy: a
  send to a closed provider reads that copy and never waits on Redis. The copy is
  refreshed by pub/sub (each transition publishes the new state) and re-read every
  ``health.refresh`` seconds as a backstop.
* Writes happen only on state-relevant outcomes: a failure, a success after failures or
  while not closed, a probe claim or release. A healthy send writes nothing. Writes are
  not awaited by the send that caused them.

Redis unreachable is a degraded mode, not an outage: each call to the store is bounded by
``health.store_timeout``; on the first error the process goes on with its local breakers
(as with the memory store), logs one WARNING, and keeps reconnecting in the background.
When Redis is back it logs once more, pushes the rests it decided alone meanwhile, and
reads the shared state again.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._backend import current_async_library
from .._errors import AuthError, ConfigError, DeliveryError, RateLimited
from .._log import get_logger, register_secret
from .._redact import redact_url
from .health import BreakerState, CircuitBreaker, HealthConfig
from .ratelimit import Gcra, Lease
from .store_scripts import ProviderView, load_scripts

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = ["RedisHealth", "make_store"]

log = get_logger("mailer")


def _failure_kind(error: DeliveryError) -> tuple[str, float]:
    if isinstance(error, RateLimited) and error.retry_after:
        return "rate", max(error.retry_after, 0.0)
    if isinstance(error, AuthError):
        return "auth", 0.0
    if error.timed_out:
        return "slow", 0.0
    return "plain", 0.0


@dataclass(eq=False)
class _Observer:
    """What a breaker tells the store (see :class:`mailer._routing.health.BreakerObserver`)."""

    store: RedisHealth
    name: str

    def success(self, breaker: CircuitBreaker, was: tuple[BreakerState, int, int]) -> None:
        if was == (BreakerState.CLOSED, 0, 0) and not breaker.probation:
            return  # the hot path: a healthy send writes nothing
        self.store.write(self.name, "success", verified=breaker.probation > 0)

    def failure(self, breaker: CircuitBreaker, error: DeliveryError) -> None:
        self.store.write(self.name, "failure", error)

    def released(self, breaker: CircuitBreaker) -> None:
        if self.name in self.store.leases:
            self.store.leases.discard(self.name)
            self.store.write(self.name, "release")


@dataclass(eq=False)
class RedisHealth:
    """One process's link to the shared store (one per Runtime)."""

    config: HealthConfig
    #: seconds a probe lease lasts (a dead owner's lease expires after this)
    lease: float = 16.0
    breakers: dict[str, CircuitBreaker] = field(default_factory=dict)
    limits: dict[str, Gcra] = field(default_factory=dict)
    #: rate-limit slots taken from the store ahead of use, per provider (ratelimit.Lease)
    leases_held: dict[str, Lease] = field(default_factory=dict)
    #: providers whose probe lease this process holds
    leases: set[str] = field(default_factory=set)
    connected: bool = False
    #: this process's name on the leases it holds (shown by ``mailer health``)
    token: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    )
    _client: Redis | None = None
    _scripts: dict[str, Any] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _pid: int = field(default_factory=os.getpid)
    _versions: dict[str, int] = field(default_factory=dict)
    _writes: set[asyncio.Task[None]] = field(default_factory=set)
    _warned: bool = False
    _closed: bool = False
    #: set once the first connection attempt on this loop has ended, either way
    _tried: asyncio.Event | None = None

    def __post_init__(self) -> None:
        try:
            import redis.asyncio  # noqa: F401
        except ImportError:
            raise ConfigError(
                "health.store is a Redis URL but the redis package is not installed: "
                "pip install 'mailer-failover[redis]'"
            ) from None
        from urllib.parse import unquote, urlsplit

        password = urlsplit(self.config.store).password
        if password:
            register_secret(unquote(password))
        self.where = redact_url(self.config.store)

    # -- keys --------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.config.prefix}:{kind}:{name}"

    @property
    def channel(self) -> str:
        return f"{self.config.prefix}:health"

    # -- registration ------------------------------------------------------------------

    def register(self, name: str, breaker: CircuitBreaker, limiter: Gcra | None) -> None:
        """Share this provider's breaker; ``limiter`` is its rate limit in this process,
        used while the store is away."""
        self.breakers[name] = breaker
        breaker.observer = _Observer(self, name)
        if limiter is not None:
            self.limits[name] = limiter

    # -- the background link -----------------------------------------------------------

    def start(self) -> bool:
        """Make sure the link runs on this event loop; whether the store may be used now.

        Cheap enough for every send: two attribute checks once running. Under trio
        (redis-py is asyncio only) it never starts, and the local breakers decide alone.
        """
        if self._closed:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if loop is self._loop and self._pid == os.getpid():
            return self.connected
        # first use, a new event loop (the old one's connections cannot be used here), or
        # a forked child (the parent's sockets are not ours)
        self._loop, self._pid, self.connected = loop, os.getpid(), False
        self.leases_held.clear()  # a forked child must not spend its parent's slots
        self._client, self._scripts = None, {}
        self._tried = asyncio.Event()
        self._task = loop.create_task(self._run(), name="mailer-health-store")
        return False

    async def ready(self) -> None:
        """On first use, wait (at most ``store_timeout`` and a little) for the first
        connection, so the first sends' verdicts are shared; later, return at once."""
        if self.start() or self._tried is None or self._tried.is_set():
            return
        try:
            async with asyncio.timeout(self.config.store_timeout * 2):
                await self._tried.wait()
        except TimeoutError:
            pass

    async def _connect(self) -> tuple[Redis, PubSub]:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        t = self.config.store_timeout
        client = Redis.from_url(
            self.config.store,
            socket_timeout=t,
            socket_connect_timeout=t,
            retry=Retry(NoBackoff(), 0),
            decode_responses=True,
            protocol=2,  # every server since 2.6 speaks it; no RESP3 handshakes to go wrong
        )
        self._scripts = load_scripts(client)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            async with asyncio.timeout(t * 4):
                await pubsub.subscribe(self.channel)
        except BaseException:
            await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
            await _quietly(client.aclose())
            raise
        return client, pubsub

    async def _run(self) -> None:
        """Connect, resync, then follow pub/sub and re-read every ``refresh`` seconds;
        on any error go on alone and reconnect."""
        refresh = self.config.refresh
        retry = min(max(refresh, 0.2), 1.0)
        while not self._closed:
            client: Redis | None = None
            pubsub: PubSub | None = None
            try:
                client, pubsub = await self._connect()
                self._client = client
                await self._resync()
                self.connected = True
                if self._tried is not None:
                    self._tried.set()
                if self._warned:
                    self._warned = False
                    log.warning(
                        "health store %s is reachable again: breakers shared again", self.where
                    )
                loop = asyncio.get_running_loop()
                next_read = loop.time() + refresh
                while True:
                    wait = max(next_read - loop.time(), 0.0)
                    message = await _bounded(
                        pubsub.get_message(timeout=wait), wait + self.config.store_timeout
                    )
                    if message is not None and message.get("type") == "message":
                        self._apply(ProviderView.parse(message["data"]))
                    if loop.time() >= next_read:
                        await self._read()
                        next_read = loop.time() + refresh
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
            finally:
                self.connected = False
                if self._tried is not None:
                    self._tried.set()
                self._client = None
                if pubsub is not None:
                    await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
                if client is not None:
                    await _quietly(client.aclose())
            await asyncio.sleep(retry)

    def _down(self, exc: BaseException) -> None:
        self.connected = False
        self.leases.clear()
        if not self._warned:
            self._warned = True
            log.warning(
                "health store %s is unreachable (%s): each process uses its own breakers "
                "until it is back",
                self.where,
                f"{type(exc).__name__}: {exc}",
            )

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        client = self._client
        if client is None:
            raise ConnectionError("health store not connected")
        call = self._scripts[script](keys=keys, args=args, client=client)
        return await _bounded(call, self.config.store_timeout)

    # -- reading -----------------------------------------------------------------------

    def _apply(self, view: ProviderView) -> None:
        breaker = self.breakers.get(view.name)
        if breaker is None or view.version < self._versions.get(view.name, 0):
            return  # another tree's provider, or older than what we have
        self._versions[view.name] = view.version
        breaker.apply_shared(
            view.state,
            remaining=view.remaining,
            failures=view.failures,
            trips=view.trips,
            slow_call=view.slow_call,
            verify_can_probe=view.verify_can_probe,
            probe_held=view.lease > 0 if view.state is BreakerState.HALF_OPEN else None,
            probation=view.probation,
        )

    async def views(self, names: list[str]) -> list[ProviderView]:
        keys = [k for n in names for k in (self._key("health", n), self._key("probe", n))]
        raw = await self._call("read", keys, list(names))
        return [ProviderView.parse(d) for d in json.loads(raw)] if names else []

    async def _read(self) -> None:
        for view in await self.views(list(self.breakers)):
            self._apply(view)

    async def _resync(self) -> None:
        """Push the rests decided alone while away, then take the shared state."""
        for name, breaker in self.breakers.items():
            left = breaker.open_until - breaker.clock()
            if breaker.state is BreakerState.OPEN and left > 0:
                await self._call(
                    "merge",
                    [self._key("health", name), self._key("probe", name)],
                    [
                        name,
                        self.channel,
                        int(left * 1000),
                        int(breaker.slow_call),
                        int(breaker.verify_can_probe),
                        breaker.trips,
                    ],
                )
        self._versions.clear()
        await self._read()

    # -- writing -----------------------------------------------------------------------

    def write(
        self, name: str, kind: str, error: DeliveryError | None = None, *, verified: bool = False
    ) -> None:
        """Mirror a verdict in the store, without making the send wait for it
        (``verified``: the success is a background verify's, on probation)."""
        if not self.start():
            return  # alone for now; the resync merges what matters when back
        keys = [self._key("health", name), self._key("probe", name)]
        if kind == "failure":
            assert error is not None
            cfg = self.config
            what, retry_after = _failure_kind(error)
            breaker = self.breakers[name]
            args: list[Any] = [
                name, self.channel, what, int(retry_after * 1000), cfg.failure_threshold,
                int(cfg.cooldown * 1000), cfg.backoff_factor, int(cfg.max_cooldown * 1000),
                int(cfg.auth_cooldown * 1000), int(breaker.slow_call),
                int(breaker.verify_can_probe),
            ]  # fmt: skip
            self.leases.discard(name)
            self._spawn(self._write("failure", keys, args))
        elif kind == "success":
            probe = name in self.leases
            self.leases.discard(name)
            args = [name, self.channel, int(probe), int(verified)]
            self._spawn(self._write("success", keys, args))
        else:
            self._spawn(self._write("release", [self._key("probe", name)], [self.token]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._loop is not None
        task: asyncio.Task[None] = self._loop.create_task(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, script: str, keys: list[str], args: list[Any]) -> None:
        try:
            raw = await self._call(script, keys, args)
        except Exception as exc:
            self._down(exc)
            return
        if script != "release":
            self._apply(ProviderView.parse(raw))

    async def claim(self, name: str) -> bool | None:
        """Claim the half-open probe for every process: True (ours), False (resting, or
        another process probes), None (the store cannot say: decide locally). The local
        breaker takes the store's view either way."""
        if not self.start():
            return None
        keys = [self._key("health", name), self._key("probe", name)]
        try:
            raw = await self._call(
                "claim", keys, [name, self.channel, self.token, int(self.lease * 1000)]
            )
        except Exception as exc:
            self._down(exc)
            return None
        view = ProviderView.parse(raw)
        if view.granted:
            self.leases.add(name)
        self._apply(view)
        return view.granted

    # -- rate limits -------------------------------------------------------------------

    async def reserve(self, name: str, max_wait: float) -> float | None:
        """The shared limiter's answer (see :meth:`Gcra.reserve`); the local one while
        the store is away."""
        local = self.limits[name]
        if not self.start():
            return local.reserve(max_wait)
        lease = self.leases_held.get(name)
        if lease is None:
            lease = self.leases_held[name] = Lease(local.limit)
        elif lease.take():
            return 0.0  # a slot leased earlier: no round trip
        limit = local.limit
        try:
            taken, wait, _ = await self._call(
                "rate",
                [self._key("rate", name)],
                [
                    max(int(limit.interval * 1e6), 1),
                    limit.slots,
                    int(min(max_wait, 1e9) * 1e6),
                    0,
                    limit.batch,
                ],
            )
        except Exception as exc:
            self._down(exc)
            return local.reserve(max_wait)
        if not taken:
            return None
        lease.fill(int(taken))
        return float(wait) / 1e6

    async def rate_left(self, name: str) -> int:
        limit = self.limits[name].limit
        _, _, free = await self._call(
            "rate",
            [self._key("rate", name)],
            [max(int(limit.interval * 1e6), 1), limit.slots, 0, 1],
        )
        return int(free)

    # -- for the CLI -------------------------------------------------------------------

    async def connect_once(self) -> None:
        """Connect for a one-off read (``mailer health``), without the background link."""
        client, pubsub = await self._connect()
        await _quietly(pubsub.aclose())  # type: ignore[no-untyped-call]
        self._client, self.connected = client, True

    async def aclose(self) -> None:
        self._closed = True
        tasks = [t for t in (self._task, *self._writes) if t is not None]
        running = asyncio.get_running_loop() if _has_loop() else None
        tasks = [t for t in tasks if t.get_loop() is running]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None and self._loop in (None, running):
            await _quietly(self._client.aclose())
        self._client, self.connected = None, False


async def _bounded(call: Awaitable[Any], timeout: float) -> Any:
    """Await ``call`` for at most ``timeout`` seconds, whatever it does with cancellation.

    ``asyncio.timeout`` only cancels, and a client library that catches the cancellation
    (to tidy a connection up, say) keeps the caller waiting: a send must never wait on
    Redis longer than ``store_timeout``. The call runs as a task; past the timeout it is
    cancelled and left to finish on its own, and TimeoutError is raised at once.
    """
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except BaseException:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise
    if not done:
        task.cancel()
        task.add_done_callback(_retrieve)
        raise TimeoutError(f"no answer from the health store within {timeout:g}s")
    return task.result()


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Consume an abandoned call's outcome (no "exception was never retrieved")."""
    if not task.cancelled():
        task.exception()


def _has_loop() -> bool:
    return current_async_library() == "asyncio"


async def _quietly(aw: Awaitable[Any]) -> None:
    try:
        async with asyncio.timeout(1.0):
            await aw
    except Exception:  # noqa: S110 - closing a link that is already broken
        pass


def make_store(config: HealthConfig, *, lease: float) -> RedisHealth | None:
    """None for the memory store: the local breakers are all there is."""
    if config.store == "memory":
        return None
    return RedisHealth(config, lease=lease)
