"""``mailer preview NAME --data data.json``: a template rendered locally, as a provider
without a stored template would send it. The rendering is the library's
(:class:`mailer._templates.LocalTemplates`), so a missing variable here is the error
``send()`` would raise."""

from __future__ import annotations

import json
import sys
import tempfile
import webbrowser
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .common import EXIT_USAGE, ConfigOption, JsonOption, app, fail, friendly, out, print_json


def _data(source: Path | None) -> dict[str, Any]:
    if source is None:
        return {}
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"--data {source}: {exc.strerror or exc}", code=EXIT_USAGE)
    try:
        data = json.loads(text)
    except ValueError as exc:
        fail(f"--data {source} is not JSON: {exc}", code=EXIT_USAGE)
    if not isinstance(data, dict):
        fail(f"--data {source} must hold a JSON object (the template's variables)", code=EXIT_USAGE)
    return data


@app.command()
@friendly
def preview(
    name: Annotated[str, typer.Argument(help="The template's name, e.g. welcome.")],
    data: Annotated[
        Path | None, typer.Option("--data", help="JSON object of variables ('-': stdin).")
    ] = None,
    templates: Annotated[
        Path | None, typer.Option("--templates", help="Templates dir; default templates.dir.")
    ] = None,
    config: ConfigOption = Path("mailer.toml"),
    open_html: Annotated[
        bool, typer.Option("--open", help="Open the HTML part in a browser.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Render a template locally with --data and print its subject, text and HTML."""
    from .._message.template import check_template_name
    from .._templates import LocalTemplates, TemplatesConfig

    check_template_name(name)
    if templates is not None:
        settings = TemplatesConfig(dir=templates)
    else:
        from .._config import load_config

        if not config.is_file():
            fail(
                f"no --templates and no config file {config}",
                "give --templates DIR, or --config FILE with a templates.dir",
                EXIT_USAGE,
            )
        found = load_config(config).templates
        if found is None:
            fail(f"{config} has no templates section", "give --templates DIR", EXIT_USAGE)
        settings = found
    rendered = LocalTemplates(settings).render(name, _data(data))
    if as_json:
        print_json(
            {"ok": True, "subject": rendered.subject, "text": rendered.text, "html": rendered.html}
        )
    else:
        console = out()
        console.print(f"[bold]Subject:[/] {escape(rendered.subject)}", soft_wrap=True)
        for label, part in (("text", rendered.text), ("html", rendered.html)):
            console.print(f"\n[bold]--- {label} ---[/]")
            console.print(
                part if part is not None else "(none)",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if open_html and rendered.html is not None:
        with tempfile.NamedTemporaryFile(
            "w", suffix=".html", prefix=f"mailer-{name}-", delete=False, encoding="utf-8"
        ) as file:
            file.write(rendered.html)
        webbrowser.open(Path(file.name).as_uri())
