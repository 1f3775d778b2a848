"""The health store's Redis side: one Lua script per transition, and the view they return.

Every change to a provider's shared state (failure, success, probe claim, probe release,
merge, read, rate slot) is one script, so two processes never interleave a read and a
write. The scripts take the time from Redis (``TIME``) only: ``open_until`` is computed
inside them, and a process is told how long the rest has *left*, which it adds to its own
monotonic clock, so no host ever compares its clock with another's. The half-open probe is
a lease (``SET NX PX``): one process wins it, and it expires, so a probe owner that dies
cannot wedge the provider.

:class:`ProviderView` is a script's answer, decoded; :func:`load_scripts` registers them
all on a client. The Python that calls them is :mod:`mailer._routing.store`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .health import BreakerState

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["ProviderView", "load_scripts"]

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

#: how every script but the read starts: Redis's time, then the provider's state hash
_TRANSITION = (
    _PRELUDE
    + """
local now = now_ms()
local s = load(KEYS[1])
"""
)

# KEYS: state hash, lease. ARGV: name, channel, kind, retry_after_ms, threshold,
# cooldown_ms, factor, max_cooldown_ms, auth_cooldown_ms, slow, vcp.
# The same rules as CircuitBreaker.record_failure (mailer.health), in Redis's clock: an
# opening while on probation (closed by a background verify only) grows the rest from the
# openings before it (prob), whichever process probed and whichever failed.
_FAILURE = (
    _TRANSITION
    + """\
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
    _TRANSITION
    + """\
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
    _TRANSITION
    + """\
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
    _TRANSITION
    + """\
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


def load_scripts(client: Redis) -> dict[str, Any]:
    """Register every script on ``client``, under the name
    :class:`~mailer._routing.store.RedisHealth` calls it by."""
    return {
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
