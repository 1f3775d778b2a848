"""Large text and HTML parts through the outbox (issue 25 item 4): stored in chunks at
enqueue, loaded by the drain into spooled files (never a ``str``) and streamed from
them, byte for byte the rendering made at enqueue, on SQLite and Postgres, into a real
SMTP server and the kit's HTTP server (SES raw, Mailgun MIME) on 127.0.0.1. Memory is
measured in benchmarks/memory.py, not here."""

from __future__ import annotations

import base64
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import Mailer, Message, MessageError
from mailer._message.spooled import SPOOLED, SpooledText
from mailer._message.stream import STREAM_THRESHOLD, TextSource
from mailer._outbox.config import OutboxConfig
from mailer.testing import Reply, ScriptedProvider, SMTPTestServer, serve

from .conftest import fast_outbox, smtp_entry

pytestmark = pytest.mark.anyio


def lines(size: int, words: list[str]) -> str:
    """About ``size`` characters of numbered lines, some starting with ".", CRLF and LF."""
    out, total, i = [], 0, 0
    while total < size:
        line = f"{'.' if i % 7 == 0 else ''}{i} {words[i % len(words)]}" + ("\r\n", "\n")[i % 2]
        out.append(line)
        total += len(line)
        i += 1
    return "".join(out)


ASCII = ["alpha", "beta  gamma", "delta\t", "x" * 70, "end   "]
ACCENTS = ["caf\u00e9 cr\u00e8me", "na\u00efve", "=3D", "<p>tags</p>", "plain words"]
JAPANESE = ["日本語のテキスト", "。こんにちは"]
SHAPES = {
    "7bit-text": {"text": lines(STREAM_THRESHOLD + 300_000, ASCII)},
    "qp-html": {"text": "short", "html": lines(STREAM_THRESHOLD + 200_000, ACCENTS)},
    "base64-text-and-7bit-html": {
        "text": lines(STREAM_THRESHOLD + 100_000, JAPANESE),
        "html": lines(STREAM_THRESHOLD + 5, ASCII),
    },
}


def encodings(message: Message) -> list[str]:
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    return [p.cte for p in rendering.pieces if isinstance(p, TextSource)]


@pytest.mark.parametrize("shape", list(SHAPES))
async def test_a_large_text_drains_byte_for_byte_from_spooled_files(
    smtp: Callable[..., SMTPTestServer],
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shape: str,
) -> None:
    """Every transfer encoding, text and HTML: the SMTP server gets the enqueue's
    rendering exactly, the drain never reads a text whole (SpooledText.read is not
    called), and no temporary file is left."""
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    reads: list[int] = []
    real_read = SpooledText.read

    def counted(self: SpooledText) -> str:
        reads.append(len(self))
        return real_read(self)

    monkeypatch.setattr(SpooledText, "read", counted)
    message = Message(sender="app@example.com", to="u@example.org", subject=shape, **SHAPES[shape])
    server = smtp()
    async with Mailer.from_config(
        {"providers": [smtp_entry("s", server.port, 1)], "outbox": fast_outbox(db_url)}
    ) as mailer:
        mid = await mailer.enqueue(message)
        assert await mailer.drain(timeout=60) == {"sent": 1}
    assert server.received() == {mid: 1}
    with server.state.lock:
        (envelope,) = server.state.messages
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    sent = envelope.original_content or envelope.content
    assert sent == rendering.join()
    assert (
        set(encodings(message))
        == {
            "7bit-text": {"7bit"},
            "qp-html": {"quoted-printable"},
            "base64-text-and-7bit-html": {"base64", "7bit"},
        }[shape]
    )
    assert reads == [] and list(spool.iterdir()) == []


async def test_a_provider_reading_the_text_gets_it_during_the_attempt(
    db_url: str,
) -> None:
    """A provider that puts the text in its request (a JSON API) reads ``message.text``
    and gets the whole text, read from the spooled file then; after the attempt the
    file is gone, and reading a body never read before says so."""
    text = lines(STREAM_THRESHOLD + 1000, ACCENTS)
    html = lines(STREAM_THRESHOLD + 2000, JAPANESE)
    kept: list[Message] = []
    seen: list[tuple[bool, str | None]] = []

    def look(sent: Message) -> None:
        kept.append(sent)
        seen.append((sent.__dict__["text"] is SPOOLED, sent.text))

    provider = ScriptedProvider("p", [look])
    message = Message(sender="a@example.com", to="u@example.org", text=text, html=html)
    async with Mailer(providers=[provider], outbox=OutboxConfig(**fast_outbox(db_url))) as mailer:
        await mailer.enqueue(message)
        assert await mailer.drain(timeout=60) == {"sent": 1}
    assert seen == [(True, text)]
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    assert provider.raw == [rendering.join()]
    (loaded,) = kept
    assert loaded.text == text  # kept once read
    assert loaded.__dict__["html"] is SPOOLED
    with pytest.raises(MessageError, match="released when its outbox attempt ended"):
        _ = loaded.html


def ses_or_mailgun_reply(request: object) -> Reply:
    return Reply(200, {"MessageId": "ses-1", "id": "mg-1"})


@pytest.mark.parametrize("api", ["ses", "mailgun"])
async def test_a_large_text_drains_to_ses_raw_and_mailgun_mime_from_spooled_files(
    db_url: str, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """The HTTP raw bodies stream the spooled texts too: the MIME inside SES's JSON or
    Mailgun's form is the enqueue's rendering byte for byte, and no text is read whole
    (the request is built without ``message.text``)."""
    reads: list[int] = []
    real_read = SpooledText.read

    def counted(self: SpooledText) -> str:
        reads.append(len(self))
        return real_read(self)

    monkeypatch.setattr(SpooledText, "read", counted)
    message = Message(sender="app@example.com", to="u@example.org", subject=api,
                      **SHAPES["base64-text-and-7bit-html"])  # fmt: skip
    async with serve(respond=ses_or_mailgun_reply) as server:
        config = {
            "ses": {"region": "eu-west-1", "access_key_id": "AKIDEXAMPLE",
                    "secret_access_key": "s3cr3t"},
            "mailgun": {"api_key": "key-mailgun-secret", "domain": "mg.example.com"},
        }[api]  # fmt: skip
        entry = {"type": api, "name": api, "config": {**config, "base_url": server.base_url}}
        async with Mailer.from_config(
            {"providers": [entry], "outbox": fast_outbox(db_url)}
        ) as mailer:
            await mailer.enqueue(message)
            assert await mailer.drain(timeout=60) == {"sent": 1}
    [got] = server.log
    assert got.headers["content-length"] == str(len(got.body))
    if api == "ses":
        sent = base64.b64decode(got.json()["Content"]["Raw"]["Data"])
    else:
        # the form's part named "message": its bytes, up to the form's next boundary
        boundary = got.headers["content-type"].split("boundary=", 1)[1].strip('"').encode()
        part = got.body.split(b"--" + boundary)[-2]
        head, _, sent = part.partition(b"\r\n\r\n")
        assert b'filename="message.mime"' in head
        sent = sent.removesuffix(b"\r\n")
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    assert sent == rendering.join() and reads == []
