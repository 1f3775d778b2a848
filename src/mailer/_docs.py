"""Where the documentation is, for a user of the installed package.

Hints used to cite ``docs/configuration.md``, a path that exists only in a source checkout.
The wheel ships the pages inside the package (``mailer/docs``, see pyproject's
force-include), and ``mailer docs PAGE`` prints one, so a hint can name a page that every
installed copy can show, offline and at the version installed.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["docs_dir", "page_path", "see"]

_HERE = Path(__file__).resolve().parent


def docs_dir() -> Path | None:
    """The folder of the .md pages: in the wheel, or the checkout of an editable install."""
    for candidate in (_HERE / "docs", _HERE.parents[1] / "docs"):
        if (candidate / "configuration.md").is_file():
            return candidate
    return None


def page_path(page: str) -> Path | None:
    """The file of one page (``configuration`` or ``configuration.md``), if shipped."""
    folder = docs_dir()
    if folder is None:
        return None
    path = folder / f"{page.removesuffix('.md')}.md"
    return path if path.is_file() and path.parent == folder else None


def see(page: str, section: str | None = None) -> str:
    """How a hint names a page: the command that shows it."""
    where = f" (section {section!r})" if section else ""
    return f"`mailer docs {page}`{where}"
