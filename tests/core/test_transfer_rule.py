"""The 7bit rule in one place (``mailer._message.transfer``) against the two regexes both
renderers ran before: the whole-part renderer (``mime``) until pool2's change, the
streamed one (``stream.TextSource``) until this one. For any text, ``as_7bit`` says 7bit
exactly when the regexes did, and a streamed part cut into slices of any size chooses
the transfer encoding the former rule chooses for the whole text.

Hypothesis runs derandomized: the same examples every run, so the verdict depends on
the code alone.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer._message import stream as _stream
from mailer._message.transfer import as_7bit, long_line

_TEXT_7BIT = re.compile(r"[\x20-\x7e\t\n]*")
_LONG_LINE = re.compile(r"(?m)^[^\n]{999}")


def former_7bit(data: str) -> bool:
    """The rule as both renderers wrote it with regexes."""
    return bool(_TEXT_7BIT.fullmatch(data)) and not _LONG_LINE.search(data)


def former_cte(text: str) -> str:
    """The transfer encoding the former rule chose for a whole text."""
    data = text.replace("\r\n", "\n").replace("\r", "\n")
    if not data.endswith("\n"):
        data += "\n"
    if former_7bit(data):
        return "7bit"
    raw = data.encode("utf-8")
    non_ascii = len(raw) - len(data.encode("ascii", "ignore"))
    return "base64" if non_ascii * 3 > len(raw) else "quoted-printable"


# every character class the rule looks at, and lines on both sides of 999
EDGE = st.sampled_from(
    ["\r", "\n", "\r\n", "\t", "\x7f", "\x1f", " ", "~", "é", "日", "😀", "\x00"]
)
PIECE = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=30),
    EDGE,
    st.builds(lambda n, c: c * n, st.integers(995, 1003), st.sampled_from(["a", "é", "\t"])),
)
TEXTS = st.lists(PIECE, max_size=10).map("".join)
CHECKED = settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@CHECKED
@given(text=TEXTS)
def test_as_7bit_is_the_two_regexes(text: str) -> None:
    data = text.replace("\r\n", "\n").replace("\r", "\n") + "\n"
    encoded = as_7bit(data)
    assert (encoded is not None) is former_7bit(data)
    assert encoded is None or encoded == data.encode("ascii")
    assert long_line(data) is bool(_LONG_LINE.search(data))


@CHECKED
@given(text=TEXTS, chunk=st.sampled_from([1, 5, 64, 998, 1000, 4096]))
def test_a_streamed_part_chooses_what_the_former_rule_chose_for_the_whole(
    text: str, chunk: int
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_stream, "TEXT_CHUNK", chunk)  # slices cut after newlines, any size
        source = _stream.TextSource(text)
        body = b"".join(source.chunks())
    assert source.cte == former_cte(text)
    assert len(body) == source.size
