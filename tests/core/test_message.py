"""Message validation and rendering: every unsafe input is refused before any I/O."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any

import pytest

from mailer import Address, Attachment, Message, MessageError


def make(**kw: object) -> Message:
    base: dict[str, object] = {"sender": "App <app@example.com>", "to": ["u@example.org"]}
    base.update(kw)
    return Message(**base)


def parse(data: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


# -------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("raw", "name", "addr"),
    [
        ("u@example.org", None, "u@example.org"),
        ("Ann Lee <ann@example.org>", "Ann Lee", "ann@example.org"),
        ('"Lee, Ann" <ann@example.org>', "Lee, Ann", "ann@example.org"),
        ('"Say \\"hi\\"" <ann@example.org>', 'Say "hi"', "ann@example.org"),
        ("Ann <ann@bücher.example>", "Ann", "ann@xn--bcher-kva.example"),
        ("Zoë Çelik <z@EXAMPLE.org>", "Zoë Çelik", "z@example.org"),
        ('"a b"@example.org', None, '"a b"@example.org'),
        ("first.last+tag@sub.example.org", None, "first.last+tag@sub.example.org"),
        ("u@[192.0.2.1]", None, "u@[192.0.2.1]"),
    ],
)
def test_address_forms(raw: str, name: str | None, addr: str) -> None:
    a = Address.parse(raw)
    assert (a.name, a.email) == (name, addr)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # CVE-2023-27043 / GHSA-mm7p-fcc7-pg87 style routing ambiguities
        ('"a@evil.example x"@internal.example', "ambiguous"),
        ("alice@example.org)<bob@evil.example>", "special characters"),
        ("alice@example.org (comment) <bob@evil.example>", "special characters"),
        ("bob@evil.example, alice@example.org", "several addresses"),
        ("alice@example.org@evil.example", "exactly one '@'"),
        ("alice", "exactly one '@'"),
        ("<<a@b.example>>", "nested"),
        ("a@b.example>", "unbalanced"),
        ("a..b@example.org", "local part"),
        (".a@example.org", "local part"),
        ("a@-bad-.example", "host name"),
        ("a@exa_mple.org", "host name"),
        ("a@", "empty domain"),
        ('"ü"@example.org', "non-ASCII"),  # EAI is dot-atom only (tests/smtp/test_smtputf8.py)
        ("a@[300.1.1.1]", "literal"),
        # control characters, in every position
        ("a\r\n@example.org", "control"),
        ("a@example.org\r\nBcc: x@evil.example", "control"),
        ("Ann\n <ann@example.org>", "control"),
        ("a@exam\x00ple.org", "control"),
        ("a@example.org\u2028", "control"),
        ("Ann\x85 <ann@example.org>", "control"),
    ],
)
def test_address_refused(raw: str, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        Address.parse(raw)
    with pytest.raises(MessageError):
        make(to=[raw])


def test_address_object_and_tuple_forms() -> None:
    m = make(to=[Address(name="Ann", email="ann@example.org"), ("Bob", "bob@example.org")])
    assert [a.email for a in m.to] == ["ann@example.org", "bob@example.org"]
    with pytest.raises(MessageError, match="control"):
        Address(name="Ann\r\nBcc: x@evil.example", email="ann@example.org")
    with pytest.raises(MessageError):
        Address(name="Ann", email="ann@example.org\nx")


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(
    "subject",
    [
        "Hi\r\nBcc: victim@evil.example",
        "Hi\nBcc: victim@evil.example",
        "Hi\rthere",
        "nul\x00byte",
        "esc\x1b[31m",
        "line\u2028sep",
        # CVE-2024-6923: an encoded-word that decodes to a newline
        "=?utf-8?q?Hi=0D=0ABcc:_victim@evil.example?=",
        "=?utf-8?b?SGkNCkJjYzogdmljdGltQGV2aWwuZXhhbXBsZQ==?=",
        "prefix =?iso-8859-1?q?=0A?= suffix",
    ],
)
def test_subject_injection_refused(subject: str) -> None:
    with pytest.raises(MessageError, match="subject"):
        make(subject=subject)


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X-Ok": "a\r\nBcc: x@evil.example"}, "control"),
        ({"X-Ok": "=?utf-8?q?a=0ABcc:_x@evil.example?="}, "CVE-2024-6923"),
        ({"X Bad": "v"}, "header name"),
        ({"X-Bad:": "v"}, "header name"),
        ({"X-Bad\r\nBcc": "v"}, "header name"),
        ({"Bcc": "x@evil.example"}, "own fields"),
        ({"to": "x@evil.example"}, "own fields"),
        ({"Content-Type": "text/html"}, "own fields"),
        ({"Message-ID": "<x@y>"}, "own fields"),
    ],
)
def test_header_injection_refused(headers: dict[str, str], reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        make(headers=headers)


def test_other_fields_checked() -> None:
    with pytest.raises(MessageError, match="tag"):
        make(tags=["ok", "bad\ntag"])
    with pytest.raises(MessageError, match="metadata"):
        make(metadata={"k": "v\r\n"})
    with pytest.raises(MessageError, match="filename"):
        make(attachments=[Attachment(content=b"x", filename="a\r\n.txt")])
    with pytest.raises(MessageError, match="content type"):
        make(
            attachments=[Attachment(content=b"x", filename="a", content_type="text/plain\r\nX: y")]
        )
    with pytest.raises(MessageError, match="message_id"):
        make(message_id="<a@b>\r\nBcc: x@y")


def test_recipients_and_sender_required() -> None:
    with pytest.raises(MessageError, match="at least one recipient"):
        Message(sender="a@example.com", to=[], subject="x")
    m = Message(to=["u@example.org"], text="x")  # sender may come from Mailer defaults
    with pytest.raises(MessageError, match="no sender"):
        m.as_bytes()


def test_unknown_field_refused() -> None:
    with pytest.raises(MessageError, match="bogus"):
        make(bogus=1)


# ------------------------------------------------------------------------- rendering


def test_render_alternative_with_idn_and_unicode() -> None:
    m = make(
        to=["Zoë <z@bücher.example>"],
        cc=["c@example.org"],
        bcc=["hidden@example.org"],
        reply_to=["r@example.org"],
        subject="Grüße — ünïcödé",
        text="plain ✓",
        html="<p>html ✓</p>",
        headers={"X-Campaign": "spring"},
    )
    data = m.as_bytes()
    parsed = parse(data)
    assert parsed["Subject"] == "Grüße — ünïcödé"
    assert "z@xn--bcher-kva.example" in parsed["To"]
    assert parsed["Cc"] == "c@example.org"
    assert parsed["Reply-To"] == "r@example.org"
    assert parsed["Bcc"] is None and b"hidden@example.org" not in data
    assert parsed["X-Campaign"] == "spring"
    assert parsed["Message-ID"] == m.message_id
    assert parsed.get_content_type() == "multipart/alternative"
    assert parsed.get_body(("plain",)).get_content().strip() == "plain ✓"  # type: ignore[union-attr]
    assert parsed.get_body(("html",)).get_content().strip() == "<p>html ✓</p>"  # type: ignore[union-attr]
    assert m.envelope_recipients == [
        "z@xn--bcher-kva.example",
        "c@example.org",
        "hidden@example.org",
    ]
    assert data.isascii()  # 7bit: no 8BITMIME needed


def test_render_mixed_and_related(tmp_path: Path) -> None:
    f = tmp_path / "report.pdf"
    f.write_bytes(b"%PDF-1.4 fake")
    m = make(
        text="see attached",
        html='<p><img src="cid:logo@x"></p>',
        attachments=[
            f,
            Attachment(
                content=b"\x89PNG...", filename="logo.png", inline=True, content_id="logo@x"
            ),
            Attachment(content=b"a,b\n1,2\n", filename="data.csv"),
        ],
    )
    parsed = parse(m.as_bytes())
    assert parsed.get_content_type() == "multipart/mixed"
    types = [p.get_content_type() for p in parsed.walk()]
    assert "multipart/related" in types and "multipart/alternative" in types
    files = {p.get_filename(): p for p in parsed.walk() if p.get_filename()}
    assert set(files) == {"report.pdf", "logo.png", "data.csv"}
    assert files["report.pdf"].get_content_type() == "application/pdf"
    assert files["report.pdf"].get_content() == b"%PDF-1.4 fake"
    assert files["logo.png"]["Content-ID"] == "<logo@x>"
    assert files["data.csv"].get_content_type() == "text/csv"


def test_attachment_errors(tmp_path: Path) -> None:
    with pytest.raises(MessageError, match="exactly one"):
        Attachment(filename="x")
    with pytest.raises(MessageError, match="needs a filename"):
        Attachment(content=b"x")
    with pytest.raises(MessageError, match="not a readable file"):
        Attachment(path=tmp_path / "missing.bin")
    with pytest.raises(MessageError, match="inline attachments need an html"):
        make(text="x", attachments=[Attachment(content=b"x", filename="a.png", inline=True)])


@pytest.mark.parametrize(
    "body",
    [
        "a\n.\nb",  # a lone dot line: the SMTP layer dot-stuffs it
        "a\r\n.\r\nb",
        "a\n.\r\nMAIL FROM:<x@evil.example>\r\n",  # <LF>.<CR><LF> smuggling
        "a\r.\rb",  # <CR>.<CR>
        "a\r\r\n.\r\r\nb",
        "x" * 5000,  # a line over 998 octets
    ],
)
def test_body_line_endings_normalised(body: str) -> None:
    data = make(text=body).as_bytes()
    # every CR and every LF is part of a CRLF pair, and no line is over 998 octets
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def test_message_id_made_once_and_kept() -> None:
    m = make(text="x")
    assert m.message_id is not None and m.message_id.endswith("@example.com>")
    first = m.as_bytes()
    assert m.as_bytes() is first  # rendered once, cached
    filled = Message(to=["u@example.org"], text="x").with_defaults({"sender": "a@example.com"})
    assert filled.sender is not None and filled.sender.email == "a@example.com"
    again = m.with_defaults({"headers": {"X-App": "1"}})
    assert again.message_id == m.message_id
    assert make(message_id="abc@example.com").message_id == "<abc@example.com>"


def test_a_made_id_is_a_version_4_uuid_as_before() -> None:
    """The id's local part is made from ``os.urandom`` directly (branch pool5), not by
    ``uuid.uuid4()``: still a version-4, RFC 4122 UUID in 32 lowercase hex digits (the
    bits are set, not drawn), and a new one for every message."""
    import uuid

    seen = set()
    for _ in range(200):
        made = make(text="x").message_id
        assert made is not None and made.startswith("<") and made.endswith("@example.com>")
        local = made[1:].partition("@")[0]
        parsed = uuid.UUID(hex=local)
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
        assert parsed.hex == local
        seen.add(local)
    assert len(seen) == 200


def test_from_alias_and_frozen() -> None:
    m = Message(**{"from": "a@example.com", "to": "b@example.com", "text": "x"})
    assert m.sender is not None and m.sender.email == "a@example.com"
    with pytest.raises(Exception, match="frozen"):
        m.subject = "changed"  # type: ignore[misc]


def test_defaults_fill_only_empty_fields() -> None:
    m = make(reply_to=["mine@example.org"], headers={"X-A": "mine"})
    out = m.with_defaults(
        {"reply_to": ["default@example.org"], "headers": {"X-A": "d", "X-B": "d"}, "tags": ["t"]}
    )
    assert [a.email for a in out.reply_to] == ["mine@example.org"]
    assert out.headers == {"X-A": "mine", "X-B": "d"}
    assert out.tags == ["t"]


def test_defaults_copy_has_its_own_rendering_and_shares_the_id() -> None:
    from mailer._message import MAX_HEADERS, MessageDefaults

    defaults = MessageDefaults({"from": "app@example.com", "cc": ["copy@example.org"]})
    bare = Message(to=["u@example.org"], text="x")
    filled = bare.with_defaults(defaults)
    data = filled.as_bytes()
    assert b"From: app@example.com" in data and b"Cc: copy@example.org" in data
    # the id is fixed on the copy's first read, with the default sender's domain, and the
    # original reads the same one
    assert filled.message_id.endswith("@example.com>")
    assert bare.message_id == filled.message_id
    # a copy made after the original was rendered does not inherit that rendering
    m = make(text="x")
    m.as_bytes()
    tagged = m.with_defaults(MessageDefaults({"headers": {"X-App": "1"}}))
    assert b"X-App: 1" in tagged.as_bytes() and b"X-App" not in m.as_bytes()
    # the defaults' lists are not shared between the messages they fill
    other = bare.with_defaults(defaults)
    assert other.cc == filled.cc and other.cc is not filled.cc
    # the one rule spanning fields that filling can break: the merged header count
    many = make(text="x", headers={f"X-M{i}": "1" for i in range(MAX_HEADERS)})
    with pytest.raises(MessageError, match="headers with the Mailer's defaults"):
        many.with_defaults(MessageDefaults({"headers": {"X-Extra": "1"}}))


def test_json_round_trip_keeps_message_id_and_bytes() -> None:
    m = make(
        subject="Grüße",
        html='<img src="cid:i@x">',
        attachments=[
            Attachment(content=bytes(range(256)), filename="bin.dat"),
            Attachment(content=b"\x89PNG", filename="i.png", inline=True, content_id="i@x"),
        ],
        bcc=["hidden@example.org"],
    )
    again = Message.model_validate_json(m.model_dump_json())
    assert again == m
    assert again.message_id == m.message_id
    assert again.attachments[0].content == bytes(range(256))
    assert again.envelope_recipients == m.envelope_recipients


# -- the Message-ID: made on first read, never changed after ---------------------------


@pytest.mark.anyio
async def test_no_mailer_invalid_id_when_the_sender_comes_from_defaults() -> None:
    from mailer import Mailer
    from mailer.providers._memory import MemoryProvider

    memory = MemoryProvider.from_config("memory")
    mailer = Mailer([memory], defaults={"sender": "App <app@billing.example.com>"})
    message = Message(to="u@example.org", text="x")  # no sender, id not read
    async with mailer:
        result = await mailer.send(message)
    sent = memory.messages[0]
    assert sent.message_id.endswith("@billing.example.com>")  # type: ignore[union-attr]
    assert b"mailer.invalid" not in sent.as_bytes()
    # the caller's own object reads the id that went out, and it never changes again
    assert message.message_id == sent.message_id == result.message_id
    assert message.message_id == message.message_id


@pytest.mark.anyio
async def test_an_id_the_caller_read_before_sending_is_the_one_sent() -> None:
    from mailer import Mailer
    from mailer.providers._memory import MemoryProvider

    memory = MemoryProvider.from_config("memory")
    mailer = Mailer([memory], defaults={"sender": "app@billing.example.com"})
    message = Message(to="u@example.org", text="x")
    seen = message.message_id  # an outbox records it before sending
    async with mailer:
        await mailer.send(message)
    assert memory.messages[0].message_id == seen == message.message_id
    assert f"Message-ID: {seen}".encode() in memory.messages[0].as_bytes()


def test_the_id_is_made_once_even_when_read_from_two_threads() -> None:
    import threading

    for _ in range(20):
        original = Message(to="u@example.org", text="x")
        copy = original.with_defaults({"sender": "a@example.com"})
        seen: list[str | None] = []
        barrier = threading.Barrier(2)

        def read(m: Message, barrier: threading.Barrier, seen: list[str | None]) -> None:
            barrier.wait()
            seen.append(m.message_id)

        threads = [threading.Thread(target=read, args=(m, barrier, seen)) for m in (original, copy)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=5)
        assert len(seen) == 2 and seen[0] == seen[1]
        assert seen[0] is not None and seen[0].endswith("@example.com>")


def test_a_dump_fixes_the_id() -> None:
    m = Message(sender="a@example.com", to="u@example.org", text="x")
    dumped = m.model_dump()
    assert dumped["message_id"] == m.message_id
    assert Message.model_validate_json(m.model_dump_json()).message_id == m.message_id


def test_json_errors_are_message_errors_that_never_quote_the_body() -> None:
    secret = "the body of a private letter"
    for bad in (
        f'{{"to": "x", "text": "{secret}"}}',  # a bad address
        f"not json {secret}",
        f'{{"to": ["b@example.org"], "text": 5, "html": "{secret}"}}',
        f'{{"to": ["b@example.org"], "text": "{secret}", "attachments": '
        '[{"content": "!!not base64", "filename": "a.bin"}]}',
    ):
        with pytest.raises(MessageError) as info:
            Message.model_validate_json(bad)
        assert secret not in str(info.value)
        assert info.value.__context__ is None and info.value.__cause__ is None
        assert str(info.value).startswith("invalid message: ")


def test_json_naming_a_path_attachment_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("secret file")
    for attachments in (f'["{tmp_path / "a.txt"}"]', f'[{{"path": "{tmp_path / "a.txt"}"}}]'):
        head = '{"sender": "a@example.com", "to": ["b@example.org"], "attachments": '
        with pytest.raises(MessageError, match="given by path cannot come from JSON"):
            Message.model_validate_json(head + attachments + "}")
    # from Python, a path is still fine, and with_content() reads it into bytes
    m = Message(sender="a@example.com", to="b@example.org", attachments=[tmp_path / "a.txt"])
    stored = m.with_content()
    assert stored.attachments[0].content == b"secret file" and stored.attachments[0].path is None
    assert stored.message_id == m.message_id and stored.attachments[0].filename == "a.txt"
    assert Message.model_validate_json(stored.model_dump_json()) == stored
    assert stored.with_content() is stored


def test_a_fresh_private_state_shares_nothing_mutable() -> None:
    """with_defaults and without_recipients give their copy a shallow copy of one
    prepared private state (mailer._message.model.fresh_private): sound only while every
    private attribute's default is None, with no factory."""
    from mailer._message.model import fresh_private

    for name, attr in Message.__private_attributes__.items():
        assert attr.default is None and attr.default_factory is None, name
    assert fresh_private() == {n: None for n in Message.__private_attributes__}
    assert fresh_private() is not fresh_private()
    original = Message(to=["b@example.org"], subject="s", text="t")
    filled = original.with_defaults({"sender": "a@example.com"})
    assert filled is not original
    assert filled.__pydantic_private__ is not original.__pydantic_private__
    assert filled.as_bytes() != b"" and filled.message_id == original.message_id


