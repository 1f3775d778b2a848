"""The ``mailer`` command: send, verify, providers, doctor, demo (and worker, outbox).

It is what a person types first, so it is built for the moment something is wrong: every
error is one line that says what failed, plus a hint that says what to do, and exits
non-zero (2 for a bad config, message or usage; 1 when delivery or a check failed). The
traceback is there under ``--debug``, never by default: a stack trace hides the one line
that matters, and a server's reply can be long.

The commands only render: ``doctor``'s probing and its decisions live in
``mailer.providers._smtp.doctor``, where they are tested without a terminal.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import __version__
from .._docs import docs_dir, page_path, see
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

if TYPE_CHECKING:
    from ..providers._smtp.doctor import Diagnosis

__all__ = ["app", "main"]

P = ParamSpec("P")
R = TypeVar("R")

#: exit codes: 1 = something failed (delivery, a check); 2 = the input is wrong
EXIT_FAILED = 1
EXIT_USAGE = 2

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


out = _console()
err = _console(stderr=True)


@dataclass
class _State:
    debug: bool = False
    #: the log handler this process's last invocation installed
    handler: logging.Handler | None = None


_state = _State()

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        envvar="MAILER_CONFIG",
        help="Mailer config file (TOML with [[providers]], or JSON).",
        show_default=True,
    ),
]


# -- errors: one line and a hint ----------------------------------------------------------


_one_line = one_line


_CONFIG_HINTS: list[tuple[str, str]] = [
    ("cannot read config file", "pass --config PATH (TOML or JSON) or set MAILER_CONFIG"),
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
    text = _one_line(str(exc)) or type(exc).__name__
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


def _fail(message: str, hint: str | None = None, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    if hint:
        err.print(
            f"[dim]hint:[/] {escape(hint)} [dim](more: {escape(see('troubleshooting'))})[/]",
            soft_wrap=True,
        )
    raise typer.Exit(code)


def _friendly(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn any error into one line and a hint (or a traceback under --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            _fail("interrupted", code=130)
        except Exception as exc:
            message, hint, code = explain(exc)
            if _state.debug:
                err.print_exception(show_locals=False)
            if kwargs.get("as_json"):
                _print_json({"ok": False, "error": _error_json(exc, hint)})
                raise typer.Exit(code) from None
            _fail(message, hint, code)

    return wrapper


def _print_json(data: Any) -> None:
    """JSON on stdout, whole: never wrapped or cut at a terminal width."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _error_json(exc: BaseException, hint: str | None = None) -> dict[str, Any]:
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
        data["errors"] = {name: _error_json(e) for name, e in exc.errors.items()}
    return data


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the outcome as JSON (full reasons, never cut).")
]


def _run(fn: Callable[[], Any]) -> Any:
    # asyncio, not another anyio backend: the SMTP provider is built on aiosmtplib.
    return anyio.run(fn, backend="asyncio")


def _print_version(value: bool) -> None:
    if value:
        out.print(f"mailer-failover {__version__}")
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
    global out, err
    # Consoles per invocation: the width (COLUMNS) and streams of this run, not of the
    # first one in the process (CliRunner runs many in one).
    out, err = _console(), _console(stderr=True)
    _state.debug = debug
    logger = logging.getLogger("mailer")
    if _state.handler is not None:  # the previous invocation's, in the same process
        logger.removeHandler(_state.handler)
    if debug or verbose:
        from rich.logging import RichHandler

        _state.handler = RichHandler(console=err, show_path=False, markup=False)
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
        logger.propagate = True
    else:
        # The commands report what matters themselves; library warnings would repeat it
        # (and tear through the demo's live display).
        _state.handler = logging.NullHandler()
        logger.setLevel(logging.NOTSET)
        logger.propagate = False
    logger.addHandler(_state.handler)
    # --debug also asks every SMTP provider for its transcript (AUTH redacted)
    from ..providers._smtp._transcript import LOGGER_NAME

    logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG if debug else logging.NOTSET)


