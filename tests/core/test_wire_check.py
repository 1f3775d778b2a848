"""The last check on rendered bytes (mailer._message.wire): the long-line test.

It was a regex over every line start; it now measures only the lines through every
999th offset. The two must agree on every CRLF-only input, at and around the limit.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer import MessageError
from mailer._message.wire import _has_overlong_line, check_wire

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
