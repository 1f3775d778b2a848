"""Property tests: no input makes the rendered message say what the caller did not ask.

For any generated subject, header, display name, address and body, either the Message
is refused with MessageError, or its bytes have CRLF-only line endings, exactly the header
lines we wrote, no line that ends the DATA phase early once dot-stuffed, and an envelope
equal to the recipients given.
"""

from __future__ import annotations

import email
import email.policy
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer import Address, Message, MessageError

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# text biased towards the characters that break mail: CR, LF, NUL, dots, colons, quotes,
# angle brackets, encoded-word pieces, Unicode line separators
NASTY = st.sampled_from(
    ["\r", "\n", "\r\n", "\x00", ".", ":", "<", ">", '"', "@", ",", ";", "(", ")", "=?",
     "?=", "?q?", "?b?", "=0D", "=0A", "utf-8", "\u2028", "\x85", " ", "\t", "Bcc: x@evil.example",
     "\r\n.\r\n", "\n.\r\n", "\r.\r", "\r\r\n", "é", "ü"]
)  # fmt: skip
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=8)), max_size=12).map("".join)
LOCAL = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,10}", fullmatch=True)
DOMAIN = st.from_regex(r"[a-z0-9]{1,10}\.(org|example|test)", fullmatch=True)
ADDR = st.builds(lambda local, d: f"{local}@{d}", LOCAL, DOMAIN)
MAILBOX = st.one_of(ADDR, st.builds(lambda n, a: f"{n} <{a}>", TEXT, ADDR), TEXT)

_HEADER_LINE = re.compile(rb"^([!-9;-~]+):")


def header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        m.group(1).decode().lower()
        for line in head.split(b"\r\n")
        if (m := _HEADER_LINE.match(line))
    ]


def check_wire(m: Message, extra: set[str]) -> None:
    data = m.as_bytes()
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    assert b"\x00" not in data
    names = header_names(data)
    allowed = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
               "content-type", "content-transfer-encoding"} | extra  # fmt: skip
    assert set(names) <= allowed, names
    assert "bcc" not in names
    for once in ("from", "to", "subject", "date", "message-id"):
        assert names.count(once) <= 1
    # a line that is exactly "." would end DATA early; the SMTP layer dot-stuffs it, and
    # after stuffing no line may be "." (smuggling: <LF>.<CR><LF>, <CR>.<CR> need bare CR/LF)
    stuffed = [b"." + line if line.startswith(b".") else line for line in data.split(b"\r\n")]
    assert b"." not in stuffed
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert parsed["Message-ID"] == m.message_id


@SETTINGS
@given(subject=TEXT, value=TEXT, text=TEXT, html=TEXT)
def test_header_and_body_text(subject: str, value: str, text: str, html: str) -> None:
    try:
        m = Message(
            sender="a@example.com",
            to=["b@example.org"],
            subject=subject,
            headers={"X-Fuzz": value},
            text=text,
            html=html or None,
        )
    except MessageError:
        return
    check_wire(m, {"x-fuzz"})
    parsed = email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
    # the subject a reader sees is the subject we were given (modulo folding whitespace)
    assert " ".join(str(parsed["Subject"]).split()) == " ".join(subject.split())


@SETTINGS
@given(text=TEXT, html=TEXT)
def test_any_body_renders_safely(text: str, html: str) -> None:
    # bodies are refused only for NUL: line endings are normalised, lone dots stuffed
    if "\x00" in text + html:
        with pytest.raises(MessageError, match="NUL"):
            Message(sender="a@example.com", to=["b@example.org"], text=text, html=html or None)
        return
    m = Message(sender="a@example.com", to=["b@example.org"], text=text, html=html or None)
    check_wire(m, set())
    parsed = email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
    body = parsed.get_body(("plain",)) if text or not html else parsed.get_body(("html",))
    assert body is not None


@SETTINGS
@given(
    to=st.lists(MAILBOX, min_size=1, max_size=4),
    cc=st.lists(MAILBOX, max_size=2),
    bcc=st.lists(ADDR, max_size=2),
)
def test_recipients_envelope_equals_input(to: list[str], cc: list[str], bcc: list[str]) -> None:
    try:
        m = Message(sender="a@example.com", to=to, cc=cc, bcc=bcc, text="x")
    except MessageError:
        return
    expected = []
    for raw in (*to, *cc, *bcc):
        email_addr = Address.parse(raw).email
        if email_addr not in expected:
            expected.append(email_addr)
    assert m.envelope_recipients == expected
    # every envelope address is one the caller wrote, character for character (ASCII here)
    for addr in m.envelope_recipients:
        assert any(addr in raw for raw in (*to, *cc, *bcc))
        assert not re.search(r"[\x00-\x20<>(),;\"]", addr)
    check_wire(m, set())


@SETTINGS
@given(name=TEXT)
def test_display_names_never_add_recipients(name: str) -> None:
    try:
        m = Message(
            sender="a@example.com", to=[Address(name=name, email="b@example.org")], text="x"
        )
    except MessageError:
        return
    assert m.envelope_recipients == ["b@example.org"]
    check_wire(m, set())
    parsed = email.message_from_bytes(m.as_bytes(), policy=email.policy.default)
    to = parsed["To"].addresses  # type: ignore[union-attr]
    assert [a.addr_spec for a in to] == ["b@example.org"]
