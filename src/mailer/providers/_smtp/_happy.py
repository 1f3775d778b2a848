"""Happy Eyeballs (RFC 8305): every address of the host, IPv6 and IPv4, raced politely.

A host name often resolves to an IPv6 and an IPv4 address. Trying them one after the
other means a broken IPv6 route (packets silently dropped: no "unreachable", no reset)
costs the whole connection timeout before IPv4 is tried, the complaint of Nodemailer's
#1743 and #1791. RFC 8305 instead starts the next address's attempt when the previous
one has neither connected nor failed within the "Connection Attempt Delay" (250 ms,
its recommended value), alternates address families, and keeps the first connection
that succeeds, closing the others.

The result is a connected, non-blocking socket, not a transport: aiosmtplib takes it
(``sock=``) and runs implicit TLS on it with the configured server name, exactly as it
would on a socket it made itself; the proxy path hands over its socket the same way.

Addresses come from the running loop's ``getaddrinfo`` (the system resolver:
``/etc/hosts``, nsswitch, the OS's RFC 6724 ordering), asked once for both families.
``asyncio.staggered`` would do the race, but in Python 3.11 it can leave a socket that
connected while the race was being cancelled open, and its errors arrive as a bare
``OSError("Multiple exceptions")`` with no cause, which the classifier cannot read.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Any

__all__ = ["ATTEMPT_DELAY", "ConnectFailed", "connect", "describe", "interleave"]

#: RFC 8305 section 5: the recommended Connection Attempt Delay, in seconds
ATTEMPT_DELAY = 0.25

#: (family, type, proto, canonname, sockaddr), as getaddrinfo returns them
AddrInfo = tuple[int, int, int, str, Any]


class ConnectFailed(OSError):
    """Every address of the host failed. ``errors`` holds each address's failure;
    ``__cause__`` is the most telling one (a refusal before an unreachable route), so
    that the classifier, which follows causes, names it."""

    def __init__(self, host: str, errors: Sequence[tuple[str, OSError]]) -> None:
        shown = "; ".join(f"{address}: {describe(error)}" for address, error in errors)
        super().__init__(f"cannot connect to any address of {host!r} ({shown})")
        self.errors = list(errors)


def describe(error: OSError) -> str:
    """The system's words for an OSError ("Connection refused"), without asyncio's
    "Connect call failed (address)" wording around them."""
    if isinstance(error, ConnectFailed | socket.gaierror) or not error.errno:
        return str(error) or type(error).__name__
    return os.strerror(error.errno)


def interleave(infos: Sequence[AddrInfo]) -> list[AddrInfo]:
    """Duplicates dropped, families alternated, the resolver's first family first.

    RFC 8305 section 4 with a First Address Family Count of 1: the system resolver has
    already sorted by RFC 6724 preference, so its order is kept within each family.
    """
    seen: set[tuple[int, Any]] = set()
    by_family: dict[int, list[AddrInfo]] = {}
    for info in infos:
        key = (info[0], info[4])
        if key in seen:
            continue
        seen.add(key)
        by_family.setdefault(info[0], []).append(info)
    queues = list(by_family.values())
    out: list[AddrInfo] = []
    while queues:
        for queue in list(queues):
            out.append(queue.pop(0))
            if not queue:
                queues.remove(queue)
    return out


def _shown(info: AddrInfo) -> str:
    host, port = info[4][0], info[4][1]
    return f"[{host}]:{port}" if info[0] == socket.AF_INET6 else f"{host}:{port}"


async def _attempt(loop: asyncio.AbstractEventLoop, info: AddrInfo) -> socket.socket:
    family, type_, proto, _, address = info
    sock = socket.socket(family, type_, proto)
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


async def connect(
    host: str, port: int, *, delay: float = ATTEMPT_DELAY
) -> tuple[socket.socket, str]:
    """A socket connected to one of ``host``'s addresses, and that address (for logs).

    Raises ``socket.gaierror`` when the name does not resolve, :class:`ConnectFailed`
    when no address accepted. The caller bounds the whole race with its own timeout;
    cancelling it closes every socket of the race.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    candidates = interleave(infos)
    if not candidates:  # pragma: no cover - getaddrinfo raises instead
        raise socket.gaierror(socket.EAI_NONAME, f"no address for {host!r}")
    waiting = list(candidates)
    running: dict[asyncio.Task[socket.socket], AddrInfo] = {}
    errors: list[tuple[str, OSError]] = []
    winner: tuple[socket.socket, str] | None = None
    try:
        while waiting or running:
            if waiting:
                info = waiting.pop(0)
                running[loop.create_task(_attempt(loop, info))] = info
            # The next attempt starts after `delay`, or as soon as one fails.
            done, _ = await asyncio.wait(
                running, timeout=delay if waiting else None, return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                info = running.pop(task)
                error = task.exception()
                if error is None:
                    if winner is None:
                        winner = (task.result(), _shown(info))
                    else:
                        task.result().close()  # two at once: keep one
                elif isinstance(error, OSError):
                    errors.append((_shown(info), error))
                else:  # pragma: no cover - sock_connect raises OSError
                    raise error
            if winner is not None:
                return winner
    finally:
        try:
            await _close_all(running)
        except BaseException:
            if winner is not None:  # cancelled while reaping the losers: no one gets it
                winner[0].close()
            raise
    raise ConnectFailed(host, errors) from _telling(errors)


def _telling(errors: Sequence[tuple[str, OSError]]) -> OSError | None:
    """The failure that says most: a refusal (the server is there, the port is not)
    before an unreachable network (often just a missing IPv6 route)."""
    for _, error in errors:
        if isinstance(error, ConnectionRefusedError):
            return error
    return errors[0][1] if errors else None


async def _close_all(running: dict[asyncio.Task[socket.socket], AddrInfo]) -> None:
    """Cancel the attempts still running; close any that connected meanwhile."""
    if not running:
        return
    tasks = list(running)
    for task in tasks:
        task.cancel()
    # Shielded: when our caller is cancelled too, the losers are still reaped (each
    # closes its own socket when cancelled; one that won the race with the cancel
    # holds a connected socket that only we can close).
    gathered = asyncio.gather(*tasks, return_exceptions=True)
    try:
        results = await asyncio.shield(gathered)
    except asyncio.CancelledError:
        gathered.add_done_callback(_close_results)
        raise
    _close_sockets(results)


def _close_results(gathered: asyncio.Future[list[Any]]) -> None:
    if not gathered.cancelled():
        _close_sockets(gathered.result())


def _close_sockets(results: list[Any]) -> None:
    for result in results:
        if isinstance(result, socket.socket):
            result.close()
