"""Large text and HTML parts: encoded slice by slice as they are sent, the same bytes.

Real parts: aiosmtpd servers on 127.0.0.1 (mailer.testing), a raw asyncio SMTP server
that hangs up in the middle of the data, dkimpy's verifier. What is checked: a streamed
text part is byte for byte what the whole-part renderer writes (every transfer encoding,
newline mix, "." lines, lines longer than a slice), its sizes are known before it is read
(SMTP's SIZE=, the dot-stuffed payload), it goes over SMTP as rendered, it is DKIM-signed
over the streamed bytes, its rendering happens in a worker thread, and a server lost in
the middle of the data is a failure before the commit point. Memory and loop stalls are
measured in benchmarks/memory.py, not asserted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import random
from collections.abc import AsyncIterator, Callable
from email import policy
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mailer import Attachment, Message, TransientError
from mailer._message import mime as _mime
from mailer._message import render as _render
from mailer._message import stream as _stream
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.wire import Stuffed, declared_size, message_payload, payload_size
from mailer.testing import SMTPTestServer

from .kit import Keys, send_failing_over

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
ATOMS = ["a", "b ", " ", "\t", "\n", "\r\n", "\r", ".", ".\n", "é", "日本", "=", "x" * 80,
         "y" * 1000, "  \n", "From ", "==============="]  # fmt: skip


@pytest.fixture
def fixed_date(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = _render._utcnow()
    monkeypatch.setattr(_render, "_utcnow", lambda: fixed)


def rendered(
    monkeypatch: pytest.MonkeyPatch, threshold: int, seed: int, **kw: Any
) -> bytes | _mime.Rendering:
    """The message ``kw`` rendered with this streaming threshold and boundary seed."""
    monkeypatch.setattr(_mime, "STREAM_THRESHOLD", threshold)
    _mime._rng.seed(seed)
    base: dict[str, Any] = {
        "sender": "a@example.com",
        "to": ["b@example.org"],
        "subject": "s",
        "message_id": "<same@example.com>",
    }
    return Message(**{**base, **kw}).render()


def streamed_and_whole(
    monkeypatch: pytest.MonkeyPatch, seed: int = 1, **kw: Any
) -> tuple[_mime.Rendering, bytes]:
    whole = rendered(monkeypatch, 1 << 40, seed, **kw)
    streamed = rendered(monkeypatch, 1, seed, **kw)
    assert isinstance(whole, bytes) and isinstance(streamed, _mime.Rendering)
    return streamed, whole


def big_text(size: int, *, seed: int = 2, accents: bool = False) -> str:
    """About ``size`` characters of lines, some starting with "." or holding runs of
    spaces and tabs (relaxed DKIM compresses them), CRLF and LF mixed."""
    rng = random.Random(seed)
    words = ["alpha", "beta  gamma", "delta\t", ".dot", "x" * 70, "end   "]
    if accents:
        words += ["été", "naïve", "日本語"]
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 12)))
        lines.append(line + rng.choice(["\n", "\r\n"]))
        total += len(line) + 1
    return "".join(lines)


def transfer_encodings(rendering: _mime.Rendering) -> list[str]:
    return [p.cte for p in rendering.pieces if isinstance(p, _stream.TextSource)]


# ------------------------------------------------------------------------------ rendering


def test_streamed_text_is_the_whole_renderers_bytes_on_generated_messages(
    monkeypatch: pytest.MonkeyPatch, fixed_date: None
) -> None:
    """Random texts over every awkward atom, cut into slices of 1 to 200 characters:
    the streamed rendering joins to exactly the whole rendering, and its size is right."""
    rng = random.Random(5)
    seen: set[str] = set()
    for trial in range(300):
        weights = [rng.random() for _ in ATOMS]
        text = "".join(rng.choices(ATOMS, weights, k=rng.randrange(1, 300)))
        monkeypatch.setattr(_stream, "TEXT_CHUNK", rng.choice([1, 7, 64, 200]))
        kw = rng.choice([{"text": text}, {"html": text}, {"text": text, "html": text[::-1]}])
        streamed, whole = streamed_and_whole(monkeypatch, trial, **kw)
        seen.update(transfer_encodings(streamed))
        data = streamed.join()
        assert len(data) == streamed.size, trial
        assert data == whole, trial
    assert seen == {"7bit", "quoted-printable", "base64"}


@pytest.mark.parametrize(
    ("kw", "cte"),
    [
        ({"text": big_text(3 * MIB)}, ["7bit"]),
        ({"html": big_text(2 * MIB, accents=True)}, ["quoted-printable"]),
        ({"text": "日本語のテキスト。\n" * 150_000}, ["base64"]),
        # 1.5 MiB of HTML on lines of 1,507 characters; the short text part stays bytes
        ({"text": "short", "html": ("<p>" + "x" * 1500 + "</p>\n") * 1000}, ["quoted-printable"]),
    ],
    ids=["7bit", "quoted-printable", "base64", "one-line-over-998"],
)
def test_large_parts_stream_by_default_with_the_same_bytes(
    monkeypatch: pytest.MonkeyPatch, fixed_date: None, kw: dict[str, Any], cte: list[str]
) -> None:
    """Default slices and threshold (1 Mi characters): a large part streams, a small
    one stays in the bytes segments, and the result is the whole renderer's."""
    whole = rendered(monkeypatch, 1 << 40, 3, **kw)
    streamed = rendered(monkeypatch, _stream.STREAM_THRESHOLD, 3, **kw)
    assert isinstance(whole, bytes)
    assert isinstance(streamed, _mime.Rendering) and transfer_encodings(streamed) == cte
    assert streamed.size == len(whole) and streamed.join() == whole
    parsed = email.message_from_bytes(whole, policy=policy.default)
    body = parsed.get_body(("html",) if "html" in kw else ("plain",))
    assert body is not None
    expected = (kw.get("html") or kw["text"]).replace("\r\n", "\n")
    got = body.get_content().replace("\r\n", "\n")  # the parser keeps the wire's CRLF
    assert got.rstrip("\n") == expected.rstrip("\n")


