"""The fast renderer (mailer._mime) against the stdlib renderer, as its oracle.

Both renderings of the same message are parsed back with the stdlib parser, and every
thing a reader sees must be equal: headers (decoded), addresses, structure, bodies,
attachment names, types, ids and bytes.
"""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer import Address, Attachment, Message, MessageError
from mailer._message import mime as _mime
from mailer._message.render import render_stdlib

DATE = "Sun, 22 Nov 2026 00:00:00 +0000"
TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300
)
LINE = st.text(
    st.characters(min_codepoint=0x20, blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=120
)
NAMES = st.one_of(
    st.none(),
    LINE,
    st.sampled_from(
        ["Lee, Ann", 'Say "hi"', "Zoë Çelik", "a\\b", "=?utf-8?q?x?=", "O'Brien", "  spaced  "]
    ),
)


def parsed(data: bytes) -> EmailMessage:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def view(msg: EmailMessage) -> dict[str, Any]:
    """What a reader of the message sees, independent of encoding choices."""
    out: dict[str, Any] = {}
    for name in ("From", "To", "Cc", "Reply-To"):
        header = msg[name]
        out[name] = (
            None
            if header is None
            else [
                # runs of spaces in a name: ours keeps them (quoted), the stdlib collapses them
                (" ".join(a.display_name.split()), a.addr_spec)
                for a in header.addresses  # type: ignore[attr-defined]
            ]
        )
    out["Subject"] = " ".join(str(msg["Subject"]).split())
    out["Message-ID"] = msg["Message-ID"]
    out["X"] = {k: " ".join(str(v).split()) for k, v in msg.items() if k.lower().startswith("x-")}
    parts = []
    for part in msg.walk():
        ctype = part.get_content_type()
        item: dict[str, Any] = {"type": ctype}
        if not part.is_multipart():
            content = part.get_content()
            if isinstance(content, str):
                content = content.replace("\r\n", "\n").rstrip("\n")
            item.update(content=content, filename=part.get_filename(),
                        cid=part["Content-ID"], disp=part.get_content_disposition())  # fmt: skip
        parts.append(item)
    out["parts"] = parts
    return out


def fast_bytes(m: Message) -> bytes:
    """The fast renderer's output for a message without large attachments: one segment."""
    fast = _mime.render(m, DATE)
    assert fast is not None, "the fast renderer should handle this message"
    (data,) = fast[0]
    assert isinstance(data, bytes)
    return data


def both(m: Message) -> tuple[dict[str, Any], dict[str, Any]]:
    return view(parsed(fast_bytes(m))), view(parsed(render_stdlib(m, DATE)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=LINE, header=LINE, text=st.one_of(st.none(), TEXT), html=st.one_of(st.none(), TEXT),
       names=st.lists(NAMES, min_size=1, max_size=4))  # fmt: skip
def test_same_as_stdlib(
    subject: str, header: str, text: str | None, html: str | None, names: list[str | None]
) -> None:
    try:
        m = Message(
            sender=Address(name=names[0], email="app@example.com"),
            to=[Address(name=n, email=f"u{i}@example.org") for i, n in enumerate(names)],
            cc=["c@example.org"],
            reply_to=[Address(name=names[-1], email="r@example.org")],
            subject=subject,
            headers={"X-Custom": header},
            text=text,
            html=html,
        )
    except MessageError:
        return
    fast = view(parsed(fast_bytes(m)))

    # Addresses against the message itself: the stdlib is no oracle there. It renders a
    # To: header that parses back with a recipient missing when a display name holds
    # NBSP and astral characters (found by this test; the envelope was still right).
    # Names are compared without whitespace: Python's parser adds a space between
    # adjacent encoded-words that RFC 2047 decoders drop (see _mime._encoded_words).
    def names(v: list[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
        return None if v is None else [("".join(n.split()), e) for n, e in v]

    expected = {
        name: [("".join((a.name or "").split()), a.email) for a in addrs] if addrs else None
        for name, addrs in (
            ("From", [m.sender]),
            ("To", m.to),
            ("Cc", m.cc),
            ("Reply-To", m.reply_to),
        )
    }
    assert {k: names(fast[k]) for k in expected} == expected
    assert fast["Subject"] == " ".join(subject.split())
    # Unstructured headers against the input too: the stdlib's rendering of
    # "...\xa0𐀀𐀀 ¡" parses back without the space before "¡" (found by this test).
    assert fast["X"] == {"X-Custom": " ".join(header.split())}
    reference = view(parsed(render_stdlib(m, DATE)))
    for key in ("Message-ID", "parts"):
        assert fast[key] == reference[key]


def test_attachments_inline_and_unicode_names_same_as_stdlib() -> None:
    blob = bytes(range(256)) * 700  # several base64 chunks
    m = Message(
        sender="Zoë <z@example.com>",
        to=["u@example.org"],
        subject="Rapport trimestriel — Q3",
        text="voir pièce jointe\n.\nfin",
        html='<p>logo <img src="cid:logo@x"></p>',
        attachments=[
            Attachment(content=blob, filename="données été.bin"),
            Attachment(content=b"", filename="empty.txt"),
            Attachment(content=b"\x89PNG", filename="logo.png", inline=True, content_id="logo@x"),
            Attachment(content=b"a" * (57 * 1024), filename="exact-chunk.bin"),
        ],
    )
    fast, reference = both(m)
    assert fast == reference
    types = [p["type"] for p in fast["parts"]]
    assert types[:3] == ["multipart/mixed", "multipart/alternative", "text/plain"]
    assert "multipart/related" in types


@pytest.mark.parametrize(
    "kw",
    [
        {"text": "plain only"},
        {"html": "<b>html only</b>"},
        {"attachments": [Attachment(content=b"x", filename="only.bin")]},
        {"text": "中文内容" * 200},  # mostly non-ASCII: base64 body
        {"text": "x" * 3000},  # one long line: quoted-printable soft breaks
        {"text": "tab\there\r\nand\rcr"},
        {"subject": "word " * 60},  # folded
        {"subject": "x" * 120},  # long but under 998: one line
    ],
)
def test_shapes_same_as_stdlib(kw: dict[str, Any]) -> None:
    base: dict[str, Any] = {"sender": "a@example.com", "to": ["b@example.org"]}
    fast, reference = both(Message(**{**base, **kw}))
    assert fast == reference


def test_text_charsets_attached_messages_and_sender_same_as_stdlib() -> None:
    """Issue 21: text attachments' charset rule, 8-bit attached messages re-encoded and
    the Sender header come out the same from both renderers."""
    eight_bit = "Subject: Grüße\nContent-Type: text/plain; charset=utf-8\n\nKöln\n".encode()
    m = Message(
        sender="a@example.com",
        to=["b@example.org"],
        text="see",
        headers={"Sender": "Zoë <bounces@example.com>"},
        attachments=[
            Attachment(content="Grüße".encode(), filename="utf8.txt"),
            Attachment(content="Grüße".encode("latin-1"), filename="latin.txt"),
            Attachment(content=eight_bit, filename="fwd.eml", content_type="message/rfc822"),
        ],
    )
    fast, reference = both(m)
    assert fast == reference
    types = [p["type"] for p in fast["parts"]]
    assert types == [
        "multipart/mixed",
        "text/plain",
        "text/plain",
        "application/octet-stream",
        "message/rfc822",
        "text/plain",
    ]
    for data in (fast_bytes(m), render_stdlib(m, DATE)):
        msg = parsed(data)
        assert msg["Sender"] == "Zoë <bounces@example.com>"
        assert [p.get_content_charset() for p in msg.iter_attachments()][:2] == ["utf-8", None]


def test_unfoldable_header_falls_back_to_stdlib() -> None:
    m = Message(sender="a@example.com", to=["b@example.org"], text="x", subject="y" * 998)
    assert _mime.render(m, DATE) is None
    data = m.as_bytes()  # the stdlib path encodes it
    assert str(parsed(data)["Subject"]).replace(" ", "") == "y" * 998


def test_folding_keeps_lines_short_and_value_exact() -> None:
    subject = " ".join(f"word{i}" for i in range(40))
    data = Message(sender="a@example.com", to=["b@example.org"], subject=subject,
                   text="x").as_bytes()  # fmt: skip
    head = data.split(b"\r\n\r\n", 1)[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78
    assert str(parsed(data)["Subject"]) == subject


def test_a_header_of_78_characters_is_one_line_and_of_79_folds() -> None:
    """_fold writes a header that fits in 78 characters at once (its fast path) and folds
    from 79 on: the boundary, each side of it, the value exact after unfolding."""
    for size, lines in ((77, 1), (78, 1), (79, 2)):
        subject = ("word " * 20)[: size - len("Subject: ") - 1] + "z"
        rendered = _mime._unstructured("Subject", subject)
        assert rendered.endswith(b"\r\n") and rendered.count(b"\r\n") == lines, size
        assert len(rendered.split(b"\r\n")[0]) == (size if lines == 1 else 73), size
        assert rendered.replace(b"\r\n ", b" ") == f"Subject: {subject}\r\n".encode()
    assert _mime._fold("Subject", []) == b"Subject:\r\n"
    assert _mime._fold("Subject", [""]) == b"Subject: \r\n"


def test_attached_message_goes_unencoded() -> None:
    """RFC 2046 5.2.1: message/rfc822 is never base64 (readers would show the base64)."""
    inner = b"From: x@example.com\nSubject: the original\n\ninner body\n"
    att = Attachment(content=inner, filename="fwd.eml", content_type="message/rfc822")
    message = Message(sender="a@example.com", to="b@example.org", text="see", attachments=[att])
    (part,) = parsed(message.as_bytes()).iter_attachments()
    assert part["Content-Transfer-Encoding"] == "7bit"
    forwarded = part.get_payload(0)
    assert forwarded["Subject"] == "the original"
    assert forwarded.get_payload().strip() == "inner body"

    # issue 21 item 16: an 8-bit attached message is re-encoded to 7 bits inside
    eight_bit = Attachment(content="Subject: ü\n\nx".encode(), filename="f.eml",
                           content_type="message/rfc822")  # fmt: skip
    ok = Message(sender="a@example.com", to="b@example.org", text="s", attachments=[eight_bit])
    (part,) = parsed(ok.as_bytes()).iter_attachments()
    assert part["Content-Transfer-Encoding"] == "7bit"
    assert part.get_payload(0)["Subject"] == "ü"
    # 8-bit text that names no charset cannot be re-encoded faithfully: still refused
    unnamed = Attachment(
        content=b"Subject: x\n\n\xfc\n", filename="f.eml", content_type="message/rfc822"
    )
    bad = Message(sender="a@example.com", to="b@example.org", text="s", attachments=[unnamed])
    with pytest.raises(MessageError, match="message/rfc822"):
        bad.as_bytes()
