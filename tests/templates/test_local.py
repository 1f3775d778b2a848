"""Local rendering rules: autoescape only in HTML, StrictUndefined, includes within the
dir, and the optional MJML and CSS-inlining steps (the ``mjml`` and ``css-inline``
extras, part of ``dev``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailer._errors import MessageError
from mailer._templates import LocalTemplates


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def test_subject_is_one_line_text_is_not_escaped_html_is(tmp_path: Path) -> None:
    folder = _write(tmp_path / "t", {
        "a.subject.txt": "Hello\n  {{ who }}\n",
        "a.txt": "{{ who }} & co\n",
        "a.html": "{% include 'footer.html' %}<p>{{ who }}</p>",
        "footer.html": "<footer>{{ who }}</footer>",
    })  # fmt: skip
    out = LocalTemplates({"dir": folder}).render("a", {"who": "<Ada & Bob>"})
    assert out.subject == "Hello <Ada & Bob>"
    assert out.text == "<Ada & Bob> & co\n"
    assert out.html == ("<footer>&lt;Ada &amp; Bob&gt;</footer><p>&lt;Ada &amp; Bob&gt;</p>")


def test_missing_pieces_are_message_errors(tmp_path: Path) -> None:
    folder = _write(tmp_path / "t", {
        "only.subject.txt": "x", "broken.subject.txt": "{% if %}", "broken.txt": "x",
        "inc.subject.txt": "x", "inc.html": "{% include 'nope.html' %}",
    })  # fmt: skip
    local = LocalTemplates({"dir": folder})
    with pytest.raises(MessageError, match=r"no missing\.subject\.txt"):
        local.render("missing", {})
    with pytest.raises(MessageError, match=r"neither only\.txt nor only\.html"):
        local.render("only", {})
    with pytest.raises(MessageError, match=r"broken\.subject\.txt, line 1"):
        local.render("broken", {})
    with pytest.raises(MessageError, match=r"nope\.html"):
        local.render("inc", {})


def test_an_edited_file_is_picked_up(tmp_path: Path) -> None:
    folder = _write(tmp_path / "t", {"e.subject.txt": "one", "e.txt": "body"})
    local = LocalTemplates({"dir": folder})
    assert local.render("e", {}).subject == "one"
    path = folder / "e.subject.txt"
    path.write_text("two")
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 5))  # a later mtime, whatever the clock
    assert local.render("e", {}).subject == "two"


def test_css_inlining(tmp_path: Path) -> None:
    pytest.importorskip("css_inline")
    folder = _write(tmp_path / "t", {
        "c.subject.txt": "x",
        "c.html": "<html><head><style>p { color: red }</style></head>"
                  "<body><p>{{ who }}</p></body></html>",
    })  # fmt: skip
    out = LocalTemplates({"dir": folder, "inline_css": True}).render("c", {"who": "Ada"})
    assert out.html is not None and '<p style="color: red;">Ada</p>' in out.html
    assert "<style>" not in out.html


def test_mjml(tmp_path: Path) -> None:
    pytest.importorskip("mjml")
    folder = _write(tmp_path / "t", {
        "m.subject.txt": "x",
        "m.mjml": "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ who }}</mj-text>"
                  "</mj-column></mj-section></mj-body></mjml>",
    })  # fmt: skip
    out = LocalTemplates({"dir": folder, "mjml": True}).render("m", {"who": "<Ada>"})
    assert out.html is not None and out.html.startswith("<!doctype html>")
    assert "Hi &lt;Ada&gt;" in out.html and "<mj-text>" not in out.html
