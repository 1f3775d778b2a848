"""Large messages: attachments streamed from the file (or from memory) in chunks.

Real parts: aiosmtpd servers on 127.0.0.1 (mailer.testing), files in tmp_path,
dkimpy's verifier against the DNS record the test serves it. What is checked: the bytes
the server got are the message's, byte for byte, on every attempt; a file that changed
between attempts is refused with a clear error and never sent; the chunked DKIM body
hash equals dkimpy's own canonicalization. Speed and memory are measured in
benchmarks/memory.py, not asserted here.
"""

from __future__ import annotations

import email
import os
import random
import threading
from collections.abc import Callable
from email import policy
from pathlib import Path
from typing import Any

import dkim
import pytest
from dkim.canonicalization import Relaxed

from mailer import Attachment, Message, MessageError
from mailer._message import dkim as _dkim
from mailer._message import mime as _mime
from mailer._message import render as _render
from mailer.providers._smtp import SMTPProvider
from mailer.providers._smtp.wire import declared_size, message_payload, payload_size
from mailer.testing import SMTPTestServer

from .kit import Keys, send_failing_over

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    """Just over 2 MiB of random bytes: streamed (>= 1 MiB), and 12 chunks."""
    path = tmp_path / "report.bin"
    path.write_bytes(random.Random(7).randbytes(2 * MIB + 1001))
    return path


def large(path: Path, **kw: Any) -> Message:
    base: dict[str, Any] = {
        "sender": "App <app@example.com>",
        "to": ["u@example.org"],
        "subject": "Report",
        # lines starting with "." in a bytes segment: dot-stuffed, and unstuffed back
        "text": ".first line\nsecond  line with   spaces \n.\n",
        "attachments": [Attachment(path=path), Attachment(content=b"tiny", filename="t.txt")],
    }
    base.update(kw)
    return Message(**base)


def received(server: SMTPTestServer, i: int = -1) -> bytes:
    content = server.state.messages[i].original_content
    assert isinstance(content, bytes)
    return content


def attachment_bytes(data: bytes, name: str) -> bytes:
    msg = email.message_from_bytes(data, policy=policy.default)
    for part in msg.walk():
        if part.get_filename() == name:
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return payload
    raise AssertionError(f"no attachment {name}")


# ------------------------------------------------------------------------------ rendering


def test_small_messages_stay_bytes_and_large_ones_stream(big_file: Path) -> None:
    small = Message(
        sender="a@example.com",
        to=["b@example.org"],
        text="hi",
        attachments=[Attachment(content=b"x" * 1000, filename="x.bin")],
    )
    assert isinstance(small.render(), bytes)
    msg = large(big_file)
    rendering = msg.render()
    assert isinstance(rendering, _mime.Rendering)
    assert [type(p).__name__ for p in rendering.pieces] == ["bytes", "Source", "bytes"]
    data = msg.as_bytes()
    assert len(data) == rendering.size
    assert attachment_bytes(data, "report.bin") == big_file.read_bytes()
    assert attachment_bytes(data, "t.txt") == b"tiny"
    assert msg.as_bytes() == data  # joined anew, from the one rendering
    # the wire payload: sizes known before reading the file (for SIZE=)
    pieces = message_payload(msg)
    wire = b"".join(p if isinstance(p, bytes) else b"".join(p.chunks()) for p in pieces)
    assert payload_size(pieces) == len(wire)
    assert declared_size(pieces) == len(data)  # RFC 1870: no terminator, no stuffed dots
    assert wire.endswith(b"\r\n.\r\n") and b"\r\n..first line" in wire


@pytest.mark.parametrize("by", ["path", "content"])
def test_streamed_rendering_is_byte_identical_to_the_in_memory_one(
    big_file: Path, monkeypatch: pytest.MonkeyPatch, by: str
) -> None:
    """Same boundary and Date given: the chunked encoder writes exactly what the one-pass
    encoder writes (line lengths, CRLFs, the last line without its CRLF)."""
    fixed = _render._utcnow()
    monkeypatch.setattr(_render, "_utcnow", lambda: fixed)

    def rendered(threshold: int) -> bytes | _mime.Rendering:
        monkeypatch.setattr(_mime, "STREAM_THRESHOLD", threshold)
        _mime._rng.seed(1)
        att = (
            Attachment(path=big_file)
            if by == "path"
            else Attachment(content=big_file.read_bytes(), filename="report.bin")
        )
        return large(big_file, attachments=[att], message_id="<same@example.com>").render()

    streamed, whole = rendered(1), rendered(1 << 40)
    assert isinstance(streamed, _mime.Rendering) and isinstance(whole, bytes)
    assert streamed.join() == whole


