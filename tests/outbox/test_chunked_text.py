"""Large text and HTML parts through the outbox (issue 25 item 4): stored in chunks at
enqueue, loaded by the drain into spooled files (never a ``str``) and streamed from
them, byte for byte the rendering made at enqueue, on SQLite and Postgres, into a real
SMTP server on 127.0.0.1. Memory is measured in benchmarks/memory.py, not here."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from mailer import Mailer, Message, MessageError
from mailer._message.spooled import SPOOLED, SpooledText
from mailer._message.stream import STREAM_THRESHOLD, TextSource
from mailer._outbox.config import OutboxConfig
from mailer.testing import ScriptedProvider, SMTPTestServer

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
