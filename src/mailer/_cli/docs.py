"""``mailer docs [PAGE]``: the documentation of the installed version."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from .._docs import docs_dir, page_path
from .common import EXIT_FAILED, EXIT_USAGE, app, fail, friendly, out


@app.command()
@friendly
def docs(
    page: Annotated[str | None, typer.Argument(help="A page, e.g. configuration.")] = None,
    path: Annotated[bool, typer.Option("--path", help="Print the file's path only.")] = False,
) -> None:
    """Show a documentation page of the installed version (list them without PAGE)."""
    folder = docs_dir()
    if folder is None:
        fail("the documentation is not installed with this copy", code=EXIT_FAILED)
    if page is None:
        for item in sorted(folder.glob("*.md")):
            first = item.read_text(encoding="utf-8").partition("\n")[0].lstrip("# ")
            out().print(f"  {item.stem:<24} {escape(first)}")
        return
    found = page_path(page)
    if found is None:
        pages = ", ".join(sorted(p.stem for p in folder.glob("*.md")))
        fail(f"no page {page!r}", f"the pages are: {pages}", EXIT_USAGE)
    if path:
        out().print(str(found), soft_wrap=True)
    else:
        out().print(
            found.read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True
        )
