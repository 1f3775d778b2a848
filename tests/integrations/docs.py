"""Code blocks from docs/, so the examples the docs show are the ones the tests run."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"


def doc_block(page: str, name: str) -> str:
    """The fenced code block right after ``<!-- test: NAME -->`` in ``docs/PAGE``."""
    text = (DOCS / page).read_text(encoding="utf-8")
    found = re.search(rf"<!-- test: {re.escape(name)} -->\s*```[a-z]*\n(.*?)\n```", text, re.DOTALL)
    if found is None:
        raise AssertionError(f"docs/{page} has no code block marked {name!r}")
    return found.group(1)
