"""Events and the suppression list in Redis (``redis://host:port/db?prefix=mailer``).

Keys, under ``prefix`` (default ``mailer``):

* ``{prefix}:suppression``: a hash, address -> the entry as JSON;
* ``{prefix}:suppression:log``: a stream, one item per change (``a`` the address, ``r``
  the reason, empty for a removal), trimmed to about 100,000 items. Stream ids grow in
  the order Redis applied the writes, so a reader that asks for the items after the last
  id it saw never misses one; when the trim passed its cursor it loads a snapshot;
* ``{prefix}:ev:{provider}:{event key}``: set once (``NX``), with a TTL of the event
  retention: the dedupe of event ids;
* ``{prefix}:events:{message id}``: a list of the message's events as JSON, same TTL;
* ``{prefix}:send:{provider}:{provider id}``: our Message-ID, same TTL.

An entry is added and logged in one Lua script, so the log never lacks a change that the
hash holds. Retention is Redis's own expiry: ``purge_events`` has nothing to do.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from .._errors import ConfigError
from .._redact import redact_url
from .model import DeliveryEvent
from .store import Changes, SendRecord, SuppressionEntry, event_from_row, event_key, event_row

__all__ = ["RedisBackend"]

_LOG_MAX = 100_000
_DEFAULT_TTL = 30 * 86400

#: KEYS: hash, log. ARGV: maxlen, then address, entry JSON, reason per entry.
_ADD = """
local added = {}
for i = 2, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'a', ARGV[i], 'r', ARGV[i + 2])
    table.insert(added, ARGV[i])
  end
end
return added
"""
#: KEYS: hash, log. ARGV: maxlen, address.
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[2]) == 1 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'a', ARGV[2], 'r', '')
  return 1
end
return 0
"""


class RedisBackend:
    """Events and suppression entries in Redis."""

    def __init__(self, url: str, *, ttl: float = _DEFAULT_TTL) -> None:
        parts = urlsplit(url)
        options = dict(parse_qsl(parts.query))
        self.prefix = options.pop("prefix", "mailer")
        self.url = urlunsplit(
            parts._replace(query="&".join(f"{k}={v}" for k, v in options.items()))
        )
        self.ttl = max(int(ttl), 1)
        #: a redis.asyncio.Redis with decode_responses=True (typed Any: redis-py's types
        #: are str | bytes everywhere, whatever decode_responses says)
        self._redis: Any = None

    def __repr__(self) -> str:
        return f"<RedisBackend {redact_url(self.url)!r} prefix={self.prefix!r}>"

    def _r(self) -> Any:
        if self._redis is None:
            raise RuntimeError("the Redis events store is not open")
        return self._redis

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def open(self) -> None:
        if self._redis is not None:
            return
        try:
            from redis.asyncio import Redis
        except ImportError:
            raise ConfigError(
                "a redis:// events or suppression store needs redis: "
                "pip install 'mailer-failover[redis]'"
            ) from None
        client = Redis.from_url(self.url, decode_responses=True)
        await client.ping()
        self._redis = client

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    # -- events --------------------------------------------------------------------------

    async def add_events(self, events: Sequence[DeliveryEvent]) -> list[bool]:
        r = self._r()
        async with r.pipeline(transaction=True) as pipe:
            for e in events:
                pipe.set(self._k("ev", e.provider, event_key(e)), "1", nx=True, ex=self.ttl)
            flags = [bool(v) for v in await pipe.execute()]
        async with r.pipeline(transaction=True) as pipe:
            for e, fresh in zip(events, flags, strict=True):
                if fresh and e.message_id is not None:
                    key = self._k("events", e.message_id)
                    pipe.rpush(key, json.dumps(event_row(e)))
                    pipe.expire(key, self.ttl)
            await pipe.execute()
        return flags

    async def record_sends(self, records: Sequence[SendRecord]) -> None:
        async with self._r().pipeline(transaction=False) as pipe:
            for rec in records:
                key = self._k("send", rec.provider, rec.provider_message_id)
                pipe.set(key, rec.message_id, ex=self.ttl)
            await pipe.execute()

    async def lookup(self, provider: str, provider_message_ids: Sequence[str]) -> dict[str, str]:
        ids = list(provider_message_ids)
        if not ids:
            return {}
        values = await self._r().mget([self._k("send", provider, i) for i in ids])
        return {i: v for i, v in zip(ids, values, strict=True) if v is not None}

    async def events(self, message_id: str, limit: int = 1000) -> list[DeliveryEvent]:
        items = await self._r().lrange(self._k("events", message_id), 0, limit - 1)
        found = [event_from_row(json.loads(i)) for i in items]
        return sorted(found, key=lambda e: e.timestamp)

    async def purge_events(self, older_than: float) -> int:
        return 0  # every key carries its TTL

    # -- suppression ---------------------------------------------------------------------

    async def add(self, entries: Sequence[SuppressionEntry]) -> list[str]:
        argv: list[Any] = [_LOG_MAX]
        for e in entries:
            argv += [e.address, _dump(e), e.reason]
        keys = [self._k("suppression"), self._k("suppression", "log")]
        added: list[str] = await self._r().eval(_ADD, 2, *keys, *argv)
        return list(added)

    async def remove(self, address: str) -> bool:
        keys = [self._k("suppression"), self._k("suppression", "log")]
        return bool(await self._r().eval(_REMOVE, 2, *keys, _LOG_MAX, address))

    async def get(self, address: str) -> SuppressionEntry | None:
        value = await self._r().hget(self._k("suppression"), address)
        return None if value is None else _load(address, value)

    async def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        every = await self._r().hgetall(self._k("suppression"))
        entries = sorted(
            (_load(a, v) for a, v in every.items()), key=lambda e: (e.created, e.address)
        )
        return entries[offset : offset + limit]

    async def snapshot(self) -> tuple[dict[str, str], Any]:
        r = self._r()
        last = await r.xrevrange(self._k("suppression", "log"), count=1)
        cursor = last[0][0] if last else "0-0"
        every = await r.hgetall(self._k("suppression"))
        return {a: json.loads(v)["reason"] for a, v in every.items()}, cursor

    async def changes(self, cursor: Any) -> Changes | None:
        r = self._r()
        log = self._k("suppression", "log")
        items = await r.xrange(log, min=cursor, count=10_000)
        if cursor != "0-0" and (not items or items[0][0] != cursor):
            return None  # the trim passed the cursor
        if items and items[0][0] == cursor:
            items = items[1:]
        last: dict[str, str | None] = {}
        for _, fields in items:
            last[fields["a"]] = fields["r"] or None
        return Changes(
            {a: r for a, r in last.items() if r is not None},
            frozenset(a for a, r in last.items() if r is None),
            items[-1][0] if items else cursor,
        )


def _dump(e: SuppressionEntry) -> str:
    return json.dumps(
        {
            "reason": e.reason,
            "created": e.created,
            "provider": e.provider,
            "message_id": e.message_id,
        }
    )


def _load(address: str, value: str) -> SuppressionEntry:
    d = json.loads(value)
    return SuppressionEntry(address, d["reason"], d["created"], d["provider"], d["message_id"])