def test_the_smtp_payload_is_stuffed_and_sized_before_it_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = big_text(2 * MIB)
    msg = Message(sender="a@example.com", to=["b@example.org"], subject="s", text=text)
    data = msg.as_bytes()
    pieces = message_payload(msg)
    stuffed = [p for p in pieces if isinstance(p, Stuffed)]
    assert len(stuffed) == 1 and stuffed[0].added == data.count(b"\r\n.") > 1000
    counted = payload_size(pieces), declared_size(pieces)
    wire = b"".join(p if isinstance(p, bytes) else b"".join(p.chunks()) for p in pieces)
    assert counted == (len(wire), len(data))  # RFC 1870: no terminator, no stuffed dots
    assert wire == data.replace(b"\r\n.", b"\r\n..") + b".\r\n"


async def test_render_async_scans_a_large_part_on_the_loop_a_slice_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass that finds a large part's encoding and size gives the loop a turn after
    every slice, and the rendering takes the source it made (no second pass)."""
    passes: list[bool] = []
    real = _stream.TextSource.__init__

    def recording(self: _stream.TextSource, text: str, *, scan: bool = True) -> None:
        passes.append(scan)
        real(self, text, scan=scan)

    monkeypatch.setattr(_stream.TextSource, "__init__", recording)
    small = Message(sender="a@example.com", to=["b@example.org"], text="hi")
    assert isinstance(await small.render_async(), bytes) and passes == []
    html = big_text(MIB + 5, accents=True)  # quoted-printable: two passes over the slices
    msg = Message(sender="a@example.com", to=["b@example.org"], html=html)
    turns = 0

    async def other_task() -> None:
        nonlocal turns
        for _ in range(100_000):
            turns += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        rendering = await msg.render_async()
        tg.cancel_scope.cancel()
    assert isinstance(rendering, _mime.Rendering)
    [source] = [p for p in rendering.pieces if isinstance(p, _stream.TextSource)]
    assert source.cte == "quoted-printable" and passes == [False]  # made once, async
    assert turns >= 2 * len(html) // _stream.TEXT_CHUNK
    assert await msg.render_async() is rendering  # made once


def test_the_8bit_rendering_shares_the_text_sources(
    monkeypatch: pytest.MonkeyPatch, fixed_date: None
) -> None:
    """A message with an 8-bit attached message has a second rendering (for 8BITMIME):
    it takes the first one's text sources (no second pass) and is the whole one's."""
    inner = "Subject: Grüße\nContent-Type: text/plain; charset=utf-8\n\nKöln\n".encode()
    fwd = Attachment(content=inner, filename="fwd.eml", content_type="message/rfc822")
    kw: dict[str, Any] = {"text": big_text(MIB + 7), "attachments": [fwd]}

    def both(threshold: int) -> tuple[Any, Any]:
        monkeypatch.setattr(_mime, "STREAM_THRESHOLD", threshold)
        _mime._rng.seed(4)
        msg = Message(sender="a@example.com", to=["b@example.org"], subject="s",
                      message_id="<same@example.com>", **kw)  # fmt: skip
        return msg.render(), msg.render_8bit()

    first, eight = both(_stream.STREAM_THRESHOLD)
    whole_first, whole_eight = both(1 << 40)
    assert isinstance(first, _mime.Rendering) and isinstance(eight, _mime.Rendering)
    shared = [p for p in eight.pieces if isinstance(p, _stream.TextSource)]
    assert shared and all(any(p is q for q in first.pieces) for p in shared)
    assert first.join() == whole_first and eight.join() == whole_eight != whole_first


# ----------------------------------------------------------------------------------- SMTP


async def test_streamed_text_over_smtp_byte_for_byte(
    smtp_server: Callable[..., SMTPTestServer],
) -> None:
    servers = [smtp_server(), smtp_server(pipelining=True)]
    msg = Message(
        sender="a@example.com",
        to=["b@example.org"],
        subject="big",
        text=big_text(2 * MIB),
        html=big_text(MIB + 10, seed=9, accents=True),
    )
    for server in servers:
        async with SMTPProvider.from_config("s", server.config(auth=None)) as provider:
            await provider.send(msg)
    data = msg.as_bytes()
    for server in servers:
        content = server.state.messages[-1].original_content
        assert content == data
        mail = [c for c in server.state.commands if c.startswith("MAIL")]
        assert f"SIZE={len(data)}" in mail[0]


async def test_a_streamed_text_message_is_dkim_signed_over_the_streamed_bytes(
    smtp_server: Callable[..., SMTPTestServer], keys: Keys
) -> None:
    """451 after the data on the first server, then the second: the same signed bytes,
    and dkimpy verifies the signature over the whole received message."""
    failing, good = smtp_server(), smtp_server()
    failing.state.fail("DATA_END", "451 4.3.0 try again later")
    msg = Message(
        sender="a@example.com",
        to=["b@example.org"],
        subject="signed",
        text=big_text(MIB + 100, seed=4),
        html=big_text(MIB + 100, seed=5, accents=True),
        dkim=keys.rsa(),
    )
    assert (await send_failing_over(failing, good, msg)).provider == "b"
    first = failing.state.commands.count("DATA")
    assert first == 1
    received = good.state.messages[-1].original_content
    assert isinstance(received, bytes)
    keys.verify(received)
    assert received.endswith(msg.as_bytes())


@contextlib.asynccontextmanager
async def hangs_up_in_the_data(after: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A raw SMTP server that takes the envelope, answers DATA with 354, reads ``after``
    bytes of the message and closes the connection; yields its port and the byte counts
    it read per connection."""
    read: list[int] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 test ESMTP\r\n")
        try:
            for _ in range(20):
                line = await asyncio.wait_for(reader.readline(), 10)
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-test\r\n250 SIZE 100000000\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    got = len(await asyncio.wait_for(reader.readexactly(after), 10))
                    read.append(got)
                    break
                elif not line:
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], read
    finally:
        server.close()


async def test_a_server_lost_in_the_middle_of_streamed_text_is_a_failure_before_commit() -> None:
    """The data never ended: nothing can have been delivered, so it is a TransientError
    (safe to fail over), as for a whole message, and never DeliveryUncertain."""
    msg = Message(sender="a@example.com", to=["b@example.org"], subject="s", text=big_text(4 * MIB))
    async with hangs_up_in_the_data(after=256 * 1024) as (port, read):
        config = {"host": "127.0.0.1", "port": port, "ignore_tls": True, "pool": False}
        async with SMTPProvider.from_config("s", config) as provider:
            with pytest.raises(TransientError):
                await provider.send(msg)
    assert read == [256 * 1024]
