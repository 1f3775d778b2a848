"""What every ``mailer`` command shares: exit codes, the consoles, the options that recur,
the one-line error with its hint (and ``--json``'s form of it), and running a coroutine.

Errors are rendered here and nowhere else, so every command fails the same way: one line
that says what failed, a hint that says what to do, and exit 2 for a bad config, message
or usage, 1 when delivery or a check failed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from logging import Handler
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from .._docs import see
from .._errors import (
    AllProvidersFailed,
    AuthError,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    PermanentError,
    RateLimited,
    TransientError,
)
from .._log import one_line, redact

P = ParamSpec("P")
R = TypeVar("R")

#: exit codes: 1 = something failed (delivery, a check); 2 = the input is wrong
EXIT_FAILED = 1
EXIT_USAGE = 2
#: ``mailer send``: not sent yet, but stored in the outbox for a worker (scripts must be
#: able to tell it from sent, 0, and from lost, 1)
EXIT_QUEUED = 3

#: the page every hint ends by naming, unless the hint names it already
MORE_PAGE = "troubleshooting"

app = typer.Typer(
    name="mailer",
    help="Send email through several providers with failover. Try `mailer demo`.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables into 80 columns when piped or captured."""
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=120)
    return console


@dataclass
class State:
    """What one invocation set up; the root callback renews it for each."""

    out: Console
    err: Console
    debug: bool = False
    #: the log handler this process's last invocation installed
    handler: Handler | None = None

    def new_consoles(self) -> None:
        """Consoles per invocation: the width (COLUMNS) and streams of this run, not of the
        first one in the process (CliRunner runs many in one)."""
        self.out, self.err = _console(), _console(stderr=True)


state = State(_console(), _console(stderr=True))


def out() -> Console:
    """This invocation's console for results (stdout)."""
    return state.out


def err() -> Console:
    """This invocation's console for errors, hints and logs (stderr)."""
    return state.err


ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="MAILER_CONFIG",
        help="Mailer config file (TOML with [[providers]], or JSON), or one provider URL "
        "such as smtps://user:pass@host.",
        show_default=True,
    ),
]

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the outcome as JSON (full reasons, never cut).")
]


# -- errors: one line and a hint ----------------------------------------------------------

_CONFIG_HINTS: list[tuple[str, str]] = [
    (
        "cannot read config file",
        "pass --config PATH (TOML or JSON) or a provider URL, or set MAILER_CONFIG",
    ),
    ("unknown provider type", "run `mailer providers` to list the installed provider types"),
    ("failed to load", "run `mailer providers` to see why that plugin cannot be imported"),
    ("environment variable", "export it, or give a default in the config: ${NAME:-value}"),
    ("is not valid TOML", "fix the syntax at the line and column shown"),
    ("is not valid JSON", "fix the syntax at the line and column shown"),
    ("is not offered", "the reason and what to do instead are in the message above"),
    ("same option", "keep one of the two spellings"),
    ("looks like milliseconds", "our durations are seconds; " + see("configuration")),
    ("DSN", "a DSN is type://user:password@host:port?options; " + see("configuration")),
    ("unknown option", "the options are listed in " + see("configuration")),
]

# (words in the message, hint): the first match wins; most specific first
_MESSAGE_HINTS: list[tuple[tuple[str, ...], str]] = [
    (("no body",), "'--text -' reads the body from stdin, --text @FILE from a file"),
    (("no sender",), "give --from (or sender= on the Message), or set defaults.sender"),
    (("at least one recipient",), "give --to, --cc or --bcc (to=, cc=, bcc= on the Message)"),
    (("attachment path",), "check the path: relative paths start at the current folder"),
    (("attachment",), "an attachment is content=bytes with a filename, or a path"),
    (("non-ASCII local part",), "SMTPUTF8 is not supported yet: use an ASCII address"),
    (
        ("control character", "encoded-word", "header", "rendered"),
        "control characters (CR, LF) in a header would let text forge headers; "
        "see " + see("security"),
    ),
    (
        ("address", "domain", "local part", "display name"),
        "give one plain address per item, like 'Ann <ann@example.org>'; see " + see("security"),
    ),
    (("message_id",), "a message_id is <unique@your.domain>, or leave it out"),
    (("inline attachments",), "give html that refers to the inline parts as cid:..."),
]