def test_a_file_that_changed_is_refused_before_and_during_a_pass(big_file: Path) -> None:
    msg = large(big_file)
    first = msg.as_bytes()  # a complete pass records the content's SHA-256
    stat = big_file.stat()
    # same size, same mtime, other bytes: only the hash can tell, at the end of a pass
    data = bytearray(big_file.read_bytes())
    data[-1] ^= 0xFF
    big_file.write_bytes(bytes(data))
    os.utime(big_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(MessageError, match=r"changed since the message was rendered.*SHA-256"):
        msg.as_bytes()
    # another size: refused by the cheap check, before anything is read
    big_file.write_bytes(b"short")
    rendering = msg.render()
    assert isinstance(rendering, _mime.Rendering)
    with pytest.raises(MessageError, match="size or modification time"):
        rendering.check()
    big_file.unlink()
    with pytest.raises(MessageError, match="cannot be read"):
        rendering.check()
    assert first  # the first pass went out whole


# ----------------------------------------------------------------------------------- SMTP


async def test_streamed_over_smtp_byte_for_byte(
    smtp_server: Callable[..., SMTPTestServer], big_file: Path
) -> None:
    servers = [smtp_server(), smtp_server(pipelining=True)]
    msg = large(big_file)
    for server in servers:  # one-by-one and pipelined; each attempt reads the file again
        async with SMTPProvider.from_config("s", server.config(auth=None)) as provider:
            await provider.send(msg)
    first, second = (received(s) for s in servers)
    assert first == second == msg.as_bytes()
    assert attachment_bytes(first, "report.bin") == big_file.read_bytes()
    size = [c for c in servers[0].state.commands if c.startswith("MAIL")]
    assert size and f"SIZE={len(msg.as_bytes())}" in size[0]


async def test_same_bytes_and_one_signature_across_failover(
    smtp_server: Callable[..., SMTPTestServer],
    big_file: Path,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """451 after the data on the first server, then the second: the same signed bytes,
    the body hash computed once, off the event loop's thread, and dkimpy verifies it."""
    failing, good = smtp_server(), smtp_server()
    failing.state.fail("DATA_END", "451 4.3.0 try again later")
    msg = large(big_file, dkim=keys.rsa())
    hashed_in: list[str] = []
    real = _dkim.body_hash

    def counting(chunks: Any) -> bytes:
        hashed_in.append(threading.current_thread().name)
        return real(chunks)

    monkeypatch.setattr(_dkim, "body_hash", counting)
    assert (await send_failing_over(failing, good, msg)).provider == "b"
    data = received(good)
    keys.verify(data)
    assert len(hashed_in) == 1 and hashed_in[0] != threading.main_thread().name
    signature = _dkim.signature(msg, msg.dkim)  # type: ignore[arg-type]
    assert data == signature + msg.as_bytes()


async def test_a_file_changed_between_attempts_is_never_sent(
    smtp_server: Callable[..., SMTPTestServer], big_file: Path
) -> None:
    """Same size and mtime, other content: the last chunk is held back, the data never
    ends (no truncated or different message is delivered), the session is dropped."""
    server = smtp_server()
    msg = large(big_file)
    async with SMTPProvider.from_config("s", server.config(auth=None)) as provider:
        await provider.send(msg)
        stat = big_file.stat()
        data = bytearray(big_file.read_bytes())
        data[5] ^= 0xFF
        big_file.write_bytes(bytes(data))
        os.utime(big_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        with pytest.raises(MessageError, match="SHA-256"):
            await provider.send(msg)
        big_file.write_bytes(b"now much shorter")
        mails = sum(c.startswith("MAIL") for c in server.state.commands)
        with pytest.raises(MessageError, match="size or modification time"):
            await provider.send(msg)
        # refused before MAIL: nothing of that attempt reached the server
        assert sum(c.startswith("MAIL") for c in server.state.commands) == mails
        await provider.send(Message(sender="a@example.com", to=["b@example.org"], text="ok"))
    assert len(server.state.messages) == 2  # the first and the last, nothing between


# ----------------------------------------------------------------------------------- DKIM


def test_chunked_relaxed_body_hash_equals_dkimpy() -> None:
    """RFC 6376 3.4.4 fed in random pieces == dkimpy's whole-body canonicalization."""
    rng = random.Random(3)
    alphabet = [b"a", b"b", b" ", b"\t", b"\r\n", b"\r\n\r\n", b"  \t ", b"Zz09+/="]
    bodies = [b"", b"\r\n", b"\r\n\r\n", b" \r\n\t\r\n", b"abc", b"abc  ", b"a \r\n\r\n b"]
    for _ in range(400):
        bodies.append(b"".join(rng.choice(alphabet) for _ in range(rng.randrange(60))))
    for body in bodies:
        hasher = _dkim.RelaxedBodyHash()
        i = 0
        while i < len(body):
            step = rng.randrange(1, 9)
            hasher.update(body[i : i + step])
            i += step
        import hashlib

        expected = hashlib.sha256(Relaxed.canonicalize_body(body)).digest()
        assert hasher.digest() == expected, body


def test_header_only_signing_matches_a_whole_message_verifier(keys: Keys) -> None:
    for options in (keys.rsa(), keys.ed()):
        data = b"From: a@example.com\r\nSubject: x\r\n\r\nbody  text \r\n\r\n\r\n"
        opts = _dkim.DKIMOptions(**options)
        signed = _dkim._sign(data, opts) + data
        assert dkim.verify(signed, dnsfunc=keys.dns)
        assert not dkim.verify(signed.replace(b"body", b"bodY"), dnsfunc=keys.dns)


# ---------------------------------------------------------------------------- file provider


async def test_the_file_provider_streams_and_leaves_nothing_half_written(
    big_file: Path, tmp_path: Path
) -> None:
    from mailer.providers._file import FileProvider

    folder = tmp_path / "eml"
    provider = FileProvider.from_config("file", {"directory": str(folder)})
    msg = large(big_file)
    assert isinstance(msg.render(), _mime.Rendering)
    result = await provider.send(msg)
    (written,) = folder.glob("*.eml")
    assert str(written) == result.response
    assert written.read_bytes() == msg.as_bytes()  # the streamed chunks, in order
    # the file changes under a second message: refused, and no .eml or .tmp left
    other = large(big_file, subject="Second")
    other.render()
    big_file.write_bytes(b"changed")
    with pytest.raises(MessageError, match="size or modification time"):
        await provider.send(other)
    assert sorted(p.name for p in folder.iterdir()) == [written.name]
