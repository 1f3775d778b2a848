"""RFC 2920 PIPELINING: one write per transaction, replies matched in order, same verdicts.

The servers are real (aiosmtpd) and offer PIPELINING when asked. Each records, for every
command, whether more input was already waiting when it handled it: for a pipelined
transaction MAIL and every RCPT have the next command behind them (they left in one
write, before any reply), and only DATA waits for the client. That is two round trips
per message on a warm connection (MAIL..DATA, then the payload), not 3 + recipients.
"""

from __future__ import annotations

import asyncio
import gc
import re
import socket
from collections import deque
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer import Message
from mailer._errors import (
    DeliveryUncertain,
    PermanentError,
    RecipientsRefused,
    TransientError,
)
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.pipeline import CHUNK, Reply, ReplyStream, parse_replies
from mailer.providers._smtp.wire import (
    _PAYLOADS,
    data_pieces,
    encode_data,
    message_payload,
)
from mailer.testing import SMTPTestServer

from .kit import SMUGGLING

Factory = Callable[..., SMTPTestServer]


def message(*to: str, text: str = "x") -> Message:
    return Message(
        sender="app@example.com", to=list(to or ["u@example.org"]), subject="Hi", text=text
    )


@pytest.fixture
def piped(smtp_server: Factory) -> SMTPTestServer:
    """A plaintext server that offers PIPELINING."""
    return smtp_server(pipelining=True)


def batches(server: SMTPTestServer) -> list[list[str]]:
    """The commands grouped by write: a group ends where nothing more was waiting."""
    groups: list[list[str]] = [[]]
    for verb, waiting in server.state.buffered:
        if verb == "DATA_END":
            continue
        groups[-1].append(verb)
        if not waiting:
            groups.append([])
    return [g for g in groups if g]


# -- on the wire -------------------------------------------------------------------------

pytestmark = pytest.mark.anyio