def explain(exc: BaseException) -> tuple[str, str | None, int]:
    """(one-line message, hint, exit code) for an error that reached the command line."""
    text = one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, ConfigError):
        hint = next((h for key, h in _CONFIG_HINTS if key in text), None)
        return f"config: {text}", hint or "see " + see("configuration"), EXIT_USAGE
    if isinstance(exc, MessageError):
        hint = next((h for words, h in _MESSAGE_HINTS if any(w in text for w in words)), None)
        return (
            f"message: {text}",
            hint or "nothing was sent; fix the field the message names",
            EXIT_USAGE,
        )
    if isinstance(exc, AllProvidersFailed):
        hint = "run `mailer verify --config FILE` to see which provider is down and why"
        if exc.possibly_delivered:
            hint = (
                "an attempt ended without a definitive answer, so the message may "
                "have been delivered: check before sending it again"
            )
        return text, hint, EXIT_FAILED
    if isinstance(exc, DeliveryError):
        hints: list[tuple[type[DeliveryError], str]] = [
            (RateLimited, "the provider is throttling; wait and try again"),
            (AuthError, "the credentials were refused: check user, password or API key"),
            (DeliveryUncertain, "it may have been delivered: check before sending it again"),
            (
                PermanentError,
                "refused for a reason any provider would share (address, "
                "content); fixing the message is the way out",
            ),
            (TransientError, "the provider may work later; add another provider to fail over"),
        ]
        hint = next((h for cls, h in hints if isinstance(exc, cls)), None)
        return f"{type(exc).__name__}: {text}", hint, EXIT_FAILED
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {text}", None, EXIT_FAILED
    return (
        f"unexpected {type(exc).__name__}: {text}",
        "run again with --debug for the traceback, and please report it",
        EXIT_FAILED,
    )


def fail(message: str, hint: str | None = None, code: int = EXIT_FAILED) -> NoReturn:
    """Print the error and its hint on stderr and exit with ``code``. The hint ends by
    naming the troubleshooting page, the one place that says more, unless it names it."""
    err().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if hint:
        more = see(MORE_PAGE)
        tail = "" if more in hint else f" [dim](more: {escape(more)})[/]"
        err().print(f"[dim]hint:[/] {escape(hint)}{tail}", soft_wrap=True)
    raise typer.Exit(code)


def friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn any error into one line and a hint (or a traceback under --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except Exception as exc:
            message, hint, code = explain(exc)
            if state.debug:
                err().print_exception(show_locals=False)
            if kwargs.get("as_json"):
                print_json({"ok": False, "error": error_json(exc, hint)})
                raise typer.Exit(code) from None
            fail(message, hint, code)

    return wrapper


def print_json(data: Any) -> None:
    """JSON on stdout, whole: never wrapped or cut at a terminal width."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error_json(exc: BaseException, hint: str | None = None) -> dict[str, Any]:
    """An error for --json: its class, full (redacted) text and what scripts branch on."""
    data: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": redact(str(exc.args[0]) if exc.args else str(exc)),
    }
    if hint is not None:
        data["hint"] = hint
    if isinstance(exc, DeliveryError):
        data.update(provider=exc.provider, code=exc.code)
        if exc.response is not None:
            data["response"] = redact(exc.response)
    if isinstance(exc, AllProvidersFailed):
        data["possibly_delivered"] = exc.possibly_delivered
        data["errors"] = {name: error_json(e) for name, e in exc.errors.items()}
    return data


def run(fn: Callable[[], Any]) -> Any:
    """Run a command's coroutine function to completion."""
    # asyncio, not another anyio backend: the SMTP provider is built on aiosmtplib.
    return anyio.run(fn, backend="asyncio")
