"""Input limits and spoofing: what a Message refuses (or reduces) before any I/O.

The cases come from adversarial tries against the SMTP provider (issue 16): a 1 MB
subject, forged trace headers, a path as an attachment name, an address as a display
name, and IDNA 2003 mapping a German domain to someone else's.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from mailer import Address, Attachment, Message, MessageError
from mailer._message import MAX_FILENAME_CHARS, MAX_HEADER_CHARS, MAX_HEADERS


def make(**kw: object) -> Message:
    base: dict[str, object] = {"sender": "App <app@example.com>", "to": ["u@example.org"]}
    base.update(kw)
    return Message(**base)


# ------------------------------------------------------------------------------ limits


def test_subject_at_the_limit_is_sent_whole() -> None:
    subject = "word " * (MAX_HEADER_CHARS // 5)
    data = make(subject=subject[:MAX_HEADER_CHARS]).as_bytes()
    parsed = email.message_from_bytes(data, policy=email.policy.default)
    assert str(parsed["Subject"]) == subject[:MAX_HEADER_CHARS].strip()


@pytest.mark.parametrize("size", [MAX_HEADER_CHARS + 1, 1_000_000])
def test_overlong_subject_is_refused_with_its_length(size: int) -> None:
    with pytest.raises(MessageError, match=rf"subject is {size} characters long; the limit is 998"):
        make(subject="x" * size)


def test_overlong_header_value_and_display_name_are_refused() -> None:
    with pytest.raises(MessageError, match="header 'X-Campaign' is 999 characters"):
        make(headers={"X-Campaign": "c" * 999})
    with pytest.raises(MessageError, match="display name is 2000 characters"):
        make(to=[Address(name="n" * 2000, email="u@example.org")])


def test_too_many_headers_are_refused() -> None:
    make(headers={f"X-H{i}": "v" for i in range(MAX_HEADERS)})
    with pytest.raises(MessageError, match="101 custom headers; the limit is 100"):
        make(headers={f"X-H{i}": "v" for i in range(MAX_HEADERS + 1)})


# ---------------------------------------------------------------------- trace headers


@pytest.mark.parametrize(
    "name",
    [
        "Received", "received", "DKIM-Signature", "Return-Path", "Received-SPF",
        "Authentication-Results", "ARC-Seal", "ARC-Message-Signature",
        "ARC-Authentication-Results", "DomainKey-Signature", "Delivered-To",
        "Resent-From", "Resent-Message-ID", "X-Original-To",
    ],
)  # fmt: skip
def test_trace_and_authentication_headers_are_refused(name: str) -> None:
    with pytest.raises(MessageError, match=rf"header '{name}' is a trace or authentication"):
        make(headers={name: "from mx.bank.example by mx.victim.example"})


def test_ordinary_custom_headers_still_pass() -> None:
    m = make(headers={"List-Unsubscribe": "<https://example.com/u>", "X-Received-By": "app"})
    assert b"X-Received-By: app" in m.as_bytes()


# ------------------------------------------------------------------ attachment names


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\Windows\\win.ini", "win.ini"),
        ("/abs/path/report.pdf", "report.pdf"),
        ("...hidden", "hidden"),
        ("trailing. . ", "trailing"),
        ("plain name.txt", "plain name.txt"),
        ("dir/ünïcödé.txt", "ünïcödé.txt"),
    ],
)
def test_attachment_filename_is_reduced_to_a_safe_base_name(given: str, sent: str) -> None:
    att = Attachment(content=b"data", filename=given)
    assert att.filename == sent
    parsed = email.message_from_bytes(
        make(text="x", attachments=[att]).as_bytes(), policy=email.policy.default
    )
    assert isinstance(parsed, email.message.EmailMessage)
    names = [part.get_filename() for part in parsed.iter_attachments()]
    assert names == [sent]


@pytest.mark.parametrize("given", ["../", "..", "a/b/", " . "])
def test_attachment_filename_without_a_base_name_is_refused(given: str) -> None:
    with pytest.raises(MessageError, match="no usable base name"):
        Attachment(content=b"data", filename=given)


def test_overlong_attachment_filename_is_refused(tmp_path: Path) -> None:
    Attachment(content=b"x", filename="a" * MAX_FILENAME_CHARS)
    with pytest.raises(MessageError, match="attachment filename is 256 characters"):
        Attachment(content=b"x", filename="a" * (MAX_FILENAME_CHARS + 1))


# -------------------------------------------------------------------- display names


@pytest.mark.parametrize(
    "mailbox",
    [
        '"ceo@bank.example" <x@evil.example>',
        '"CEO ceo@bank.example" <x@evil.example>',
        '"ceo＠bank.example" <x@evil.example>',  # FULLWIDTH COMMERCIAL AT
        '"ceo﹫bank.example" <x@evil.example>',  # SMALL COMMERCIAL AT
        {"name": "=?utf-8?b?Y2VvQGJhbmsuZXhhbXBsZQ==?=", "email": "x@evil.example"},
        ("ceo@bank.example", "x@evil.example"),
    ],
)
def test_display_name_holding_another_address_is_refused(mailbox: object) -> None:
    with pytest.raises(MessageError, match="contains an address"):
        make(sender=mailbox)
    with pytest.raises(MessageError, match="contains an address"):
        make(to=[mailbox])


@pytest.mark.parametrize(
    "mailbox",
    [
        '"alice@example.org" <alice@example.org>',  # its own address: harmless
        '"ALICE@example.org" <alice@example.org>',
        '"Alice @ Example" <alice@example.org>',  # an at sign, but no address
        "Alice Example <alice@example.org>",
    ],
)
def test_display_names_without_a_foreign_address_pass(mailbox: str) -> None:
    assert make(sender=mailbox).sender is not None


# ------------------------------------------------------------------------------- IDNA


@pytest.mark.parametrize(
    ("address", "ascii_form"),
    [
        # IDNA 2003 (Python's "idna" codec) maps these to other, existing domains
        ("user@faß.de", "user@xn--fa-hia.de"),  # 2003: fass.de
        ("user@FAß.DE", "user@xn--fa-hia.de"),  # UTS 46 maps case, keeps ß
        ("user@βόλος.com", "user@xn--nxasmm1c.com"),  # 2003: xn--nxasmq6b.com (σ)
        ("user@ශ්\u200dරී.com", "user@xn--10cl1a0b660p.com"),  # ZWJ kept
        ("user@نامه\u200cای.com", "user@xn--mgba3gch31f060k.com"),  # ZWNJ kept
        ("user@bücher.example", "user@xn--bcher-kva.example"),  # same in both
        ("user@xn--fa-hia.de", "user@xn--fa-hia.de"),  # an A-label as given
    ],
)
def test_domains_use_idna_2008_with_uts46(address: str, ascii_form: str) -> None:
    assert Address.parse(address).email == ascii_form
    data = make(to=[address]).as_bytes()
    assert f"<{ascii_form}>".encode() in data or ascii_form.encode() in data


@pytest.mark.parametrize(
    "address",
    [
        "user@☃.net",  # a symbol: valid in IDNA 2003 (xn--n3h.net), not in 2008
        "user@xn--zz.de",  # not a valid A-label
        "user@a\u200db.de",  # ZWJ outside the context that allows it
    ],
)
def test_domains_invalid_in_idna_2008_are_refused(address: str) -> None:
    with pytest.raises(MessageError, match="IDNA 2008"):
        Address.parse(address)


@pytest.mark.parametrize("bad", ["not an address", "x@evil.example\r\nBcc: y@example.org"])
def test_tuple_and_mapping_forms_parse_the_address_too(bad: str) -> None:
    """The (name, address) form once skipped the address parser; it no longer does."""
    for form in ((("Name", bad)), {"name": "Name", "email": bad}):
        with pytest.raises(MessageError):
            Address.parse(form)  # type: ignore[arg-type]
        with pytest.raises(MessageError):
            make(to=[form])


def test_address_keyword_form_is_checked_for_spoofing() -> None:
    with pytest.raises(MessageError, match="contains an address"):
        Address(name="ceo@bank.example", email="x@evil.example")