# -- send ----------------------------------------------------------------------------------


def _read_text(value: str | None) -> str | None:
    if value == "-":
        return sys.stdin.read()
    if value is not None and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8")
    return value


@app.command()
@_friendly
def send(
    config: ConfigOption = Path("mailer.toml"),
    sender: Annotated[
        str | None, typer.Option("--from", help="Sender; defaults.sender if unset.")
    ] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient (repeatable).")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc", help="Cc recipient (repeatable).")] = None,
    bcc: Annotated[
        list[str] | None, typer.Option("--bcc", help="Bcc recipient (repeatable).")
    ] = None,
    subject: Annotated[str, typer.Option("--subject", "-s")] = "",
    text: Annotated[
        str | None, typer.Option("--text", help="Plain body; '-' reads stdin, @FILE reads a file.")
    ] = None,
    html: Annotated[
        str | None, typer.Option("--html", help="HTML body; @FILE reads a file.")
    ] = None,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", help="File to attach (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="Extra header 'Name: value' (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send one message; print which provider took it and its Message-ID."""
    from .._mailer import Mailer
    from .._message import Message

    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep:
            _fail(f"--header {item!r} is not 'Name: value'", code=EXIT_USAGE)
        headers[name.strip()] = value.strip()
    if not (to or cc or bcc):
        _fail("no recipient", "give at least one --to (or --cc, --bcc)", EXIT_USAGE)
    fields: dict[str, Any] = {
        "to": to or [],
        "cc": cc or [],
        "bcc": bcc or [],
        "subject": subject,
        "text": _read_text(text),
        "html": _read_text(html),
        "attachments": list(attach or []),
        "headers": headers,
    }
    if sender is not None:
        fields["sender"] = sender
    message = Message(**fields)
    mailer = Mailer.from_config(config)

    async def go() -> Any:
        async with mailer:
            return await mailer.send(message)

    result = _run(go)
    if as_json:
        _print_json(
            {
                "ok": True,
                "provider": result.provider,
                "message_id": result.message_id,
                "provider_message_id": result.provider_message_id,
                "accepted": result.accepted,
                "rejected": {a: redact(r) for a, r in result.rejected.items()},
                "attempts": [
                    {
                        "provider": a.provider,
                        "outcome": a.outcome,
                        "error": redact(a.error) if a.error else None,
                        "code": a.code,
                        "duration": round(a.duration, 4),
                    }
                    for a in result.attempts
                ],
            }
        )
        return
    out.print(
        f"[green]sent[/] via [bold]{escape(result.provider)}[/]  "
        f"message-id {escape(result.message_id or '?')}"
        + (
            f"  provider-id {escape(result.provider_message_id)}"
            if result.provider_message_id
            else ""
        )
    )
    failed = [a for a in result.attempts if not a.ok]
    for attempt in failed:
        out.print(
            f"  [yellow]failed over[/] from {escape(attempt.provider)}: "
            f"{attempt.outcome}: {escape(_one_line(attempt.error or ''))}"
        )
    for address, reply in result.rejected.items():
        out.print(f"  [red]rejected[/] {escape(address)}: {escape(_one_line(reply))}")


# -- verify --------------------------------------------------------------------------------


@app.command()
@_friendly
def verify(
    config: ConfigOption = Path("mailer.toml"),
    timeout: Annotated[
        float, typer.Option(help="Seconds each provider's check may take (they run at once).")
    ] = 30.0,
    as_json: JsonOption = False,
) -> None:
    """Check every provider (connect, TLS, auth) without sending; exit 1 if any fails."""
    from .._config import load_config
    from .._mailer import Mailer

    cfg = load_config(config)
    types = {entry.name or entry.type: entry.type for entry in cfg.providers if entry.enabled}
    mailer = Mailer.from_config(cfg)
    health = mailer.health()  # names and priorities, in the Mailer's order

    async def go() -> dict[str, Exception | None]:
        results: dict[str, Exception | None] = {}

        async def one(name: str, provider: Any) -> None:
            # Each check under its own deadline, so one that hangs is named, not
            # "verify did not finish"; the others still report.
            try:
                with anyio.fail_after(timeout):
                    await provider.verify()
            except TimeoutError:
                results[name] = TimeoutError(
                    f"no answer within {timeout:g}s: the provider hangs (check its host, "
                    "port, secure setting and timeouts)"
                )
            except Exception as exc:
                results[name] = exc
            else:
                results[name] = None

        async with mailer, anyio.create_task_group() as tg:
            for provider in mailer.providers:
                tg.start_soon(one, provider.name, provider)
        return {name: results[name] for name in health}

    results: dict[str, Exception | None] = _run(go)
    failed = [name for name, error in results.items() if error is not None]
    if as_json:
        _print_json(
            {
                "ok": not failed,
                "config": str(config),
                "providers": [
                    {
                        "name": name,
                        "type": types.get(name),
                        "priority": health[name]["priority"],
                        "ok": error is None,
                        "error": None if error is None else _error_json(error),
                    }
                    for name, error in results.items()
                ],
            }
        )
        if failed:
            raise typer.Exit(EXIT_FAILED)
        return
    table = Table(title=f"Providers in {config}", title_justify="left")
    for col in ("priority", "name", "type", "result"):
        table.add_column(col)
    for name, error in results.items():
        if error is None:
            status = "[green]ok[/]"
        else:
            why = _one_line(str(error.args[0]) if error.args else str(error), 200)
            status = f"[red]FAILED[/] {escape(type(error).__name__)}: {escape(why)}"
        table.add_row(str(health[name]["priority"]), escape(name), types.get(name, "?"), status)
    out.print(table)
    if failed:
        _fail(
            f"{len(failed)} of {len(results)} provider(s) failed: {', '.join(failed)}",
            "each message is explained in " + see("troubleshooting"),
        )
    out.print(f"[green]all {len(results)} provider(s) ok[/]")


# -- health --------------------------------------------------------------------------------


@app.command()
@_friendly
def health(config: ConfigOption = Path("mailer.toml"), as_json: JsonOption = False) -> None:
    """Each provider's health as the store has it: state, who holds the probe, when the
    next probe may run, and the rate-limit slots left (shared ones with a Redis store)."""
    from .._config import load_config
    from .._mailer import Mailer
    from .._redact import redact_url

    cfg = load_config(config)
    mailer = Mailer.from_config(cfg)
    names = [p.name for p in mailer.providers]
    store = redact_url(cfg.health.store)

    async def go() -> dict[str, dict[str, Any]]:
        async with mailer:
            try:
                with anyio.fail_after(max(cfg.health.store_timeout * 8, 2.0)):
                    return await mailer._runtime.snapshot(names)
            except Exception as exc:
                error = ConfigError(
                    f"cannot read the health store {store}: {type(exc).__name__}: "
                    f"{_one_line(str(exc), 200)}"
                )
            raise error

    shared = cfg.health.store != "memory"
    try:
        rows: dict[str, dict[str, Any]] = _run(go)
    except ConfigError as exc:
        _fail(str(exc), "is Redis running and is health.store its URL? Sends do not need it: "
              "each process falls back to its own breakers")  # fmt: skip
    if as_json:
        _print_json({"store": store, "prefix": cfg.health.prefix if shared else None,
                     "providers": [{"name": n, **row} for n, row in rows.items()]})  # fmt: skip
        return
    title = f"Health in {store}" + (f" (prefix {cfg.health.prefix})" if shared else "")
    table = Table(title=title, title_justify="left")
    for col in ("name", "state", "failures", "next probe", "probe held by", "rate limit"):
        table.add_column(col)
    for name, row in rows.items():
        state = row["state"]
        colour = {"closed": "green", "open": "red"}.get(state, "yellow")
        wait = row["next_probe_in"]
        probe = f"in {wait:.1f}s" if state == "open" and wait > 0 else "-"
        if state == "open" and wait <= 0:
            probe = "now"
        holder = row["probe_holder"] or "-"
        if row["probe_holder"]:
            holder += f" ({row['probe_lease_left']:.1f}s left)"
        limit = row["rate_limit"]
        rate = "-" if limit is None else (
            f"{limit['slots_left']}/{limit['burst']} left ({limit['messages']} per "
            f"{limit['per']:g}s)"
        )  # fmt: skip
        table.add_row(escape(name), f"[{colour}]{state}[/]", str(row["failures"]), probe,
                      escape(holder), rate)  # fmt: skip
    out.print(table)
    if not shared:
        out.print(
            "health.store is memory: each process keeps its own breakers, so this shows a "
            "fresh process; set health.store to a Redis URL to share them"
        )


# -- providers -----------------------------------------------------------------------------


@app.command()
@_friendly
def providers() -> None:
    """List installed provider types, the package each comes from, and any that fail."""
    from .._plugins import discover

    infos = discover()
    table = Table(title="Provider types (entry-point group mailer.providers)", title_justify="left")
    for col in ("type", "package", "target", "status"):
        table.add_column(col)
    broken = 0
    for info in infos:
        package = f"{info.distribution or '?'} {info.version or ''}".strip()
        if info.distribution == "mailer-failover":
            package += " (built-in)"
        if info.ok:
            status = "[green]ok[/]"
        else:
            broken += 1
            status = f"[red]failed to load[/]: {escape(_one_line(info.error or '', 160))}"
        table.add_row(info.type, escape(package), escape(info.target), status)
    out.print(table)
    if broken:
        out.print(
            f"[yellow]{broken} provider type(s) failed to load[/]; the others work. "
            "Reinstall the package named, or its missing dependency."
        )


# -- doctor --------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def _render_diagnosis(diag: Diagnosis) -> None:
    out.print(f"[bold]mailer doctor {escape(diag.host)}:{diag.port}[/]")

    def row(label: str, value: str) -> None:
        out.print(f"  {label:<13} {value}")

    if not diag.reachable:
        row("connect", f"[red]failed[/]: {escape(diag.failure or '')}")
        return
    row("connect", f"ok ({diag.connect_ms:.0f} ms to {escape(diag.address or '?')})")
    for probe in diag.probes:
        label = "implicit TLS" if probe.mode == "implicit-tls" else "plaintext"
        if probe.ok:
            row(label, f"[green]yes[/]: {escape(probe.greeting or '')}")
        else:
            row(label, f"no: {escape(probe.failure or '')}")
    if diag.failure:
        row("result", f"[red]{escape(diag.failure)}[/]")
        return
    style = {"implicit TLS": "green", "STARTTLS": "green"}.get(diag.mode, "yellow")
    row("mode", f"[bold {style}]{diag.mode}[/]")
    cert = next((p.cert for p in diag.probes if p.cert is not None), None)
    if cert is not None:
        name = escape(cert.checked_name)
        if cert.verified:
            row("certificate", f"[green]valid[/] for {name} (the name sent in SNI and checked)")
        else:
            row("certificate", f"[red]NOT valid[/] for {name}: {escape(cert.problem or '?')}")
        row("  names", escape(", ".join(cert.names) or "(none found)"))
        if cert.issuer:
            row("  issuer", escape(cert.issuer))
        if cert.not_after:
            row("  expires", f"{cert.not_after} ({cert.days_left} days)")
        if cert.tls_version:
            row("  protocol", cert.tls_version)
    auth = " ".join(diag.auth) or "none offered"
    if diag.auth_before_tls:
        auth += f" (before TLS: {' '.join(diag.auth_before_tls)})"
    row("AUTH", escape(auth))
    row("PIPELINING", "yes" if diag.pipelining else "no")
    row(
        "SIZE",
        f"{diag.size} bytes ({diag.size / 1048576:.1f} MiB)" if diag.size else "not announced",
    )
    out.print("\n[bold]Settings to use[/] (mailer.toml):")
    out.print(escape('  [[providers]]\n  type = "smtp"\n  [providers.config]'))
    for key, value in diag.settings.items():
        out.print(f"  {key} = {escape(_toml_value(value))}")
    for note in diag.notes:
        out.print(f"[cyan]note[/]: {escape(note)}")
    for problem in diag.problems:
        out.print(f"[red]problem[/]: {escape(problem)}")


@app.command()
@_friendly
def doctor(
    host: Annotated[str, typer.Argument(help="SMTP server host name or IP address.")],
    port: Annotated[
        list[int] | None,
        typer.Option("--port", "-p", help="Port to probe (repeatable; default 587 and 465)."),
    ] = None,
    servername: Annotated[
        str | None, typer.Option(help="TLS name to send (SNI) and check; default HOST.")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="Trust this CA (PEM) instead of the system's.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds for each connect, handshake and reply.")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Probe an SMTP server: TLS mode, certificate and SNI, AUTH, and the settings to use."""
    ports = port or [587, 465]
    if ca_file is not None and not ca_file.is_file():
        _fail(f"--ca-file {ca_file} is not a readable file", code=EXIT_USAGE)

    from ..providers._smtp.doctor import diagnose

    async def go() -> list[Diagnosis]:
        return [
            await diagnose(host, p, servername=servername, ca_file=ca_file, timeout=timeout)
            for p in ports
        ]

    results = _run(go)
    if as_json:
        out.print_json(json.dumps([asdict(d) | {"ok": d.ok} for d in results]))
    else:
        for i, diag in enumerate(results):
            if i:
                out.print()
            _render_diagnosis(diag)
    if not any(d.ok for d in results):
        _fail(
            f"no port probed on {host} is ready to use as is (see the problems above)",
            "fix the problems listed above, or try another --port",
        )


# -- docs ----------------------------------------------------------------------------------


@app.command()
@_friendly
def docs(
    page: Annotated[str | None, typer.Argument(help="A page, e.g. configuration.")] = None,
    path: Annotated[bool, typer.Option("--path", help="Print the file's path only.")] = False,
) -> None:
    """Show a documentation page of the installed version (list them without PAGE)."""
    folder = docs_dir()
    if folder is None:
        _fail("the documentation is not installed with this copy", code=EXIT_FAILED)
    if page is None:
        for item in sorted(folder.glob("*.md")):
            first = item.read_text(encoding="utf-8").partition("\n")[0].lstrip("# ")
            out.print(f"  {item.stem:<24} {escape(first)}")
        return
    found = page_path(page)
    if found is None:
        pages = ", ".join(sorted(p.stem for p in folder.glob("*.md")))
        _fail(f"no page {page!r}", f"the pages are: {pages}", EXIT_USAGE)
    if path:
        out.print(str(found), soft_wrap=True)
    else:
        out.print(found.read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)


# -- demo ----------------------------------------------------------------------------------


@app.command()
@_friendly
def demo(
    messages: Annotated[
        int, typer.Option(min=10, max=5000, help="How many messages to send.")
    ] = 300,
    concurrency: Annotated[int, typer.Option(min=1, max=200, help="Sends in flight at once.")] = 20,
    rate: Annotated[
        float, typer.Option(min=1, max=2000, help="Messages started per second.")
    ] = 40.0,
) -> None:
    """Watch failover on loopback: two SMTP servers and a fake HTTP API, no account needed."""
    from .._demo.runner import DemoOptions, render_summary, run_demo

    options = DemoOptions(messages=messages, concurrency=concurrency, rate=rate)

    async def go() -> Any:
        return await run_demo(options, out)

    report = _run(go)
    out.print()
    render_summary(report, out)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``mailer = "mailer._cli:main"``)."""
    app(args=argv, prog_name="mailer")


if __name__ == "__main__":
    main()
