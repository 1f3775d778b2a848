"""A large text kept in a temporary file (:class:`SpooledText`, what the outbox's drain
loads a large text or HTML part into): streamed by the same :class:`TextSource` as a
``str``, to the same bytes; and the Message that holds one keeps its public API
(``message.text`` reads it, ``==``, dumps and copies see the text)."""

from __future__ import annotations

import copy
import json
import pickle
import random

import pytest

from mailer import Message, MessageError
from mailer._message import spooled as _spooled
from mailer._message import stream as _stream
from mailer._message.spooled import SPOOLED, SpooledText, body_of, spool_into

ATOMS = ["a", "b ", " ", "\t", "\n", "\r\n", "\r", ".", ".\n", "é", "日本", "=", "x" * 80,
         "y" * 1000, "  \n", "From ", "==============="]  # fmt: skip


def spool(text: str, piece: int = 1000) -> SpooledText:
    """``text`` written in pieces of ``piece`` characters, as the store's chunks are."""
    out = SpooledText()
    for start in range(0, len(text), piece):
        out.append(text[start : start + piece].encode("utf-8"))
    return out


def test_a_spooled_text_streams_the_bytes_its_str_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Random texts over every awkward atom; the str and the file cut into slices of
    different sizes (1 to 200 characters, 1 to 300 bytes): the same transfer encoding,
    size, "." lines and bytes, with the pass made on either."""
    rng = random.Random(11)
    seen: set[str] = set()
    for trial in range(300):
        weights = [rng.random() for _ in ATOMS]
        text = "".join(rng.choices(ATOMS, weights, k=rng.randrange(1, 300)))
        if trial % 5 == 0:  # mostly not ASCII: base64
            text = "".join(rng.choices(["日本", "é", "\n", "a"], k=rng.randrange(1, 300)))
        monkeypatch.setattr(_stream, "TEXT_CHUNK", rng.choice([1, 7, 64, 200]))
        monkeypatch.setattr(_spooled, "_SLICE", rng.choice([1, 5, 64, 300]))
        held = _stream.TextSource(text)
        file = spool(text, rng.choice([1, 3, 100]))
        scanned = _stream.TextSource(file)
        assert (scanned.cte, scanned.size, scanned.dots) == (held.cte, held.size, held.dots)
        given = _stream.TextSource(file, scan=False)  # as the drain makes it
        given.cte, given.size, given.dots = held.cte, held.size, held.dots
        expected = b"".join(held.chunks())
        assert b"".join(scanned.chunks()) == expected == b"".join(given.chunks()), trial
        assert len(expected) == held.size
        marker = rng.choice(["==", "x" * 81, "From  ", "\u65e5"])
        assert scanned.contains(marker) == held.contains(marker), trial
        seen.add(held.cte)
        file.close()
    assert seen == {"7bit", "quoted-printable", "base64"}


def test_slices_end_after_a_newline_and_keep_a_long_line_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_spooled, "_SLICE", 8)
    text = "ab\ncd\r\n" + "z" * 30 + "\né\u65e5\nlast"
    pieces = list(spool(text, 4).slices())
    assert "".join(pieces) == text
    assert all(p.endswith("\n") for p in pieces[:-1]) and pieces[-1].endswith("last")
    assert "z" * 30 + "\n" in pieces  # longer than a slice: one piece, not cut


def test_what_is_not_whole_utf8_is_refused_and_a_closed_text_cannot_be_read() -> None:
    text = SpooledText()
    with pytest.raises(MessageError, match="not whole UTF-8"):
        text.append("é".encode()[:1])
    text.append(b"kept\n")
    assert (len(text), text.nbytes, text.read()) == (5, 5, "kept\n")
    text.close()
    text.close()  # idempotent
    with pytest.raises(MessageError, match="released when its outbox attempt ended"):
        text.read()


def loaded(text: str, html: str | None = None) -> Message:
    """A message as the drain loads it: its JSON without the body, the body spooled."""
    stored = Message(
        sender="a@example.com", to="b@example.org", subject="s", text="", html=html
    ).model_copy()
    spool_into(stored, {"text": spool(text)})
    return stored


def test_a_message_reads_its_spooled_body_once_when_asked() -> None:
    """``message.text`` gives the text (read from the file the first time, then kept);
    the renderer reaches the file without reading it; the other body is untouched."""
    text = "line\n" * 300_000
    message = loaded(text, html="<p>small</p>")
    body = body_of(message, "text")
    assert isinstance(body, SpooledText) and message.__dict__["text"] is SPOOLED
    assert body_of(message, "html") == message.html == "<p>small</p>"
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    assert [p.is_of(body) for p in rendering.pieces if isinstance(p, _stream.TextSource)] == [True]
    assert message.__dict__["text"] is SPOOLED  # rendering did not read it
    assert message.text == text and message.__dict__["text"] == text
    assert body_of(message, "text") == text  # kept: the file is not read again


def test_equality_dumps_repr_and_copies_see_the_text() -> None:
    text = "caf\u00e9 " * 250_000
    original = Message(sender="a@example.com", to="b@example.org", subject="s", text=text)
    message = loaded(text)
    message.__dict__["message_id"] = original.message_id
    assert "caf\u00e9" not in repr(message) and "SpooledText: 1250000 characters" in repr(message)
    assert message.__dict__["text"] is SPOOLED
    dumped = json.loads(message.model_dump_json())
    assert dumped["text"] == text
    assert Message.model_validate_json(message.model_dump_json()) == original
    copy = loaded(text).with_defaults({"cc": "c@example.org"})
    assert copy.cc and copy.__dict__["text"] is SPOOLED  # a copy keeps the spooled body
    assert copy.text == text
    fresh = loaded(text)
    fresh.__dict__["message_id"] = original.message_id
    assert fresh == original


def test_a_message_with_a_spooled_body_pickles_and_copies_as_its_text() -> None:
    """An error carrying the message crosses processes pickled (Celery, RQ): the body
    goes as its text (the placeholder is matched by identity, which a pickle loses), the
    rendering with it, and the original is left as it was."""
    text = "line\n" * 300_000
    message = loaded(text)
    rendering = message.render()
    assert not isinstance(rendering, bytes)
    back = pickle.loads(pickle.dumps(message))  # noqa: S301 - our own bytes
    assert message.__dict__["text"] is SPOOLED  # not read into the original
    assert back.__dict__["text"] == text and back.as_bytes() == rendering.join()
    copied = copy.deepcopy(message)
    assert copied.text == text and copied.as_bytes() == rendering.join()
