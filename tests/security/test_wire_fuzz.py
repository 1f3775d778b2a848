"""Injection and smuggling at the wire: generated messages sent by the real SMTP provider
to a capturing server (aiosmtpd). Per send, the server received exactly one message (or
none, when Message refused it with MessageError before any I/O), to exactly the given
recipients, with exactly the header lines we meant.

The rendering-only properties are in test_fuzz_message.py; the byte-level smuggling
sequences through a real server are in tests/smtp/test_delivery.py
(test_smuggling_sequences_never_end_the_data) and tests/smtp/test_pure.py.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer import ConfigError, Message, MessageError
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

NASTY = st.sampled_from(
    ["\r", "\n", "\r\n", "\x00", ".", ":", "<", ">", '"', "@", ",", ";", "(", ")", "=?",
     "?=", "?q?", "=0D=0A", "\u2028", " ", "Bcc: x@evil.example", "\r\n.\r\n", "\n.\r\n",
     "\r.\r", "\r\r\n", "RCPT TO:<evil@evil.example>", "é"]
)  # fmt: skip
TEXT = st.lists(st.one_of(NASTY, st.text(max_size=6)), max_size=10).map("".join)
LOCAL = st.from_regex(r"[a-z0-9][a-z0-9.+_-]{0,8}", fullmatch=True)
DOMAIN = st.from_regex(r"[a-z0-9]{1,8}\.(org|test)", fullmatch=True)
ADDR = st.builds(lambda local, d: f"{local}@{d}", LOCAL, DOMAIN)
MAILBOX = st.one_of(ADDR, st.builds(lambda n, a: f"{n} <{a}>", TEXT, ADDR), TEXT)
ALLOWED = {"from", "to", "cc", "reply-to", "subject", "date", "message-id", "mime-version",
           "content-type", "content-transfer-encoding", "x-fuzz"}  # fmt: skip
_HEADER = re.compile(rb"^([!-9;-~]+):")


@pytest.fixture(scope="module")
def server() -> Iterator[Any]:
    s = SMTPTestServer(auth=False).start()
    yield s
    s.stop()


def send_and_check(server: Any, build: Any) -> None:
    """Build a message (may be refused), send it for real, check what the server got."""
    state = server.state
    before_msgs, before_mail = len(state.messages), state.verbs().count("MAIL")
    try:
        message = build()
    except MessageError:
        return  # refused before any I/O
    provider = SMTPProvider.from_config("p", server.config())
    try:
        asyncio.run(provider.send(message))
    except MessageError:
        assert len(state.messages) == before_msgs
        return
    assert server.wait_for(lambda: len(state.messages) == before_msgs + 1)
    assert state.verbs().count("MAIL") == before_mail + 1  # one transaction, no smuggled one
    got = state.messages[-1]
    assert got.rcpt_tos == message.envelope_recipients
    assert got.mail_from == message.envelope_sender
    content: bytes = got.original_content
    head = content.split(b"\r\n\r\n", 1)[0]
    names = [
        m.group(1).decode().lower() for line in head.split(b"\r\n") if (m := _HEADER.match(line))
    ]
    assert set(names) <= ALLOWED, names
    assert "bcc" not in names
    assert names.count("message-id") == 1
    assert str(message.message_id).encode() in head


@SETTINGS
@given(
    subject=TEXT,
    value=TEXT,
    text=TEXT,
    to=st.lists(MAILBOX, min_size=1, max_size=3),
    bcc=st.lists(ADDR, max_size=2),
)
def test_generated_messages_on_the_wire(
    server: Any, subject: str, value: str, text: str, to: list[str], bcc: list[str]
) -> None:
    send_and_check(
        server,
        lambda: Message(
            sender="app@example.com",
            to=to,
            bcc=bcc,
            subject=subject,
            headers={"X-Fuzz": value},
            text=text,
        ),
    )


# Known real cases: each is refused, or delivered to exactly the intended envelope.
KNOWN = {
    # CVE-2024-6923: an encoded-word decoding to CRLF in a header value
    "cve-2024-6923-subject": {"subject": "=?utf-8?q?hi=0D=0ABcc:_victim@evil.example?="},
    "cve-2024-6923-name": {"to": ["=?utf-8?q?x=0D=0ABcc:_v@evil.example?= <u@example.org>"]},
    # CVE-2023-27043: parseaddr splitting on specials differently than the MTA
    "cve-2023-27043-glued": {"to": ["alice@example.org<bob@evil.example>"]},
    "cve-2023-27043-quoted": {"to": ['"alice@example.org" <bob@evil.example>']},
    "cve-2023-27043-comma": {"to": ["alice@example.org, bob@evil.example"]},
    # Nodemailer GHSA-mm7p-fcc7-pg87: a quoted local part holding @ rerouted the mail
    "ghsa-mm7p-quoted-local": {"to": ['"xclow3n@gmail.com x"@internal.domain']},
    "ghsa-mm7p-quoted-local-2": {"to": ['"a@evil.example"@example.org']},
    # comment-glued domains
    "comment-glue": {"to": ["a@example.org(comment)@evil.example"]},
    "comment-glue-2": {"to": ["a@(x)evil.example"]},
    # CRLF or parameters smuggled into MAIL FROM
    "mail-param": {"sender": "app@example.com> SIZE=1\r\nRCPT TO:<evil@evil.example"},
    "mail-space": {"sender": "app@example.com> BODY=8BITMIME"},
    # smuggling sequences in the body (end-of-data lookalikes)
    "body-lf-dot": {"text": "a\n.\r\nMAIL FROM:<evil@evil.example>\r\n"},
    "body-cr-dot": {"text": "a\r.\rMAIL FROM:<evil@evil.example>\r\n"},
    "body-crcrlf": {"text": "a\r\r\n.\r\nMAIL FROM:<evil@evil.example>\r\n"},
}


@pytest.mark.parametrize("case", sorted(KNOWN))
def test_known_real_cases(server: Any, case: str) -> None:
    fields = {
        "sender": "app@example.com",
        "to": ["u@example.org"],
        "subject": "s",
        "text": "t",
        **KNOWN[case],
    }
    before = len(server.state.messages)
    send_and_check(server, lambda: Message(**fields))
    if len(server.state.messages) > before:
        rcpts = server.state.messages[-1].rcpt_tos
        if case == "cve-2023-27043-quoted":
            # RFC 5322: a quoted display name, then the address: bob is the recipient,
            # as the To header a reader sees says; never alice (what parseaddr once said)
            assert rcpts == ["bob@evil.example"]
        else:
            assert rcpts == ["u@example.org"] or not any("evil" in r for r in rcpts), rcpts


@pytest.mark.parametrize("name", ["client\r\nMAIL FROM:<evil@evil.example>", "a b", "x\n", "x\x00"])
def test_crlf_in_ehlo_name_is_refused_at_config(server: Any, name: str) -> None:
    with pytest.raises(ConfigError):
        SMTPProvider.from_config("p", server.config(name=name))
