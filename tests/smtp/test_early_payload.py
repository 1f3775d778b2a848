"""The reader writes a payload the moment its 354 is parsed (``_exchange._Early``).

When one read brings message A's verdict and the 250/250/354 of B, pipelined behind it,
B's payload (and the group of the send after B) leaves from ``data_received``, before
A's coroutine is woken to settle A. These tests play the server over a real socket pair
with exact bytes, so which read brings which replies is fixed, not left to a server's
timing: each asserts what is on the wire at the moment A's transaction returns.

The guarantees of pipelining are the same as without the early write (the fault matrix
and test_pipelining.py hold them end to end): a refusal, a cancellation or a commit hook
that must be awaited leaves the payload to B's coroutine, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from mailer._attempt import AttemptContext, commit_hooks
from mailer._errors import RecipientsRefused
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.connection import Connection, Delivery
from mailer.providers._smtp.pipeline import ReplyStream
from mailer.providers._smtp.wire import data_pieces

pytestmark = pytest.mark.anyio

SENDER = "app@x.org"
BODY_A = b"Subject: A\r\n\r\nbody of A\r\n"
BODY_B = b"Subject: B\r\n\r\nbody of B\r\n"
WIRE_A = b"".join(data_pieces(BODY_A))
WIRE_B = b"".join(data_pieces(BODY_B))
#: one read: A's verdict, then B's replies up to its 354
A_VERDICT_AND_B_354 = b"250 2.0.0 A queued\r\n250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n"


def group(*rcpts: str) -> bytes:
    return (
        f"MAIL FROM:<{SENDER}>\r\n".encode()
        + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in rcpts)
        + b"DATA\r\n"
    )


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[tuple[Connection, socket.socket]]:
    """A pipelining Connection on a real socket pair, set up; and the server's end."""
    provider = SMTPProvider.from_config(
        "p", {"host": "127.0.0.1", "port": 2525, "ignore_tls": True}
    )
    conn = Connection(provider._settings)
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    conn.stream = ReplyStream.take_over(transport)
    conn.pipelining = True
    try:
        yield conn, peer
    finally:
        conn.abort()
        peer.close()


