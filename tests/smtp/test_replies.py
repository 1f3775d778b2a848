"""One SMTP reply parser (``pipeline.parse_replies``): the mail transaction's stream and
``mailer doctor`` (which reads a server with no config) must read the same bytes the same
way, so doctor never calls a server fine that the provider would call malformed, or the
reverse. Each case is fed to both."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest
from aiosmtplib.errors import SMTPResponseException

from mailer.providers._smtp import doctor
from mailer.providers._smtp.pipeline import MAX_LINE, Reply, parse_replies


def _stream(data: bytes) -> Reply | None:
    """The first reply as the transaction's stream reads it, fed in 5-byte reads."""
    buffer, out = bytearray(), deque[Reply]()
    for i in range(0, len(data), 5):
        buffer.extend(data[i : i + 5])
        parse_replies(buffer, out, 1)
    return out[0] if out else None


def _doctor(data: bytes) -> Reply:
    """The first reply as doctor reads it, from a server that sent ``data`` and hung up."""

    async def read() -> Reply:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await doctor._reply(reader, timeout=1.0)

    return asyncio.run(read())


@pytest.mark.parametrize(
    ("data", "want"),
    [
        (b"220 mx.example.org ESMTP ready\r\n", Reply(220, "mx.example.org ESMTP ready")),
        (
            b"250-mx.example.org\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 AUTH PLAIN\r\n",
            Reply(250, "mx.example.org\nPIPELINING\nSIZE 10240000\nAUTH PLAIN"),
        ),
        (b"250\r\n", Reply(250, "")),
        (b"554 5.7.1 no\n", Reply(554, "5.7.1 no")),  # a bare LF ends a line too
        (b"250 first\r\n250 second\r\n", Reply(250, "first")),  # one reply, not two
    ],
)
def test_both_read_a_reply_alike(data: bytes, want: Reply) -> None:
    assert _stream(data) == want
    assert _doctor(data) == want
    assert want.lines == want.message.split("\n")


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"25 x\r\n",
        b"250x\r\n",
        b"250 " + b"x" * MAX_LINE + b"\r\n",
        (b"250-" + b"x" * 100 + b"\r\n") * 400,  # a reply without end
    ],
)
def test_both_refuse_a_bad_reply_with_the_same_words(data: bytes) -> None:
    with pytest.raises(SMTPResponseException) as refused:
        _stream(data)
    assert refused.value.code == -1
    with pytest.raises(doctor._NotSMTP) as not_smtp:
        _doctor(data)
    assert str(not_smtp.value) == f"not an SMTP reply ({refused.value.message})"


@pytest.mark.parametrize(
    "data", [b"", b"250-first\r\n", b"250-first\r\n250 sec", b"22", b"220 no end of line"]
)
def test_a_truncated_reply_is_no_reply_to_either(data: bytes) -> None:
    assert _stream(data) is None  # the stream keeps waiting for the rest
    with pytest.raises(ConnectionError, match="closed the connection"):
        _doctor(data)  # doctor's server hung up: no reply, not a guess at one


def test_doctor_shows_bytes_that_are_not_utf8_as_replacement_characters() -> None:
    data = b"220 caf\xe9 ready\r\n"
    stream = _stream(data)
    assert stream is not None and stream.code == 220
    assert _doctor(data) == Reply(220, "caf\ufffd ready")
