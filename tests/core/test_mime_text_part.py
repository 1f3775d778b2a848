"""The text part's rendering against the algorithm it replaced, byte for byte.

``mime._text_part`` chose 7bit with two regexes (a full match of the allowed characters,
a search for a line of 999); it now uses ``bytes.translate`` and ``find`` at every 999th
offset, which are faster. The former algorithm is kept here as the oracle: for any text
the header and the body bytes must be the very same.
"""

from __future__ import annotations

import base64
import binascii
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer._message import mime as _mime
from mailer._message.transfer import long_line

_TEXT_7BIT = re.compile(r"[\x20-\x7e\t\n]*")
_LONG_LINE = re.compile(r"(?m)^[^\n]{999}")


def former(text: str, subtype: str) -> tuple[bytes, bytes]:
    """The text part's header and body as the renderer made them before the change."""
    data = text.replace("\r\n", "\n").replace("\r", "\n")
    if not data.endswith("\n"):
        data += "\n"
    if _TEXT_7BIT.fullmatch(data) and not _LONG_LINE.search(data):
        cte, body = "7bit", data.encode("ascii").replace(b"\n", b"\r\n")
    else:
        raw = data.encode("utf-8")
        non_ascii = len(raw) - len(data.encode("ascii", "ignore"))
        if non_ascii * 3 > len(raw):
            cte, body = "base64", base64.encodebytes(raw).replace(b"\n", b"\r\n")
        else:
            qp = binascii.b2a_qp(raw, quotetabs=False, istext=True, header=False)
            cte, body = "quoted-printable", qp.replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    return head.encode("ascii"), body[:-2]


def rendered(text: str, subtype: str) -> tuple[bytes, bytes]:
    head, pieces = _mime._text_part(text, subtype)
    assert len(pieces) == 1 and isinstance(pieces[0], bytes)
    return head, pieces[0]


# characters around every boundary the choice depends on: controls, CR/LF, tab, DEL,
# Latin-1, wide and astral characters; and lines near 999 characters
CHARS = st.characters(blacklist_categories=("Cs",))
EDGE = st.sampled_from(["\r", "\n", "\r\n", "\t", "\x7f", "\x1f", " ", "~", "é", "€", "😀", "\x00"])
PIECE = st.one_of(
    st.text(CHARS, max_size=40),
    EDGE,
    st.builds(lambda n, c: c * n, st.integers(990, 1010), st.sampled_from(["a", "é", " "])),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pieces=st.lists(PIECE, max_size=12), subtype=st.sampled_from(["plain", "html"]))
def test_text_part_renders_as_the_former_algorithm(pieces: list[str], subtype: str) -> None:
    text = "".join(pieces)
    assert rendered(text, subtype) == former(text, subtype)


def test_long_lines_found_as_the_regex_finds_them() -> None:
    """Lines of 998 / 999 characters at the start, the end and across the 999 offsets."""
    short = "x" * 80 + "\n"
    for size in (0, 999, 1998, 70_000):
        base = short * (size // len(short))
        for text in (base, base + "y" * 998, base + "y" * 999, "z" * 999 + "\n" + base):
            assert rendered(text, "plain") == former(text, "plain")
            assert long_line(text if text.endswith("\n") else text + "\n") == bool(
                _LONG_LINE.search(text)
            )


def test_the_benchmark_body_is_7bit() -> None:
    line = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    text = (line * 29)[:2048]
    head, body = rendered(text, "plain")
    assert b"Content-Transfer-Encoding: 7bit" in head
    assert body == text.rstrip("\n").replace("\n", "\r\n").encode("ascii")


def test_a_line_of_999_found_wherever_it_starts() -> None:
    """Around the offsets ``long_line`` looks at: every start from 0 to 999 (after a
    line of at most 998 characters)."""
    for before in range(0, 1000):
        prefix = "p" * (before - 1) + "\n" if before else ""
        for n in (998, 999):
            data = prefix + "L" * n + "\n"
            assert long_line(data) is (n == 999), (before, n)


if __name__ == "__main__":
    # the measurement of docs/benchmarks.md ("5 connections, the next cuts"): the
    # benchmark's 2 KB body, the former algorithm and the renderer alternated twice
    import timeit

    LINE = "The quick brown fox jumps over the lazy dog, again and again and again.\n"
    BODY = (LINE * 29)[:2048]
    for _ in range(2):
        for name, case in (
            ("former", lambda: former(BODY, "plain")),
            ("after", lambda: _mime._text_part(BODY, "plain")),
        ):
            best = min(timeit.repeat(case, number=50_000, repeat=7)) / 50_000
            print(f"{name}: {best * 1e6:.2f} us")
