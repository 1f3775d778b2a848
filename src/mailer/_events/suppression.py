"""The suppression list: one list for every provider, checked before any I/O.

The store (SQLite, Postgres, Redis) is the truth; each Mailer keeps a local copy, a dict
of address to reason, and the check before every send reads only that, so a suppressed
recipient costs no round trip and touches no breaker. The copy follows the store:

* a write through this object (``add``, ``remove``, an ingested event) changes the copy at
  once, so an entry added in this process takes effect on the very next send;
* entries other processes wrote arrive by ``refresh``: a send that finds the copy older
  than ``suppression.refresh`` (1 s) starts a refresh in the background, and one that
  finds it older than twice that waits for it. So a copy is never more than 2 s behind
  the store when a send reads it, however idle the process was before.

Addresses are matched in the form :func:`normalize_recipient` gives (local part exact,
domain lowercase IDNA A-labels): what every entry is stored as, and what the Message's
own address parser already makes of every recipient.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence

import anyio
from sniffio import current_async_library

from .._errors import TransientError
from .._log import get_logger
from .._message import Message
from .config import SuppressionConfig
from .model import normalize_recipient
from .store import SuppressionEntry, SuppressionStore

__all__ = ["Suppression"]

log = get_logger("mailer.suppression")

_MAX_LIMIT = 10_000


class Suppression:
    """``mailer.suppression``: the list's API and the local copy the send check reads."""

    def __init__(
        self,
        config: SuppressionConfig,
        store: SuppressionStore,
        *,
        shared: bool = True,
        opener: Callable[[], object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        #: ``config.refresh``, read on every send
        self._refresh = float(config.refresh)
        #: whether other processes write to the store (not for the in-memory one)
        self._shared = shared
        self._clock = clock
        self._local: dict[str, str] = {}
        self._cursor: object = None
        self._loaded_at = -math.inf
        self._loaded = False
        self._lock: anyio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        #: writes made while a refresh is in flight, applied again after it
        self._overlay: dict[str, str | None] | None = None
        self._opened = False

    def __repr__(self) -> str:
        return f"<Suppression {self.store!r} on={list(self.config.on)}>"

    # -- the check (hot path) ----------------------------------------------------------

    def check(self, recipients: Iterable[str]) -> dict[str, str]:
        """The suppressed ones among ``recipients`` (normalised addresses, as a Message's
        ``envelope_recipients`` are), each with its reason. Reads the local copy only."""
        local = self._local
        if not local:
            return {}
        return {r: local[r] for r in recipients if r in local}

    def check_message(self, message: Message) -> dict[str, str]:
        """:meth:`check` of ``message``'s envelope recipients, without building that
        list (its dedupe costs a few µs a send, more than the look-ups): each address is
        looked up as it comes, and the list is built only when one is on the list."""
        local = self._local
        if not local:
            return {}
        envelope = message.envelope
        chosen = envelope.recipients if envelope is not None else None
        for addr in chosen if chosen is not None else (*message.to, *message.cc, *message.bcc):
            if addr.email in local:
                return self.check(message.envelope_recipients)
        return {}

    def due(self) -> bool:
        """Whether the copy is older than ``suppression.refresh``: only then has
        :meth:`ready` anything to do (a send skips awaiting it otherwise)."""
        return self._clock() - self._loaded_at >= self._refresh

    async def ready(self) -> None:
        """Make the local copy fresh enough for a send's check (see the module's doc)."""
        age = self._clock() - self._loaded_at
        if age < self._refresh:
            return
        if self._loaded and not self._shared:
            return
        if self._loaded and age < 2 * self._refresh and _on_asyncio():
            if self._task is None:
                self._task = asyncio.get_running_loop().create_task(self._background())
            return
        try:
            await self.refresh()
        except Exception as exc:
            if not self._loaded:  # no list at all: do not send blind
                raise TransientError(
                    f"the suppression list's store cannot be read ({type(exc).__name__}): "
                    "nothing was sent; try again later",
                    no_verdict=True,
                ) from None
            # A stale list beats no mail: send on the copy we have, and try the store
            # again in the background from the next send on.
            log.warning(
                "suppression list refresh failed (%s): sending on the local copy, %.0f s old",
                type(exc).__name__,
                self._clock() - self._loaded_at,
                extra={"event": "suppression_stale"},
            )
            self._loaded_at = self._clock() - self._refresh

    async def _background(self) -> None:
        try:
            await self.refresh()
        except Exception as exc:  # the next send retries, and waits once the copy is stale
            log.warning("suppression list refresh failed: %s: %s", type(exc).__name__, exc)
        finally:
            self._task = None

    async def refresh(self) -> None:
        """Bring the local copy up to date with the store now."""
        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            await self._open()
            started = self._clock()
            self._overlay = {}
            try:
                changes = await self.store.changes(self._cursor) if self._loaded else None
                if changes is None:
                    local, cursor = await self.store.snapshot()
                    self._local, self._cursor = local, cursor
                else:
                    for address in changes.removed:
                        self._local.pop(address, None)
                    self._local.update(changes.added)
                    self._cursor = changes.cursor
                for address, reason in self._overlay.items():
                    self._set(address, reason)
            finally:
                self._overlay = None
            self._loaded, self._loaded_at = True, started

    async def _open(self) -> None:
        if not self._opened:
            await self.store.open()
            self._opened = True

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)
        if self._opened:
            self._opened = False
            await self.store.close()

    def _set(self, address: str, reason: str | None) -> None:
        if reason is None:
            self._local.pop(address, None)
        else:
            self._local[address] = reason
        if self._overlay is not None:
            self._overlay[address] = reason

    # -- the API -----------------------------------------------------------------------

    async def add(
        self,
        address: str,
        reason: str = "manual",
        *,
        provider: str | None = None,
        message_id: str | None = None,
    ) -> bool:
        """Suppress ``address`` for every provider; False when it already was (the first
        entry is kept). Takes effect in this process at once."""
        entry = SuppressionEntry(
            normalize_recipient(address), _reason(reason), time.time(), provider, message_id
        )
        return bool(await self.add_entries([entry]))

    async def add_entries(self, entries: Sequence[SuppressionEntry]) -> list[str]:
        """Add several entries in one write; returns the addresses that were new."""
        if not entries:
            return []
        await self._open()
        added = await self.store.add(entries)
        self.remember(entries)
        return added

    def remember(self, entries: Sequence[SuppressionEntry]) -> None:
        """Put entries the store now holds into the local copy (at once, for this
        process's next send), even those another process added first."""
        for entry in entries:
            if entry.address not in self._local:
                self._set(entry.address, entry.reason)

    async def remove(self, address: str) -> bool:
        """Take ``address`` off the list; False when it was not on it."""
        key = normalize_recipient(address)
        await self._open()
        removed = await self.store.remove(key)
        self._set(key, None)
        return removed

    async def get(self, address: str) -> SuppressionEntry | None:
        """The entry for ``address``, read from the store."""
        await self._open()
        return await self.store.get(normalize_recipient(address))

    async def list(self, limit: int = 100, offset: int = 0) -> list[SuppressionEntry]:
        """Entries, oldest first, ``limit`` (at most 10,000) from ``offset``."""
        if not 0 < limit <= _MAX_LIMIT or offset < 0:
            raise ValueError(f"list(limit=1..{_MAX_LIMIT}, offset>=0)")
        await self._open()
        return await self.store.list(limit, offset)


def _reason(reason: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("a suppression reason is a non-empty string")
    return " ".join(reason.split())[:500]


def _on_asyncio() -> bool:
    try:
        return current_async_library() == "asyncio"
    except Exception:
        return False
