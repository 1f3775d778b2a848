"""The root of the ``mailer`` command: ``--debug``, ``--verbose``, ``--version``, set up
anew for each invocation, and the console-script entry point."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from .. import __version__
from .common import app, out, state

__all__ = ["main"]


def _print_version(value: bool) -> None:
    if value:
        out().print(f"mailer-failover {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug", help="Show tracebacks, debug logs and SMTP transcripts (AUTH redacted)."
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the library's logs.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Send email through several providers with failover. Try `mailer demo`."""
    state.new_consoles()
    state.debug = debug
    logger = logging.getLogger("mailer")
    if state.handler is not None:  # the previous invocation's, in the same process
        logger.removeHandler(state.handler)
    if debug or verbose:
        from rich.logging import RichHandler

        state.handler = RichHandler(console=state.err, show_path=False, markup=False)
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
        logger.propagate = True
    else:
        # The commands report what matters themselves; library warnings would repeat it
        # (and tear through the demo's live display).
        state.handler = logging.NullHandler()
        logger.setLevel(logging.NOTSET)
        logger.propagate = False
    logger.addHandler(state.handler)
    # --debug also asks every SMTP provider for its transcript (AUTH redacted)
    from ..providers._smtp._transcript import LOGGER_NAME

    logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG if debug else logging.NOTSET)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``mailer = "mailer._cli:main"``)."""
    app(args=argv, prog_name="mailer")
