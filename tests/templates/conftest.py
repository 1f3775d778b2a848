"""A templates dir for the template tests: ``welcome`` with a subject, text and HTML."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def template_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "welcome.subject.txt").write_text("Welcome, {{ name }}!\n")
    (folder / "welcome.txt").write_text("Hi {{ name }},\nyour plan is {{ plan }}.\n")
    (folder / "welcome.html").write_text("<p>Hi {{ name }}, your plan is <b>{{ plan }}</b>.</p>\n")
    return folder
