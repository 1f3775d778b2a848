"""Raw MIME streamed as the request body: SES ``Content.Raw`` and Mailgun ``messages.mime``.

Real parts: the kit's HTTP server on 127.0.0.1 (it reads a Content-Length body, never a
chunked one), a raw asyncio server that hangs up in the middle of a body, dkimpy's
verifier, httpx-auth's own SigV4 as the reference. What is checked: a large message's
request is byte for byte what httpx makes for the whole message (the JSON around the
base64, the form around the MIME part) with ``Content-Length`` and no chunking; SigV4
signs the streamed body's hash exactly as httpx-auth signs the whole body; a retry and a
failover re-stream from the first byte; a server lost in the middle of the body is
classified as for a body sent whole. Small messages keep the whole-body path.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as _datetime
import hashlib
import json
import random
from collections.abc import AsyncIterator, Callable
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import httpx_auth._aws as aws
import pytest
from httpx_auth import AWS4Auth

from mailer import Attachment, DeliveryUncertain, Mailer, Message
from mailer._message.mime import Rendering
from mailer.providers._mailgun import MailgunProvider
from mailer.providers._ses import SESProvider
from mailer.providers.http.body import StreamedBody, base64_chunks
from mailer.testing import HTTPTestServer, serve

from ..smtp.kit import Keys

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024
SES = {"region": "eu-west-1", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "s3cr3t"}
MAILGUN = {"api_key": "key-mailgun-secret", "domain": "mg.example.com"}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "report.bin"
    path.write_bytes(random.Random(7).randbytes(2 * MIB + 5))
    return path


def large(path: Path, **kw: Any) -> Message:
    """A message with a streamed attachment and a streamed text part (1 Mi characters
    of lines, some starting with "." and with runs of spaces)."""
    base: dict[str, Any] = {
        "sender": "App <app@example.com>",
        "to": ["Ann <ann@example.org>"],
        "bcc": ["dan@example.org"],
        "subject": "Report",
        "text": "".join(f".line {i}   of  text\n" for i in range(60_000)),
        "attachments": [Attachment(path=path), Attachment(content=b"tiny", filename="t.txt")],
        "metadata": {"order": "42"},
    }
    return Message(**{**base, **kw})


def ses(server: HTTPTestServer, **config: Any) -> SESProvider:
    return SESProvider.from_config("ses", {**SES, "base_url": server.base_url, **config})


def mailgun(server: HTTPTestServer, **config: Any) -> MailgunProvider:
    return MailgunProvider.from_config(
        "mailgun", {**MAILGUN, "base_url": server.base_url, **config}
    )


def ses_reply(request: Any) -> Any:
    from mailer.testing import Reply

    return Reply(200, {"MessageId": "ses-1", "id": "mg-1"})


def whole_ses_body(provider: SESProvider, message: Message, raw: bytes) -> bytes:
    """What the whole-body path sends: the payload's JSON with the base64 of ``raw``."""
    payload = provider.payload(message)
    request = payload.request()
    assert request.body is not None and request.json is None
    head, tail = request.body.head, request.body.tail
    data = json.loads(head + b"X" + tail)  # the placeholder sat inside a JSON string
    data["Content"]["Raw"]["Data"] = base64.b64encode(raw).decode()
    return httpx.Request("POST", "https://x.invalid", json=data).read()


# ----------------------------------------------------------------------------------- SES