def test_every_way_of_making_a_message_gets_its_own_fresh_private_state() -> None:
    """Message.model_post_init is replaced after the class is made (a copy of the prepared
    private state instead of pydantic's get_default() per attribute): sound only while
    pydantic-core calls the post-init method by name, for every way a message is made."""
    from mailer._message.model import _init_private, fresh_private

    assert Message.model_post_init is _init_private
    assert Message.__pydantic_post_init__ == "model_post_init"
    data = {"sender": "a@example.com", "to": ["b@example.org"], "subject": "s", "text": "t"}
    made = [
        Message(**data),
        Message.build(data),
        Message.model_validate(data),
        Message.model_validate_json(Message(**data).model_dump_json()),
        Message.model_construct(**data),
    ]
    privates = [m.__pydantic_private__ for m in made]
    assert all(p == fresh_private() for p in privates)
    assert len({id(p) for p in privates}) == len(privates)  # none shared
    first = made[0]
    assert first.as_bytes() and first.__pydantic_private__["_rendered"] is not None  # type: ignore[index]
    assert all(p["_rendered"] is None for p in privates[1:])  # type: ignore[index]


def test_the_send_path_copies_are_what_model_copy_makes() -> None:
    """with_defaults and without_recipients copy a message directly (mailer._message.model
    _copy), not through pydantic's model_copy: the copy must hold what model_copy's would,
    fields, fields set and extra values, with a private state of its own."""
    original = Message(to=["b@example.org", "c@example.org"], subject="s", text="t")
    filled = original.with_defaults({"sender": "a@example.com", "tags": ["x"]})
    reference = original.model_copy(update={"sender": filled.sender, "tags": ["x"]})
    dropped = filled.without_recipients({"c@example.org"})
    dropped_reference = filled.model_copy(update={"to": dropped.to})
    for copy, ref in ((filled, reference), (dropped, dropped_reference)):
        assert copy.__dict__ == ref.__dict__ and copy.__dict__ is not ref.__dict__
        assert copy.__pydantic_fields_set__ == ref.__pydantic_fields_set__
        assert copy.__pydantic_extra__ is None and ref.__pydantic_extra__ is None
        assert copy.model_dump(exclude_unset=True) == ref.model_dump(exclude_unset=True)
    assert filled.__pydantic_fields_set__ == {"to", "subject", "text", "sender", "tags"}
    assert "sender" not in original.__pydantic_fields_set__  # the original's set is not shared
    assert [a.email for a in dropped.to] == ["b@example.org"]
    assert [a.email for a in filled.to] == ["b@example.org", "c@example.org"]
    assert filled.as_bytes() and dropped.__pydantic_private__["_rendered"] is None  # type: ignore[index]
    assert dropped.message_id == filled.message_id == original.message_id


@pytest.mark.parametrize("field", ["sender", "to", "cc", "bcc", "reply_to", "envelope"])
def test_smtputf8_for_an_internationalized_address_in_any_field(field: str) -> None:
    """``smtputf8`` walks each address list in turn (branch pool5): an EAI address in any
    of them, the envelope's included, asks for SMTPUTF8; none, and it does not."""
    eai = "ü@example.org"
    fields: dict[str, Any] = {"sender": "a@example.com", "to": ["b@example.org"], "text": "x"}
    if field == "envelope":
        fields["envelope"] = {"recipients": [eai]}
    else:
        fields[field] = eai if field == "sender" else [eai]
    assert Message(**fields).smtputf8
    assert not Message(sender="a@example.com", to=["b@example.org"], cc=["c@example.org"]).smtputf8
