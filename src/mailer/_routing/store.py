"""The shared health store: breaker state and rate limits in Redis, for every process.

With the memory store (the default) each process learns about an outage alone. With
``health.store = "redis://..."`` every process using the same store and ``prefix``
shares, per provider: the consecutive failures (slow calls included), the state, when an
open breaker may be probed, how often it tripped (the cooldown's growth), any rest a
provider asked for (429 Retry-After), the half-open probe, and the rate limiter.

How it stays correct across processes and machines:

* **One Lua script per transition** (failure, success, probe claim, probe release,
  merge, read, rate slot), so two processes never interleave a read and a write.
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

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub

__all__ = ["ProviderView", "RedisHealth"]

log = get_logger("mailer")

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function load(key)
  local h = redis.call('HMGET', key, 'state', 'failures', 'trips', 'open_until', 'slow',
                       'vcp', 'ver', 'prob')
  return {state = h[1] or 'closed', failures = tonumber(h[2] or '0'),
          trips = tonumber(h[3] or '0'), open_until = tonumber(h[4] or '0'),
          slow = tonumber(h[5] or '0'), vcp = tonumber(h[6] or '0'), ver = tonumber(h[7] or '0'),
          prob = tonumber(h[8] or '0')}
end
local function view(name, s, now, lease)
  local pttl = redis.call('PTTL', lease)
  if pttl < 0 then pttl = 0 end
  local remaining = 0
  if s.state == 'open' then remaining = math.max(s.open_until - now, 0) end
  return {n = name, s = s.state, r = remaining, f = s.failures, t = s.trips, sl = s.slow,
          v = s.vcp, l = pttl, h = redis.call('GET', lease) or '', ver = s.ver, p = s.prob}
end
-- save, bump the version; publish when the state or the rest changed
local function save(key, name, s, now, lease, channel, publish)
  s.ver = s.ver + 1
  redis.call('HSET', key, 'state', s.state, 'failures', s.failures, 'trips', s.trips,
             'open_until', string.format('%d', s.open_until), 'slow', s.slow, 'vcp', s.vcp,
             'ver', s.ver, 'prob', s.prob)
  local out = view(name, s, now, lease)
  if publish then redis.call('PUBLISH', channel, cjson.encode(out)) end
  return out
end
"""

# KEYS: state hash, lease. ARGV: name, channel, kind, retry_after_ms, threshold,
# cooldown_ms, factor, max_cooldown_ms, auth_cooldown_ms, slow, vcp.
# The same rules as CircuitBreaker.record_failure (mailer.health), in Redis's clock: an
# opening while on probation (closed by a background verify only) grows the rest from the
# openings before it (prob), whichever process probed and whichever failed.
_FAILURE = (
    _PRELUDE
    + """
local now = now_ms()
local s = load(KEYS[1])
local before, before_until = s.state, s.open_until
local kind = ARGV[3]
s.slow = tonumber(ARGV[10])
s.vcp = tonumber(ARGV[11])
local function open(rest, grow)
  s.trips, s.prob = math.max(s.trips, s.prob), 0
  if grow then
    rest = math.min(rest * math.pow(tonumber(ARGV[7]), s.trips), tonumber(ARGV[8]))
  end
  s.trips = s.trips + 1
  local floor = 0
  if s.state ~= 'closed' then floor = s.open_until end
  s.open_until = math.max(now + math.floor(rest), floor)
  s.failures = 0
  s.state = 'open'
  redis.call('DEL', KEYS[2])
end
if kind == 'rate' then open(tonumber(ARGV[4]), false)
elseif kind == 'auth' then open(tonumber(ARGV[9]), false)
elseif kind == 'slow' then open(tonumber(ARGV[6]), true)
elseif s.state == 'half-open' then open(tonumber(ARGV[6]), true)
else
  s.failures = s.failures + 1
  if s.failures >= tonumber(ARGV[5]) then open(tonumber(ARGV[6]), true) end
end
local publish = s.state ~= before or s.open_until ~= before_until
return cjson.encode(save(KEYS[1], ARGV[1], s, now, KEYS[2], ARGV[2], publish))
"""
)

# KEYS: state hash, lease. ARGV: name, channel, probe (1: from the lease's holder),
# verified (1: a background verify passed, not a real send).
# A success on an open breaker from anyone but a probe is stale (the attempt started
# before the opening, as a send finishing just after another process's 429): ignored.
# A verify closes on probation: the openings so far are kept in prob, and the next one
# grows the rest from there (CircuitBreaker.record_probe_success); a real send's success
# clears them.
_SUCCESS = (
    _PRELUDE
    + """
local now = now_ms()
local s = load(KEYS[1])
local verified = ARGV[4] == '1'
if (s.state == 'closed' and s.failures == 0 and (verified or s.prob == 0))
    or (s.state == 'open' and ARGV[3] ~= '1') then
  return cjson.encode(view(ARGV[1], s, now, KEYS[2]))
end
local before, before_prob = s.state, s.prob
if verified then
  s.prob = math.max(s.trips, s.prob, 1)
else
  s.prob = 0
end
s.state, s.failures, s.trips, s.open_until = 'closed', 0, 0, 0
redis.call('DEL', KEYS[2])
local publish = before ~= 'closed' or s.prob ~= before_prob
return cjson.encode(save(KEYS[1], ARGV[1], s, now, KEYS[2], ARGV[2], publish))
"""
)