async def test_ses_streams_raw_json_with_its_length_and_signs_its_hash(
    big_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = large(big_file, dkim=keys.rsa())
    async with serve(respond=ses_reply) as server, ses(server) as provider:
        result = await provider.send(message)
    assert result.provider_message_id == "ses-1"
    [got] = server.log
    assert got.headers["content-length"] == str(len(got.body))
    assert "transfer-encoding" not in got.headers
    raw = base64.b64decode(got.json()["Content"]["Raw"]["Data"])
    keys.verify(raw)  # the signature made over the streamed bytes holds
    assert raw.endswith(message.as_bytes())
    assert got.json()["Destination"]["BccAddresses"] == ["dan@example.org"]
    # byte for byte the JSON httpx makes for the whole message
    assert got.body == whole_ses_body(ses(server), message, raw)
    # SigV4: the hash of the streamed body, signed as httpx-auth signs the whole body
    digest = got.headers["x-amz-content-sha256"]
    assert digest == hashlib.sha256(got.body).hexdigest()
    when = _datetime.datetime.strptime(got.headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    when = when.replace(tzinfo=_datetime.UTC)
    fixed = SimpleNamespace(now=lambda tz=None: when)
    clock = SimpleNamespace(datetime=fixed, timezone=_datetime.timezone)
    monkeypatch.setattr(aws, "datetime", clock)  # httpx-auth signs at the same second
    reference = httpx.Request(
        "POST",
        server.base_url + got.path,
        content=got.body,
        headers={"Content-Type": got.headers["content-type"]},
    )
    signer = AWS4Auth(access_id="AKIDEXAMPLE", secret_key="s3cr3t", region="eu-west-1",
                      service="ses")  # fmt: skip
    signed = next(signer.auth_flow(reference))
    assert got.headers["authorization"] == signed.headers["Authorization"]


async def test_a_large_text_only_message_goes_to_ses_as_streamed_raw() -> None:
    """No attachment, no header: Content.Simple for a small message, but a text part of
    1 Mi characters goes Raw, streamed, rather than as a JSON string built whole."""
    text = "".join(f"line {i} of a long report\n" for i in range(50_000))
    message = Message(sender="a@example.com", to=["b@example.org"], text=text, html="<p>x</p>")
    async with serve(respond=ses_reply) as server, ses(server) as provider:
        assert provider.build_request(message).body is not None
        await provider.send(message)
    content = server.log[0].json()["Content"]
    assert base64.b64decode(content["Raw"]["Data"]) == message.as_bytes()


async def test_a_small_ses_raw_message_keeps_the_whole_body() -> None:
    message = Message(
        sender="a@example.com",
        to=["b@example.org"],
        text="hi",
        attachments=[Attachment(content=b"x", filename="x.txt")],
    )
    async with serve(respond=ses_reply) as server, ses(server) as provider:
        assert provider.build_request(message).body is None
        await provider.send(message)
    raw = base64.b64decode(server.log[0].json()["Content"]["Raw"]["Data"])
    assert raw == message.as_bytes()


async def test_a_retry_and_a_failover_restream_the_body_from_its_first_byte(
    big_file: Path,
) -> None:
    """Mailgun first, 503 twice (a retry, then a failover), then SES, 503 then 200 (a
    retry): every request carries the whole message, from its first byte."""
    message = large(big_file)
    data = message.as_bytes()
    async with (
        serve(respond=ses_reply, script=["503"]) as ses_server,
        serve(respond=ses_reply, script=["503", "503"]) as mg_server,
    ):
        mailer = Mailer([mailgun(mg_server), ses(ses_server)], retry={"attempts": 2, "backoff": 0})
        async with mailer:
            result = await mailer.send(message)
    assert result.provider == "ses"
    # the form's boundary is new per request; the rest is the same, the message whole
    mg_bodies = [
        r.body.replace(r.headers["content-type"].split("boundary=")[1].encode(), b"B")
        for r in mg_server.log
    ]
    assert len(mg_bodies) == 2 and mg_bodies[0] == mg_bodies[1] and data in mg_bodies[0]
    assert len(ses_server.log) == 2 and ses_server.log[0].body == ses_server.log[1].body
    for request in ses_server.log:
        raw = base64.b64decode(request.json()["Content"]["Raw"]["Data"])
        assert raw == data


async def test_the_body_object_iterates_again_from_the_start() -> None:
    calls: list[int] = []

    def message() -> Any:
        calls.append(1)
        return iter([b"abc", b"defg"])

    body = StreamedBody(b"[", message, 7, b"]", "application/json")
    first = b"".join([c async for c in body])
    second = b"".join([c async for c in body])
    assert first == second == b"[abcdefg]" and len(calls) == 2 and body.length == 9
    pieces = [b"a", b"bc", b"", b"defgh", b"i" * 100_001]
    assert b"".join(base64_chunks(pieces)) == base64.b64encode(b"".join(pieces))


# ------------------------------------------------------------------------------- Mailgun


async def test_mailgun_sends_a_large_message_as_streamed_mime(big_file: Path) -> None:
    message = large(big_file, cc=["cat@example.org"], tags=["report"])
    async with serve(respond=ses_reply) as server, mailgun(server) as provider:
        await provider.send(message)
    [got] = server.log
    assert got.path == "/v3/mg.example.com/messages.mime"
    assert got.headers["content-length"] == str(len(got.body))
    assert "transfer-encoding" not in got.headers
    head = f"Content-Type: {got.headers['content-type']}\r\n\r\n".encode()
    form = BytesParser(policy=HTTP).parsebytes(head + got.body)
    parts = list(form.iter_parts())
    fields = [
        (p.get_param("name", header="content-disposition"), p.get_content())
        for p in parts
        if p.get_filename() is None
    ]
    assert fields == [
        ("to", "Ann <ann@example.org>"),
        ("to", "cat@example.org"),
        ("to", "dan@example.org"),
        ("o:tag", "report"),
        ("v:order", "42"),
        ("v:mailer_message_id", message.message_id),
    ]
    [mime] = [p for p in parts if p.get_filename() is not None]
    assert mime.get_filename() == "message.mime"
    # byte for byte the form httpx makes for the whole message, same boundary
    boundary = got.headers["content-type"].split("boundary=", 1)[1]
    whole = httpx.Request(
        "POST",
        "https://x.invalid",
        files=[
            *[(name, (None, value)) for name, value in fields],
            ("message", ("message.mime", message.as_bytes(), "message/rfc822")),
        ],
        headers={"Content-Type": got.headers["content-type"]},
    )
    assert boundary and got.body == whole.read()


async def test_a_small_mailgun_message_keeps_the_fields_form() -> None:
    message = Message(sender="a@example.com", to=["b@example.org"], text="hi")
    async with serve(respond=ses_reply) as server, mailgun(server) as provider:
        request = provider.build_request(message)
        assert request.body is None and request.path.endswith("/messages")
        await provider.send(message)
    assert server.log[0].path == "/v3/mg.example.com/messages"


# --------------------------------------------------------------------- failing mid-stream


@contextlib.asynccontextmanager
async def hangs_up_in_the_body(after: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A raw HTTP server that reads a request's head and ``after`` bytes of its body,
    then closes the connection; yields its base URL and the byte counts it read."""
    read: list[int] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for _ in range(100):
                if await asyncio.wait_for(reader.readline(), 10) in (b"\r\n", b""):
                    break
            read.append(len(await asyncio.wait_for(reader.readexactly(after), 10)))
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(session, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", read
    finally:
        server.close()


@pytest.mark.parametrize("make", [SESProvider, MailgunProvider], ids=["ses", "mailgun"])
async def test_a_server_lost_mid_body_is_classified_as_for_a_whole_body(
    big_file: Path, make: Callable[..., Any]
) -> None:
    """The body had started (the commit point): DeliveryUncertain, streamed or whole,
    since the API may act on what it read; the same class and wording either way."""
    small = Message(
        sender="a@example.com",
        to=["b@example.org"],
        text="x" * 200_000,  # whole, but longer than what the server reads
        attachments=[Attachment(content=b"x" * 500_000, filename="x.bin")],
    )
    errors = []
    for message in (large(big_file), small):
        async with hangs_up_in_the_body(after=64 * 1024) as (url, read):
            config = {**(SES if make is SESProvider else MAILGUN), "base_url": url}
            async with make.from_config("p", config) as provider:
                if message is not small:
                    assert isinstance(message.render(), Rendering)
                with pytest.raises(DeliveryUncertain) as info:
                    await provider.send(message)
                errors.append(info.value)
        assert read == [64 * 1024]
    streamed, whole = errors
    assert type(streamed) is type(whole)
    assert "after the request was sent" in str(streamed)
    assert "after the request was sent" in str(whole)


# -------------------------------------------------------------------------------- Postal


async def test_postal_raw_streams_a_large_message_as_the_json_it_would_build() -> None:
    """``endpoint = "raw"``: the base64 of a large rendering streamed inside the JSON,
    with its length, byte for byte the body built whole; a small one as before."""
    from mailer.providers._postal import PostalProvider

    def postal_reply(request: Any) -> Any:
        from mailer.testing import Reply

        return Reply(200, {"status": "success", "data": {"message_id": "p-1", "messages": {}}})

    text = "".join(f".line {i}   of  text\n" for i in range(60_000))
    message = Message(sender="app@example.com", to=["ann@example.org"], subject="s", text=text)
    small = Message(sender="app@example.com", to=["ann@example.org"], subject="s", text="hi")
    async with serve(respond=postal_reply) as server:
        config = {"server_key": "postal-key", "base_url": server.base_url, "endpoint": "raw"}
        async with PostalProvider.from_config("postal", config) as provider:
            assert provider.build_request(small).body is None
            await provider.send(message)
    [got] = server.log
    assert got.headers["content-length"] == str(len(got.body))
    assert "transfer-encoding" not in got.headers
    data = got.json()
    assert base64.b64decode(data["data"]) == message.as_bytes()
    whole = {**data, "data": base64.b64encode(message.as_bytes()).decode()}
    assert got.body == httpx.Request("POST", "https://x.invalid", json=whole).read()