async def test_mail_rcpts_and_data_leave_in_one_write(piped: SMTPTestServer) -> None:
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        for i in range(3):
            result = await provider.send(message("a@example.org", "b@example.org", f"c{i}@x.org"))
            assert result.accepted == ["a@example.org", "b@example.org", f"c{i}@x.org"]
        pool = provider.pool
        assert pool is not None and pool.opened == 1
    assert batches(piped)[1:4] == [["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]] * 3
    assert len(piped.state.messages) == 3
    assert piped.state.messages[2].rcpt_tos == ["a@example.org", "b@example.org", "c2@x.org"]


async def test_without_pipelining_one_command_at_a_time(smtp_server: Factory) -> None:
    server = smtp_server(pipelining=False)
    async with SMTPProvider.from_config("p", server.config(pool=True)) as provider:
        await provider.send(message("a@example.org", "b@example.org"))
        await provider.send(message("c@example.org"))
    assert batches(server)[1:6] == [["MAIL"], ["RCPT"], ["RCPT"], ["DATA"], ["MAIL"]]
    assert len(server.state.messages) == 2


async def test_refused_rcpt_in_the_middle_is_a_partial_result(piped: SMTPTestServer) -> None:
    piped.state.fail("RCPT", "550 5.1.1 <bad@example.org>: no such user", match="bad@")
    result = await SMTPProvider.from_config("p", piped.config()).send(
        message("a@example.org", "bad@example.org", "c@example.org")
    )
    assert result.accepted == ["a@example.org", "c@example.org"]
    assert result.rejected == {"bad@example.org": "550 5.1.1 <bad@example.org>: no such user"}
    assert piped.state.messages[0].rcpt_tos == ["a@example.org", "c@example.org"]
    assert batches(piped)[1] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"]


async def _then_next_send_reuses(piped: SMTPTestServer, provider: SMTPProvider) -> None:
    """After a refusal the connection is in a known state: RSET leads the next group."""
    result = await provider.send(message("ok@example.org"))
    assert result.accepted == ["ok@example.org"]
    pool = provider.pool
    assert pool is not None and pool.opened == 1
    assert ["RSET", "MAIL", "RCPT", "DATA"] in batches(piped)
    assert piped.state.messages[-1].rcpt_tos == ["ok@example.org"]


async def test_refused_mail_reads_every_reply_then_rset(piped: SMTPTestServer) -> None:
    piped.state.fail("MAIL", "553 5.1.8 sender domain does not exist", times=1)
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        with pytest.raises(PermanentError) as info:
            await provider.send(message("a@example.org", "b@example.org"))
        assert (info.value.code, info.value.response) == (553, "5.1.8 sender domain does not exist")
        assert "MAIL FROM refused" in str(info.value)
        await _then_next_send_reuses(piped, provider)
    assert len(piped.state.messages) == 1


async def test_refused_data_then_rset(piped: SMTPTestServer) -> None:
    piped.state.fail("DATA", "451 4.3.0 try again later", times=1)
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        with pytest.raises(TransientError) as info:
            await provider.send(message())
        assert info.value.code == 451 and "DATA" in str(info.value)
        await _then_next_send_reuses(piped, provider)


async def test_all_recipients_refused_reads_data_reply(piped: SMTPTestServer) -> None:
    piped.state.fail("RCPT", "550 5.1.1 no such user", match="@nowhere.")
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        with pytest.raises(RecipientsRefused) as info:
            await provider.send(message("a@nowhere.example", "b@nowhere.example"))
        assert set(info.value.refused) == {"a@nowhere.example", "b@nowhere.example"}
        await _then_next_send_reuses(piped, provider)
    assert len(piped.state.messages) == 1


async def test_354_with_no_recipient_gets_a_lone_dot(piped: SMTPTestServer) -> None:
    """RFC 2920: a server may accept DATA even when no RCPT was; end it with "."."""
    piped.state.fail("RCPT", "550 5.1.1 no such user", match="@nowhere.")
    piped.state.fail("DATA", "354 go ahead anyway", times=1)
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        with pytest.raises(RecipientsRefused):
            await provider.send(message("a@nowhere.example"))
        await _then_next_send_reuses(piped, provider)
    assert len(piped.state.messages) == 1


async def test_421_at_rcpt_discards_the_connection(piped: SMTPTestServer) -> None:
    piped.state.fail("RCPT", "421 4.3.2 shutting down", match="b@", times=1)
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        with pytest.raises(TransientError) as info:
            await provider.send(message("a@example.org", "b@example.org"))
        assert info.value.code == 421
        await provider.send(message())
        pool = provider.pool
        assert pool is not None and pool.opened == 2
    assert len(piped.state.messages) == 1


@pytest.mark.parametrize("verb", ["RCPT", "DATA"])
async def test_drop_after_the_batch_is_transient(piped: SMTPTestServer, verb: str) -> None:
    piped.state.fail(verb, "drop")
    with pytest.raises(TransientError) as info:
        await SMTPProvider.from_config("p", piped.config()).send(message())
    assert type(info.value) is TransientError
    assert f"lost at {'RCPT TO' if verb == 'RCPT' else 'DATA'}" in str(info.value)
    assert piped.state.messages == []


async def test_drop_after_the_final_dot_is_uncertain(piped: SMTPTestServer) -> None:
    piped.state.fail("DATA_END", "drop")
    with pytest.raises(DeliveryUncertain, match=r"lost after the message was sent \(final '.'\)"):
        await SMTPProvider.from_config("p", piped.config()).send(message())


async def test_late_reply_after_a_timeout_is_never_matched(piped: SMTPTestServer) -> None:
    """RCPT answered after socket_timeout: the connection is discarded, not reused."""
    piped.state.fail("RCPT", "delay:1.0", times=1)
    async with SMTPProvider.from_config(
        "p", piped.config(pool=True, socket_timeout=0.3)
    ) as provider:
        with pytest.raises(TransientError, match=r"no reply within 0.3s|timed out"):
            await provider.send(message("first@example.org"))
        result = await provider.send(message("second@example.org"))
        assert result.accepted == ["second@example.org"]
        pool = provider.pool
        assert pool is not None and pool.opened == 2
    assert [m.rcpt_tos for m in piped.state.messages] == [["second@example.org"]]


async def test_late_verdict_after_the_dot_is_uncertain_and_not_reused(
    piped: SMTPTestServer,
) -> None:
    piped.state.fail("DATA_END", "delay:1.0", times=1)
    async with SMTPProvider.from_config(
        "p", piped.config(pool=True, socket_timeout=0.3)
    ) as provider:
        with pytest.raises(DeliveryUncertain):
            await provider.send(message("first@example.org"))
        result = await provider.send(message("second@example.org"))
        assert result.accepted == ["second@example.org"]
        pool = provider.pool
        assert pool is not None and pool.opened == 2


# -- the next message behind the payload ---------------------------------------------


async def test_next_send_follows_the_payload(piped: SMTPTestServer) -> None:
    """Queued sends on one connection: one round trip per message, all delivered once."""
    config = piped.config(pool=True, max_connections=1)
    async with SMTPProvider.from_config("p", config) as provider:
        results = await asyncio.gather(*(provider.send(message(f"u{i}@x.org")) for i in range(6)))
        pool = provider.pool
        assert pool is not None and pool.opened == 1 and pool.handoffs >= 4
    assert [r.accepted for r in results] == [[f"u{i}@x.org"] for i in range(6)]
    assert sorted(m.rcpt_tos[0] for m in piped.state.messages) == [f"u{i}@x.org" for i in range(6)]
    # the server found the next message's MAIL already waiting behind a payload's "."
    assert ("DATA_END", True) in piped.state.buffered


async def test_handed_off_connections_each_carry_the_next_group_in_one_write(
    piped: SMTPTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several connections hand off in one loop turn: each waiter takes the connection
    whose held payload is flushed next, so the next group leaves in the same write as a
    payload's "." rather than alone after it (the pool once paired the first waiter with
    the last hand-off: ~40 % of messages took two writes at 5 connections)."""
    writes: list[bytes] = []
    real_write = ReplyStream._flush

    def counted(self: ReplyStream) -> None:
        if self._held:
            writes.append(b"".join(self._held))
        real_write(self)

    monkeypatch.setattr(ReplyStream, "_flush", counted)
    config = piped.config(pool=True, max_connections=3)
    count = 60
    async with SMTPProvider.from_config("p", config) as provider:
        results = await asyncio.gather(
            *(provider.send(message(f"u{i}@x.org")) for i in range(count))
        )
        pool = provider.pool
        assert pool is not None and pool.opened == 3
        handoffs = pool.handoffs
    assert sorted(m.rcpt_tos[0] for m in piped.state.messages) == sorted(
        r.accepted[0] for r in results
    )
    # the held payloads (one per hand-off offered) left with the next group behind
    # them, in one write; only the last on each connection may have had none to carry
    assert handoffs >= count - 3 * 2 and len(writes) >= handoffs, (handoffs, len(writes))
    alone = [w for w in writes if b"MAIL FROM" not in w]
    assert len(alone) <= 3, (len(writes), len(alone))


async def test_lost_verdict_with_the_next_send_behind(piped: SMTPTestServer) -> None:
    """Only the message whose "." was written is uncertain; the one behind is retried."""
    piped.state.fail("DATA_END", "drop", times=1)
    config = piped.config(pool=True, max_connections=1)
    async with SMTPProvider.from_config("p", config) as provider:
        results = await asyncio.gather(
            *(provider.send(message(f"u{i}@x.org")) for i in range(4)), return_exceptions=True
        )
    uncertain = [r for r in results if isinstance(r, DeliveryUncertain)]
    assert len(uncertain) == 1, results
    delivered = [r for r in results if not isinstance(r, BaseException)]
    assert len(delivered) == 3
    got = sorted(m.rcpt_tos[0] for m in piped.state.messages)
    assert got == sorted(r.accepted[0] for r in delivered)  # each once, none twice


async def test_refused_verdict_with_the_next_send_behind(piped: SMTPTestServer) -> None:
    piped.state.fail("DATA_END", "554 5.7.1 rejected as spam", times=1)
    config = piped.config(pool=True, max_connections=1)
    async with SMTPProvider.from_config("p", config) as provider:
        results = await asyncio.gather(
            *(provider.send(message(f"u{i}@x.org")) for i in range(4)), return_exceptions=True
        )
        pool = provider.pool
        assert pool is not None and pool.opened == 1
    assert [type(r) for r in results].count(PermanentError) == 1
    assert len(piped.state.messages) == 3


async def test_cancelled_behind_a_slow_verdict(piped: SMTPTestServer) -> None:
    """A send cancelled while waiting behind the previous verdict does not spoil it."""
    piped.state.fail("DATA_END", "delay:0.6", times=1)
    config = piped.config(pool=True, max_connections=1)
    async with SMTPProvider.from_config("p", config) as provider:
        first = asyncio.ensure_future(provider.send(message("first@x.org")))
        second = asyncio.ensure_future(
            asyncio.wait_for(provider.send(message("second@x.org")), 0.3)
        )
        done = await asyncio.gather(first, second, return_exceptions=True)
        assert not isinstance(done[0], BaseException), done
        assert done[0].accepted == ["first@x.org"]
        assert isinstance(done[1], TimeoutError)
        result = await provider.send(message("third@x.org"))
        assert result.accepted == ["third@x.org"]
        pool = provider.pool
        assert pool is not None and pool.opened == 2 and pool.handoffs == 1
    assert sorted(m.rcpt_tos[0] for m in piped.state.messages) == ["first@x.org", "third@x.org"]


async def test_unsolicited_reply_discards_the_connection(piped: SMTPTestServer) -> None:
    """A reply nobody asked for must never answer the next command."""
    piped.state.fail("DATA_END", "250 2.0.0 queued\r\n250 2.0.0 surprise", times=1)
    async with SMTPProvider.from_config("p", piped.config(pool=True)) as provider:
        await provider.send(message("first@example.org"))
        await provider.send(message("second@example.org"))
        pool = provider.pool
        assert pool is not None and pool.opened == 2


@pytest.mark.parametrize("payload", SMUGGLING)
async def test_smuggling_sequences_never_end_the_data(
    piped: SMTPTestServer, payload: bytes
) -> None:
    provider = SMTPProvider.from_config("p", piped.config())
    conn = await provider.connect()
    try:
        assert conn.pipelining
        await conn.transaction("app@example.com", ["u@example.org"], data_pieces(payload))
    finally:
        await conn.quit()
    assert len(piped.state.messages) == 1
    assert piped.state.verbs().count("MAIL") == 1  # evil MAIL stayed inside DATA
    assert b"MAIL FROM:<evil@x>" in piped.state.messages[0].original_content


@pytest.mark.parametrize("tls", [None, "starttls"])
async def test_large_message_written_in_chunks(smtp_server: Factory, tls: str | None) -> None:
    server = smtp_server(tls=tls, pipelining=True)
    text = "0123456789 abcdefghijklmnopqrstuvwxyz\n" * 150_000  # ~5.7 MB
    msg = message(text=text)
    result = await SMTPProvider.from_config("p", server.config()).send(msg)
    assert result.accepted == ["u@example.org"]
    got = server.state.messages[0].original_content
    assert got == msg.as_bytes()


async def test_starttls_and_auth_then_pipelining(smtp_server: Factory) -> None:
    server = smtp_server(tls="starttls", pipelining=True)
    auth = {"user": "alice", "password": "s3cret-pass"}
    async with SMTPProvider.from_config("p", server.config(pool=True, auth=auth)) as provider:
        await provider.send(message("a@example.org", "b@example.org"))
        await provider.send(message("c@example.org"))
    assert batches(server)[-2:] == [["MAIL", "RCPT", "DATA"], ["QUIT"]]
    assert ["MAIL", "RCPT", "RCPT", "DATA"] in batches(server)
    assert len(server.state.messages) == 2


# -- pure --------------------------------------------------------------------------------


def _old_encode_data(payload: bytes) -> bytes:
    """The previous line-ending + dot-stuffing rules, as the reference."""
    text = re.sub(rb"\r\n|\r|\n", b"\r\n", payload)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"
    return re.sub(rb"(?m)^\.", b"..", text) + b".\r\n"


_PIECES = st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n"])).map(b"".join)


@given(st.binary(max_size=200) | _PIECES)
def test_pieces_are_the_same_bytes_as_before(payload: bytes) -> None:
    assert b"".join(data_pieces(payload)) == encode_data(payload) == _old_encode_data(payload)


def test_clean_payload_is_not_copied() -> None:
    payload = b"Subject: x\r\n\r\nhello\r\n" * 1000
    pieces = data_pieces(payload)
    assert pieces[0] is payload and pieces[1] == b".\r\n"


def test_payload_encoded_once_per_message() -> None:
    msg = message(text=".starts with a dot\n")
    first = message_payload(msg)
    assert message_payload(msg) is first
    assert b"\r\n..starts with a dot" in b"".join(first)
    key = id(msg)
    del msg
    gc.collect()
    assert key not in _PAYLOADS


def _parse(chunks: list[bytes], owed: int = 10) -> list[Reply]:
    buffer, out = bytearray(), deque[Reply]()
    for chunk in chunks:
        buffer.extend(chunk)
        parse_replies(buffer, out, owed - len(out))
    return list(out)


def test_parse_replies_in_order_across_reads() -> None:
    data = b"250 2.1.0 Ok\r\n550 5.1.1 no\r\n250-first\r\n250 second\r\n354 go\r\n"
    want = [
        Reply(250, "2.1.0 Ok"),
        Reply(550, "5.1.1 no"),
        Reply(250, "first\nsecond"),
        Reply(354, "go"),
    ]
    assert _parse([data]) == want
    assert _parse([data[i : i + 3] for i in range(0, len(data), 3)]) == want
    assert _parse([data], owed=2) == want[:2]


@pytest.mark.parametrize("bad", [b"hello\r\n", b"25 x\r\n", b"250" + b"x" * 9000 + b"\r\n"])
def test_parse_replies_refuses_malformed(bad: bytes) -> None:
    from aiosmtplib.errors import SMTPResponseException

    with pytest.raises(SMTPResponseException) as info:
        _parse([bad])
    assert info.value.code == -1


def test_parse_replies_bounds_an_endless_reply() -> None:
    from aiosmtplib.errors import SMTPResponseException

    with pytest.raises(SMTPResponseException):
        _parse([b"250-" + b"x" * 100 + b"\r\n"] * 400)


# -- a held payload: the next group in the same write ------------------------------------


async def _stream_pair() -> tuple[ReplyStream, socket.socket]:
    """A ReplyStream on a real loopback connection, and the peer's end (non-blocking)."""
    loop = asyncio.get_running_loop()
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    return ReplyStream.take_over(transport), peer


def _received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(65536)
    except BlockingIOError:
        return b""


async def test_held_payload_leaves_with_the_next_group_in_order() -> None:
    stream, peer = await _stream_pair()
    try:
        await stream.send_payload((b"body\r\n", b".\r\n"), timeout=1.0, hold=True)
        assert _received(peer) == b""  # held: nothing on the wire yet
        stream.send(b"MAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n", replies=3)
        stream.flush_soon()
        assert _received(peer) == b""
        await asyncio.sleep(0)  # the end of the loop turn
        got = b""
        for _ in range(50):  # bounded: the bytes are on loopback within a few turns
            got += _received(peer)
            if got.endswith(b"DATA\r\n"):
                break
            await asyncio.sleep(0.01)
        assert got == b"body\r\n.\r\nMAIL FROM:<a@x.org>\r\nRCPT TO:<b@x.org>\r\nDATA\r\n"
    finally:
        stream.close()
        peer.close()


async def test_closing_writes_a_held_payload_first() -> None:
    """Closed before the flush (a cancelled reader aborts): the "." leaves anyway, as it
    did when it was written at once, so a delivered message is never reported unsent."""
    stream, peer = await _stream_pair()
    try:
        await stream.send_payload((b"body\r\n.\r\n",), timeout=1.0, hold=True)
        stream.flush_soon()
        stream.close()
        got = b""
        for _ in range(50):
            chunk = _received(peer)
            got += chunk
            if got.endswith(b".\r\n"):
                break
            await asyncio.sleep(0.01)
        assert got == b"body\r\n.\r\n"
    finally:
        peer.close()


async def test_a_large_payload_is_never_held() -> None:
    """Only a payload that goes in one write is held: a chunked one keeps its order by
    being written as it goes."""
    stream, peer = await _stream_pair()
    try:
        big = b"x" * (CHUNK + 10) + b"\r\n"
        reader = asyncio.ensure_future(_drain(peer, len(big) + 3))
        await stream.send_payload((big, b".\r\n"), timeout=5.0, hold=True)
        assert stream._held is None
        assert await asyncio.wait_for(reader, 10) == big + b".\r\n"
    finally:
        stream.close()
        peer.close()


async def _drain(peer: socket.socket, size: int) -> bytes:
    got = b""
    for _ in range(1000):  # bounded in count and (with the sleeps) in time
        got += _received(peer)
        if len(got) >= size:
            break
        await asyncio.sleep(0.005)
    return got