# KEYS: state hash, lease. ARGV: name, channel, token, lease_ms.
_CLAIM = (
    _PRELUDE
    + """
local now = now_ms()
local s = load(KEYS[1])
local granted = 0
if s.state ~= 'closed' and not (s.state == 'open' and now < s.open_until) then
  if redis.call('SET', KEYS[2], ARGV[3], 'NX', 'PX', ARGV[4]) then
    granted = 1
    if s.state ~= 'half-open' then
      s.state = 'half-open'
      local out = save(KEYS[1], ARGV[1], s, now, KEYS[2], ARGV[2], true)
      out.g = 1
      return cjson.encode(out)
    end
  end
end
local out = view(ARGV[1], s, now, KEYS[2])
out.g = granted
return cjson.encode(out)
"""
)

# KEYS: lease. ARGV: token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# A rest this process decided alone while Redis was away: kept unless a longer one runs.
# KEYS: state hash, lease. ARGV: name, channel, remaining_ms, slow, vcp, trips.
_MERGE = (
    _PRELUDE
    + """
local now = now_ms()
local s = load(KEYS[1])
local untill = now + tonumber(ARGV[3])
if s.state == 'open' and s.open_until >= untill then
  return cjson.encode(view(ARGV[1], s, now, KEYS[2]))
end
s.state, s.failures = 'open', 0
s.open_until = math.max(untill, s.open_until)
s.slow, s.vcp = tonumber(ARGV[4]), tonumber(ARGV[5])
s.trips = math.max(s.trips, tonumber(ARGV[6]))
redis.call('DEL', KEYS[2])
return cjson.encode(save(KEYS[1], ARGV[1], s, now, KEYS[2], ARGV[2], true))
"""
)

# KEYS: hash1, lease1, hash2, lease2, ... ARGV: name1, name2, ...
_READ = (
    _PRELUDE
    + """
local now = now_ms()
local out = {}
for i, name in ipairs(ARGV) do
  out[i] = view(name, load(KEYS[2 * i - 1]), now, KEYS[2 * i])
end
return cjson.encode(out)
"""
)

# GCRA (see mailer._routing.ratelimit.Gcra), microseconds of Redis's clock.
# KEYS: the provider's rate key. ARGV: interval_us, slots, max_wait_us, peek (1: take
# nothing), lease (take up to this many slots if they are free now; default 1).
# Returns {taken, wait_us, free_slots}: several slots only with no wait; when none is
# free now, one slot with its wait (or none, past max_wait), as without a lease.
_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local interval, slots = tonumber(ARGV[1]), tonumber(ARGV[2])
local base = math.max(tat, now)
local free = math.max(math.min(math.floor((now - (base - slots * interval)) / interval), slots), 0)
if ARGV[4] == '1' then
  return {0, 0, free}
end
local take = math.min(tonumber(ARGV[5] or '1'), free)
local wait = 0
if take < 1 then
  take = 1
  wait = math.max(base + interval - slots * interval - now, 0)
  if wait > tonumber(ARGV[3]) then return {0, wait, 0} end
end
local new = base + take * interval
redis.call('SET', KEYS[1], string.format('%d', new), 'PX',
           string.format('%d', math.ceil((new - now) / 1000) + 1000))
return {take, wait, 0}
"""


@dataclass(slots=True)
class ProviderView:
    """One provider's shared state, as the store has it (``remaining``: seconds)."""

    name: str
    state: BreakerState
    remaining: float
    failures: int
    trips: int
    slow_call: bool
    verify_can_probe: bool
    lease: float  # seconds left on the probe lease (0: nobody probes)
    holder: str  # who holds the probe: host:pid:id
    version: int
    granted: bool = False
    #: openings carried while on probation (closed by a background verify only)
    probation: int = 0

    @classmethod
    def parse(cls, raw: Any) -> ProviderView:
        d = json.loads(raw) if isinstance(raw, str | bytes) else raw
        return cls(
            name=str(d["n"]),
            state=BreakerState(d["s"]),
            remaining=float(d["r"]) / 1000.0,
            failures=int(d["f"]),
            trips=int(d["t"]),
            slow_call=bool(d["sl"]),
            verify_can_probe=bool(d["v"]),
            lease=float(d["l"]) / 1000.0,
            holder=str(d.get("h") or ""),
            version=int(d["ver"]),
            granted=bool(d.get("g", 0)),
            probation=int(d.get("p", 0)),
        )


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
        self._scripts = {
            name: client.register_script(text)
            for name, text in (
                ("failure", _FAILURE),
                ("success", _SUCCESS),
                ("claim", _CLAIM),
                ("release", _RELEASE),
                ("merge", _MERGE),
                ("read", _READ),
                ("rate", _RATE),
            )
        }
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
