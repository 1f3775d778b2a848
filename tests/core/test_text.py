"""The one cut-off rule for error text (mailer._text.clip): a cut says so, and never
exceeds its limit, for text and for the bytes a header check quotes."""

from __future__ import annotations

import pytest

from mailer._log import one_line
from mailer._text import LINE, QUOTE, REASON, clip


@pytest.mark.parametrize("limit", [QUOTE, REASON, LINE])
def test_a_cut_text_says_so_and_fits(limit: int) -> None:
    assert clip("x" * limit, limit) == "x" * limit  # fits: untouched
    cut = clip("x" * (limit + 1), limit)
    assert len(cut) == limit and cut.endswith("...")
    assert clip(b"y" * (limit * 2), limit) == b"y" * (limit - 3) + b"..."


def test_one_line_cuts_by_the_same_rule() -> None:
    text = "550 no\r\n" * 200
    assert one_line(text) == clip(" ".join(text.split()), LINE)
    assert len(one_line(text, QUOTE)) == QUOTE