def received(peer: socket.socket) -> bytes:
    """What the client has written so far (a socket pair delivers at once)."""
    got = b""
    for _ in range(100):  # bounded: a few reads at most
        try:
            chunk = peer.recv(65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        got += chunk
    return got


async def until(peer: socket.socket, end: bytes) -> bytes:
    """Read until the bytes end with ``end``; bounded (2 s)."""
    got = b""
    for _ in range(200):
        got += received(peer)
        if got.endswith(end):
            return got
        await asyncio.sleep(0.01)
    raise AssertionError(f"the client wrote {got!r}, not ending with {end!r}")


async def a_then_b(
    conn: Connection,
    peer: socket.socket,
    b_rcpts: list[str],
    b: Callable[[], Awaitable[Delivery]] | None = None,
    *,
    rset: bool = False,
) -> tuple[asyncio.Future[tuple[Delivery, bytes]], list[asyncio.Future[Delivery]]]:
    """A sent; B started by A's hand-off (as the pool does), its group behind A's
    payload. Returns A (its delivery, and what was on the wire when its transaction
    returned) and B, once the server has A's payload and B's group."""
    behind: list[asyncio.Future[Delivery]] = []

    def handoff() -> None:
        started = b() if b is not None else conn.transaction(SENDER, b_rcpts, data_pieces(BODY_B))
        behind.append(asyncio.ensure_future(started))

    async def first() -> tuple[Delivery, bytes]:
        delivery = await conn.transaction(SENDER, ["a@x.org"], data_pieces(BODY_A))
        return delivery, received(peer)  # in the step that read A's verdict

    conn.on_handoff = handoff
    a = asyncio.ensure_future(first())
    assert await until(peer, b"DATA\r\n") == group("a@x.org")
    peer.send(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
    rset_line = b"RSET\r\n" if rset else b""
    assert await until(peer, b"DATA\r\n") == WIRE_A + rset_line + group(*b_rcpts)
    return a, behind


async def test_the_payload_behind_leaves_before_the_verdict_ahead_is_settled() -> None:
    async with session() as (conn, peer):
        a, behind = await a_then_b(conn, peer, ["b@x.org"])
        peer.send(A_VERDICT_AND_B_354)
        delivery, on_the_wire = await asyncio.wait_for(a, 2)
        assert delivery.accepted == ["a@x.org"] and delivery.response == "2.0.0 A queued"
        assert on_the_wire == WIRE_B  # written by the reader, before A's coroutine ran
        peer.send(b"250 2.0.0 B queued\r\n")
        b = await asyncio.wait_for(behind[0], 2)
        assert b.accepted == ["b@x.org"] and b.response == "2.0.0 B queued"
        assert conn.messages == 2  # counted once each, by the reader or the coroutine
        assert conn.usable and received(peer) == b""


async def test_a_single_send_writes_its_payload_from_the_read_of_its_354() -> None:
    """No send ahead: the same early write, and the reply stream stays in step."""
    async with session() as (conn, peer):
        task = asyncio.ensure_future(conn.transaction(SENDER, ["a@x.org"], data_pieces(BODY_A)))
        assert await until(peer, b"DATA\r\n") == group("a@x.org")
        peer.send(b"250 ok\r\n250 ok\r\n354 go\r\n")
        assert await until(peer, b".\r\n") == WIRE_A
        peer.send(b"250 queued\r\n")
        assert (await asyncio.wait_for(task, 2)).accepted == ["a@x.org"]
        assert conn.usable and conn.messages == 1


async def test_replies_split_over_reads_fire_once_all_have_come() -> None:
    async with session() as (conn, peer):
        a, behind = await a_then_b(conn, peer, ["b@x.org"])
        peer.send(A_VERDICT_AND_B_354[:-14])  # B's 354 not here yet
        delivery, on_the_wire = await asyncio.wait_for(a, 2)
        assert delivery.accepted == ["a@x.org"] and on_the_wire == b""
        peer.send(A_VERDICT_AND_B_354[-14:])
        assert await until(peer, b".\r\n") == WIRE_B
        peer.send(b"250 B queued\r\n")
        assert (await asyncio.wait_for(behind[0], 2)).accepted == ["b@x.org"]


async def test_a_refused_send_behind_never_writes_a_payload() -> None:
    """Every recipient refused: DATA is refused too, and no payload is ever written."""
    async with session() as (conn, peer):
        a, behind = await a_then_b(conn, peer, ["b@x.org"])
        peer.send(b"250 A queued\r\n250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 no one\r\n")
        delivery, on_the_wire = await asyncio.wait_for(a, 2)
        assert delivery.accepted == ["a@x.org"] and on_the_wire == b""
        with pytest.raises(RecipientsRefused):
            await asyncio.wait_for(behind[0], 2)
        assert received(peer) == b"" and conn.needs_rset  # RSET goes before the next MAIL


async def test_a_partly_refused_send_behind_is_written_by_its_coroutine() -> None:
    """One of two recipients refused: the coroutine sorts the replies, then writes."""
    async with session() as (conn, peer):
        a, behind = await a_then_b(conn, peer, ["b@x.org", "c@x.org"])
        peer.send(b"250 A queued\r\n250 ok\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n")
        _, on_the_wire = await asyncio.wait_for(a, 2)
        assert on_the_wire == b""  # not by the reader
        assert await until(peer, b".\r\n") == WIRE_B  # by B's coroutine
        peer.send(b"250 B queued\r\n")
        b = await asyncio.wait_for(behind[0], 2)
        assert b.accepted == ["c@x.org"] and list(b.rejected) == ["b@x.org"]


async def test_a_send_cancelled_behind_the_verdict_never_writes_its_payload() -> None:
    async with session() as (conn, peer):
        a, behind = await a_then_b(conn, peer, ["b@x.org"])
        behind[0].cancel()  # before its replies come
        peer.send(A_VERDICT_AND_B_354)
        delivery, on_the_wire = await asyncio.wait_for(a, 2)
        assert delivery.accepted == ["a@x.org"] and on_the_wire == b""
        with pytest.raises(asyncio.CancelledError):
            await behind[0]
        assert conn.broken  # its replies will never be read: the connection goes
        assert received(peer) == b""


class _Hook:
    """A commit hook (a ReadyHook): ``ready`` says whether it has work left."""

    def __init__(self, ready: bool) -> None:
        self._ready = ready
        self.awaited = 0

    def ready(self) -> bool:
        return self._ready

    async def __call__(self) -> None:
        self.awaited += 1


@pytest.mark.parametrize("ready", [True, False])
async def test_a_commit_hook_with_work_left_is_awaited_by_the_coroutine(ready: bool) -> None:
    """The reader crosses the commit point only when no hook has to be awaited; else B's
    coroutine awaits the hook, then writes its payload, as without the early write."""
    hook = _Hook(ready)
    attempt = AttemptContext("p")

    async with session() as (conn, peer):

        async def b_in_attempt() -> Delivery:
            with commit_hooks(hook):
                token = attempt.enter()
                try:
                    return await conn.transaction(SENDER, ["b@x.org"], data_pieces(BODY_B))
                finally:
                    AttemptContext.exit(token)

        a, behind = await a_then_b(conn, peer, ["b@x.org"], b_in_attempt)
        peer.send(A_VERDICT_AND_B_354)
        _, on_the_wire = await asyncio.wait_for(a, 2)
        assert on_the_wire == (WIRE_B if ready else b"")
        if not ready:
            assert await until(peer, b".\r\n") == WIRE_B
        peer.send(b"250 B queued\r\n")
        assert (await asyncio.wait_for(behind[0], 2)).accepted == ["b@x.org"]
        assert attempt.committed and hook.awaited == (0 if ready else 1)


async def test_the_rset_in_front_of_a_group_is_checked_before_the_early_write() -> None:
    """After a refused transaction the next group starts with RSET: its 250 is one of
    the replies that let the payload go."""
    async with session() as (conn, peer):

        def b_after_a_refusal() -> Awaitable[Delivery]:
            conn.needs_rset = True  # as a refused transaction ahead leaves it
            return conn.transaction(SENDER, ["b@x.org"], data_pieces(BODY_B))

        a, behind = await a_then_b(conn, peer, ["b@x.org"], b_after_a_refusal, rset=True)
        peer.send(b"250 A queued\r\n250 flushed\r\n250 ok\r\n250 ok\r\n354 go\r\n")
        _, on_the_wire = await asyncio.wait_for(a, 2)
        assert on_the_wire == WIRE_B  # by the reader, the RSET's 250 among its replies
        peer.send(b"250 B queued\r\n")
        assert (await asyncio.wait_for(behind[0], 2)).accepted == ["b@x.org"]
        assert conn.usable and not conn.needs_rset
