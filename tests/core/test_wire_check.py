"""The last check on rendered bytes (mailer._message.wire): the long lines, the header names.

It was a regex over every line start; it now measures only the lines through every
999th offset. The two must agree on every CRLF-only input, at and around the limit.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer import MessageError
from mailer._message import wire
from mailer._message.wire import _has_overlong_line, check_wire
from mailer._text import QUOTE, clip

#: the regex the check used before (anchored at line starts: linear)
_OVERLONG_LINE = re.compile(rb"(?m)^[^\r\n]{999}")

_LENGTHS = st.sampled_from([0, 1, 500, 997, 998, 999, 1000, 1996, 1997, 1998, 2997, 3100])


@given(st.lists(_LENGTHS, max_size=6), st.booleans(), st.sampled_from([b"x", b".", b" "]))
def test_same_verdict_as_the_regex(lengths: list[int], final_crlf: bool, fill: bytes) -> None:
    data = b"\r\n".join(fill * n for n in lengths) + (b"\r\n" if final_crlf else b"")
    assert _has_overlong_line(data) == bool(_OVERLONG_LINE.search(data))


@pytest.mark.parametrize("length", [998, 999])
def test_limit_in_a_header_block_and_body(length: int) -> None:
    data = b"From: a@x.org\r\n\r\n" + b"a\r\n" * 400 + b"y" * length + b"\r\nend\r\n"
    if length == 998:
        check_wire(data, ["from"])
    else:
        with pytest.raises(MessageError, match="longer than 998"):
            check_wire(data, ["from"])


# -- the header names: compared as bytes, against a set made once per expected tuple ------

_STRUCTURAL_STR = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
_ONCE_STR = ("from", "subject", "date", "message-id", "to", "cc", "reply-to")
_FIELD = re.compile(rb"(?m)^([!-9;-~]+):")


def _verdict_before(head: bytes, expected: list[str]) -> str | None:
    """The names' verdict as the check gave it before (str names, a dict of counts)."""
    allowed = _STRUCTURAL_STR.union([h.lower() for h in expected])
    seen: dict[str, int] = {}
    for raw in _FIELD.findall(head):
        name = raw.decode("ascii").lower()
        if name not in allowed:
            return f"rendered message has an unexpected header {name!r}"
        seen[name] = seen.get(name, 0) + 1
    for name in _ONCE_STR:
        if seen.get(name, 0) > 1:
            return f"rendered message has {name!r} more than once"
    return None


_NAMES = st.sampled_from(
    ["From", "from", "TO", "Subject", "X-Tag", "x-tag", "Cc", "Date", "Content-Type", "Received"]
)


@given(st.lists(_NAMES, min_size=1, max_size=8), st.lists(_NAMES, max_size=6))
def test_header_names_same_verdict_as_before(present: list[str], expected: list[str]) -> None:
    head = b"".join(f"{name}: v\r\n".encode() for name in present)
    data = head + b"\r\nbody\r\n"
    want = _verdict_before(head, expected)
    _assert_verdict(data, expected, want)


_BAD = re.compile(rb"(?m)^(?![!-9;-~]+:|[ \t])")
_LINES = st.sampled_from(
    [
        b"From: a@x.org",
        b"SUBJECT: s",
        b"subject:s",
        b"X-Tag: v",
        b"To: a@x.org,",
        b" b@x.org",
        b"\tfolded",
        b"Received: x",
        b"no colon here",
        b"Name with space: v",
        b":empty name",
        b"",
        b"X-Tag:a:b",
    ]
)


@given(st.lists(_LINES, min_size=1, max_size=8), st.lists(_NAMES, max_size=6))
def test_header_lines_same_verdict_as_the_line_regexes(
    lines: list[bytes], expected: list[str]
) -> None:
    """The one-pass check of the line starts (branch pool5) against the two ``(?m)^``
    regexes it replaced: the same lines refused, with the same error, continuation and
    empty lines included."""
    head = b"\r\n".join(lines)
    if b"\r\n\r\n" in head + b"\r\n" or not head:
        return  # an empty line ends the header block: not a head of these lines
    bad = _BAD.search(head)
    if bad is not None:
        stop = head.find(b"\r\n", bad.start())
        line = head[bad.start() : stop if stop >= 0 else len(head)]
        want: str | None = f"rendered header has an unexpected line: {clip(line, QUOTE)!r}"
    else:
        want = _verdict_before(head, expected)
    data = head + b"\r\n\r\nbody\r\n"
    _assert_verdict(data, expected, want)


def test_a_custom_header_may_repeat_but_not_subject() -> None:
    data = b"From: a@x.org\r\nX-Tag: 1\r\nx-tag: 2\r\nSubject: s\r\n\r\nbody\r\n"
    check_wire(data, ["from", "X-Tag", "subject"])
    twice = b"From: a@x.org\r\nSubject: s\r\nSUBJECT: t\r\n\r\nbody\r\n"
    with pytest.raises(MessageError, match="'subject' more than once"):
        check_wire(twice, ["from", "subject"])


def test_the_allowed_sets_stay_bounded() -> None:
    data = b"From: a@x.org\r\n\r\nbody\r\n"
    for i in range(600):  # ever-new expected names: the kept sets are cleared, not grown
        check_wire(data, ["from", f"x-custom-{i}"])
    assert len(wire._ALLOWED) <= 256
    with pytest.raises(MessageError, match="unexpected header 'x-custom-1'"):
        check_wire(b"From: a@x.org\r\nX-Custom-1: v\r\n\r\nbody\r\n", ["from"])


_TEXTS = ["plain\nlines\r\nmixed\rends", "café " * 40 + "\r\n.dot line", "日本語" * 200, "x" * 1200]


@pytest.mark.parametrize("text", _TEXTS)
@pytest.mark.parametrize("stdlib", [False, True])
def test_a_rendering_is_crlf_only_so_the_smtp_payload_skips_the_count(
    text: str, stdlib: bool
) -> None:
    """SMTP's ``message_payload`` does not count a rendering's line endings again
    (``data_pieces(checked=True)``): the wire check above refused any bare CR or LF. Held
    for the fast renderer and the stdlib's (a long header with runs of spaces), text
    bodies in each transfer encoding, HTML and an attachment."""
    from mailer import Attachment, Message
    from mailer._message.wire import crlf_only
    from mailer.providers._smtp.wire import data_pieces

    headers = {"X-Spaced": "a  b " * 30} if stdlib else {}
    message = Message(
        sender="a@example.com",
        to=["b@example.org"],
        subject="s",
        text=text,
        html=f"<p>{text}</p>",
        attachments=[Attachment(content=b"\r\n\n\r" * 50, filename="raw.bin")],
        headers=headers,
    )
    data = message.as_bytes()
    assert (b"X-Spaced" in data) is stdlib
    assert crlf_only(data)
    assert data_pieces(data, checked=True) == data_pieces(data)


def _assert_verdict(data: bytes, expected: list[str], want: str | None) -> None:
    """``check_wire`` passes ``data`` when ``want`` is None, else refuses it with ``want``."""
    if want is None:
        check_wire(data, expected)
        return
    with pytest.raises(MessageError) as caught:
        check_wire(data, expected)
    assert str(caught.value) == want
