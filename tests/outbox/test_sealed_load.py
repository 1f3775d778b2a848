"""The sealed load (mailer._outbox._load): a stored message is built without validating it
again when its seal holds, and is the same message as full validation makes; a row
without a seal, sealed for another shape, or edited after it was stored is validated in
full. End to end on both stores with a real SMTP server."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from mailer import Attachment, Mailer, Message, MessageError
from mailer._outbox import _chunked, _load
from mailer._outbox.worker import Outbox
from mailer.testing import SMTPTestServer

from .conftest import execute, fast_outbox, make_message, rows, smtp_entry

pytestmark = pytest.mark.anyio

PLAIN: list[dict[str, Any]] = [
    {"sender": "app@example.com", "to": ["u@example.org"], "subject": "s", "text": "t"},
    {
        "from": ("Zoë Ünal", "zoe@Bücher.example"),
        "to": ["A <a@example.org>", "b@example.org"],
        "cc": ["c@example.org"],
        "bcc": ["d@example.org"],
        "reply_to": ["r@example.org"],
        "subject": "Grüße =?utf-8?q?x?=",
        "text": "body\n" * 50,
        "html": "<p>hi</p>",
        "headers": {"X-Campaign": "spring"},
        "tags": ["welcome"],
        "metadata": {"user": "42"},
        "unsubscribe": "news",
        "provider_options": {"sink": {"ip_pool": "a", "n": [1, 2]}},
        "message_id": "<fixed@example.com>",
    },
    {
        "sender": "app@example.com",
        "to": ["u@example.org"],
        "template": "welcome",
        "template_data": {"name": "Ada", "items": [1, {"x": None}]},
        "unsubscribe": False,
    },
]


def _stored(data: dict[str, Any]) -> tuple[bytes, bytes | None]:
    item = Outbox.prepare(Message(**data))
    return item.message_json, item.digest


def _one_try(db_url: str, server: SMTPTestServer) -> dict[str, Any]:
    """One SMTP provider, one try a message, the outbox on ``db_url``."""
    return {
        "providers": [smtp_entry("s", server.port, 1)],
        "retry": {"attempts": 1},
        "outbox": fast_outbox(db_url),
    }


def _same(a: Message, b: Message) -> None:
    """Equal as the model compares them, and in every part a send reads."""
    assert a == b
    assert a.model_fields_set == b.model_fields_set
    assert a.model_dump_json() == b.model_dump_json()
    assert a.__pydantic_private__ == b.__pydantic_private__
    for name in ("sender", "to", "cc", "bcc", "reply_to"):
        for x, y in zip([getattr(a, name)], [getattr(b, name)], strict=True):
            assert type(x) is type(y) and x == y
    assert a.envelope_sender == b.envelope_sender


@pytest.mark.parametrize("data", PLAIN, ids=["minimal", "every-field", "template"])
def test_a_sealed_row_is_built_directly_and_is_the_validated_message(data: dict[str, Any]) -> None:
    message_json, digest = _stored(data)
    assert digest is not None and len(digest) == 16
    assert _load._construct(message_json) is not None  # the direct path applies
    _same(_load.load(message_json, digest), Message.model_validate_json(message_json))


def test_nested_models_take_the_full_path_and_load_the_same() -> None:
    """Attachments, DKIM options and an envelope carry derived state: validated."""
    data = {
        "sender": "app@example.com",
        "to": ["u@example.org"],
        "html": "<p>x</p>",
        "attachments": [Attachment(filename="a.txt", content=b"\x00\x01abc")],
        "envelope": {"sender": "bounce@example.com", "recipients": ["u@example.org"]},
    }
    message_json, digest = _stored(data)
    assert _load._construct(message_json) is None
    _same(_load.load(message_json, digest), Message.model_validate_json(message_json))


def test_a_row_edited_after_it_was_stored_is_validated_in_full() -> None:
    """An address rewritten to carry an SMTP command, the old seal kept: the seal fails,
    full validation refuses it."""
    message_json, digest = _stored(PLAIN[0])
    tampered = message_json.replace(b"u@example.org", b"u@example.org\\r\\nRCPT TO:<x@evil.test>")
    assert tampered != message_json
    with pytest.raises(MessageError):
        _load.load(tampered, digest)
    # edited but valid: validated, and the edit is what loads
    edited = message_json.replace(b'"subject":"s"', b'"subject":"edited"')
    assert _load.load(edited, digest).subject == "edited"


def test_rows_without_a_seal_or_from_another_shape_are_validated_in_full() -> None:
    message_json, _ = _stored(PLAIN[0])
    # an old row (stored before seals): NULL, validated
    _same(_load.load(message_json, None), Message.model_validate_json(message_json))
    with pytest.raises(MessageError):
        _load.load(message_json.replace(b"u@example.org", b"not an address"), None)
    # a JSON with fields missing (another version's shape) under a matching seal: the
    # direct path declines, validation fills the defaults
    data = json.loads(message_json)
    del data["tags"], data["bcc"]
    older = json.dumps(data).encode()
    assert _load._construct(older) is None
    _same(_load.load(older, _load.seal(older)), Message.model_validate_json(older))
    # a seal made for another message shape does not match
    assert _load.seal(message_json) != _other_key_seal(message_json)


def _other_key_seal(message_json: bytes) -> bytes:
    import hashlib

    return hashlib.blake2b(message_json, digest_size=16, key=b"another shape").digest()


async def test_sealed_unsealed_and_tampered_rows_end_to_end(
    db_url: str, smtp: Callable[..., SMTPTestServer]
) -> None:
    """Three rows through a real server: a sealed one and one whose seal was cleared (as
    a row stored before seals) are each delivered once with their stored bytes; one
    whose recipient was edited to carry an SMTP command, seal kept, fails validation and
    reaches nobody."""
    server = smtp()
    config = _one_try(db_url, server)
    async with Mailer.from_config(config) as m:
        ids = [await m.enqueue(make_message(i)) for i in range(3)]
        stored = {r["message_id"]: r for r in rows(db_url)}
        assert all(
            bytes(stored[i]["digest"]) == _load.seal(bytes(stored[i]["message"])) for i in ids
        )
        sqlite = db_url.startswith("sqlite")
        # the body's table: outbox_body on SQLite; execute() renames outbox on Postgres
        clear = "UPDATE outbox_body" if sqlite else "UPDATE outbox"
        execute(db_url, clear + " SET digest = NULL WHERE id = ?", stored[ids[1]]["id"])
        bad = bytes(stored[ids[2]]["message"]).replace(
            b"user2@example.org", b"user2@example.org\\r\\nRCPT TO:<x@evil.test>"
        )
        execute(db_url, clear + " SET message = ? WHERE id = ?", bad, stored[ids[2]]["id"])
        assert await m.drain(timeout=10) == {"sent": 2, "failed": 1}
    assert server.received() == {ids[0]: 1, ids[1]: 1}
    after = {r["message_id"]: r for r in rows(db_url)}
    assert after[ids[2]]["state"] == "failed" and "MessageError" in after[ids[2]]["last_error"]
    for i in ids[:2]:
        assert after[i]["state"] == "sent"


async def test_a_stored_rendering_edited_to_smuggle_a_message_is_refused(
    db_url: str, smtp: Callable[..., SMTPTestServer]
) -> None:
    """SMTP sends a rendering as it is (render() has checked it: CRLF only), and a row's
    stored rendering is that rendering read back. One edited after it was stored to hold
    a bare-LF end of data and a second transaction fails with a MessageError before any
    byte of it is sent; the row beside it is delivered once."""
    server = smtp()
    async with Mailer.from_config(_one_try(db_url, server)) as m:
        ids = [await m.enqueue(make_message(i)) for i in range(2)]
        stored = {r["message_id"]: r for r in rows(db_url)}
        raw = bytes(stored[ids[1]]["raw"])
        smuggled = raw.replace(b"\r\n\r\n", b"\r\n\r\nhi\n.\nMAIL FROM:<evil@evil.test>\r\n", 1)
        assert smuggled != raw
        table = "UPDATE outbox_body" if db_url.startswith("sqlite") else "UPDATE outbox"
        execute(db_url, table + " SET raw = ? WHERE id = ?", smuggled, stored[ids[1]]["id"])
        assert await m.drain(timeout=10) == {"sent": 1, "failed": 1}
    assert server.received() == {ids[0]: 1}
    after = {r["message_id"]: r for r in rows(db_url)}
    assert after[ids[1]]["state"] == "failed"
    assert "bare CR or LF" in after[ids[1]]["last_error"], after[ids[1]]["last_error"]
    assert after[ids[0]]["state"] == "sent"


async def test_an_outbox_made_before_seals_gains_the_column_and_its_rows_still_send(
    db_url: str, smtp: Callable[..., SMTPTestServer]
) -> None:
    """A table without the digest column (as an earlier version made it) holding a
    queued row: opening it adds the column, the old row (NULL seal) is validated and
    delivered, and a new enqueue is sealed."""
    server = smtp()
    config = _one_try(db_url, server)
    async with Mailer.from_config(config) as m:
        old = await m.enqueue(make_message(1))
    sqlite = db_url.startswith("sqlite")
    execute(db_url, "ALTER TABLE outbox_body DROP COLUMN digest" if sqlite else
            "ALTER TABLE outbox DROP COLUMN digest")  # fmt: skip
    assert "digest" not in rows(db_url)[0]
    async with Mailer.from_config(config) as m:
        new = await m.enqueue(make_message(2))
        by_id = {r["message_id"]: r for r in rows(db_url)}
        assert by_id[old]["digest"] is None and by_id[new]["digest"] is not None
        assert await m.drain(timeout=10) == {"sent": 2}
    assert server.received() == {old: 1, new: 1}


def test_a_chunked_rows_json_is_sealed_and_loads_as_validated() -> None:
    """A large text's row (its text in chunks, see _chunked): its JSON is sealed like
    any other and builds the message validation makes; the texts are joined after."""
    big = "line of a large text\n" * 60_000  # about 1.2 MiB: over the streaming threshold
    item = Outbox.prepare(
        Message(sender="app@example.com", to=["u@example.org"], subject="s", text=big),
        chunked=True,
    )
    assert _chunked.is_chunked(item.raw)
    assert item.digest == _load.seal(item.message_json)
    _same(
        _load.load(item.message_json, item.digest), Message.model_validate_json(item.message_json)
    )
