"""The ``mailer`` command: send, verify, providers, doctor, demo.

It is what a person types first, so it is built for the moment something is wrong: every
error is one line that says what failed, plus a hint that says what to do, and exits
non-zero (2 for a bad config, message or usage; 1 when delivery or a check failed). The
traceback is there under ``--debug``, never by default: a stack trace hides the one line
that matters, and a server's reply can be long.

``doctor`` is a raw SMTP probe of its own rather than a use of the SMTP provider: its job
is to find out what a server *does* (implicit TLS or STARTTLS, which certificate, which
AUTH methods) before anyone has a working config, so it must not need one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import logging
import os
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, ParamSpec, TypeVar

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from ._log import redact
from .errors import (
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
from .providers.smtp.config import is_loopback

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


def _one_line(text: str, limit: int = 400) -> str:
    """Server replies and validation errors can span lines; a CLI error must not."""
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


_CONFIG_HINTS: list[tuple[str, str]] = [
    ("cannot read config file", "pass --config PATH (TOML or JSON) or set MAILER_CONFIG"),
    ("unknown provider type", "run `mailer providers` to list the installed provider types"),
    ("failed to load", "run `mailer providers` to see why that plugin cannot be imported"),
    ("environment variable", "export it, or give a default in the config: ${NAME:-value}"),
    ("is not valid TOML", "fix the syntax at the line and column shown"),
    ("is not valid JSON", "fix the syntax at the line and column shown"),
    ("unknown option", "check the option's spelling against docs/configuration.md"),
]


def explain(exc: BaseException) -> tuple[str, str | None, int]:
    """(one-line message, hint, exit code) for an error that reached the command line."""
    text = _one_line(str(exc)) or type(exc).__name__
    if isinstance(exc, ConfigError):
        hint = next((h for key, h in _CONFIG_HINTS if key in text), None)
        return f"config: {text}", hint or "see docs/configuration.md", EXIT_USAGE
    if isinstance(exc, MessageError):
        return (
            f"message: {text}",
            "the message was refused before anything was sent; "
            "see docs/security.md (header injection)",
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
            f"[dim]hint:[/] {escape(hint)} [dim](see docs/troubleshooting.md)[/]", soft_wrap=True
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
            _fail(message, hint, code)

    return wrapper


def _run(fn: Callable[[], Any]) -> Any:
    # asyncio, not another anyio backend: the SMTP provider is built on aiosmtplib.
    return anyio.run(fn, backend="asyncio")


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the library's logs.")
    ] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Send email through several providers with failover. Try `mailer demo`."""
    if version:
        out.print(f"mailer-failover {__version__}")
        raise typer.Exit(0)
    _state.debug = debug
    logger = logging.getLogger("mailer")
    if debug or verbose:
        from rich.logging import RichHandler

        logger.addHandler(RichHandler(console=err, show_path=False, markup=False))
        logger.setLevel(logging.DEBUG if debug else logging.INFO)
    else:
        # The commands report what matters themselves; library warnings would repeat it
        # (and tear through the demo's live display).
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


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
) -> None:
    """Send one message; print which provider took it and its Message-ID."""
    from .mailer import Mailer
    from .message import Message

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
    timeout: Annotated[float, typer.Option(help="Seconds for all checks together.")] = 30.0,
) -> None:
    """Check every provider (connect, TLS, auth) without sending; exit 1 if any fails."""
    from .config import load_config
    from .mailer import Mailer

    cfg = load_config(config)
    types = {entry.name or entry.type: entry.type for entry in cfg.providers if entry.enabled}
    mailer = Mailer.from_config(cfg)

    async def go() -> dict[str, Exception | None]:
        async with mailer:
            with anyio.fail_after(timeout):
                return await mailer.verify()

    try:
        results = _run(go)
    except TimeoutError:
        _fail(
            f"verify did not finish within {timeout:g}s",
            "a provider hangs: check its host, port and timeouts",
        )
    health = mailer.health()
    table = Table(title=f"Providers in {config}", title_justify="left")
    for col in ("priority", "name", "type", "result"):
        table.add_column(col)
    failed = []
    for name, error in results.items():
        if error is None:
            status = "[green]ok[/]"
        else:
            failed.append(name)
            why = _one_line(str(error.args[0]) if error.args else str(error), 200)
            status = f"[red]FAILED[/] {escape(type(error).__name__)}: {escape(why)}"
        table.add_row(str(health[name]["priority"]), escape(name), types.get(name, "?"), status)
    out.print(table)
    if failed:
        _fail(
            f"{len(failed)} of {len(results)} provider(s) failed: {', '.join(failed)}",
            "see docs/troubleshooting.md for each message",
        )
    out.print(f"[green]all {len(results)} provider(s) ok[/]")


# -- providers -----------------------------------------------------------------------------


@app.command()
@_friendly
def providers() -> None:
    """List installed provider types, the package each comes from, and any that fail."""
    from .plugins import discover

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


class _NotSMTP(Exception):
    """The peer answered, but not in SMTP."""


@dataclass
class CertInfo:
    """What the server's certificate says, and whether we could trust it."""

    verified: bool
    checked_name: str
    problem: str | None = None
    names: list[str] = field(default_factory=list)
    subject: str | None = None
    issuer: str | None = None
    not_after: str | None = None
    days_left: int | None = None
    tls_version: str | None = None


@dataclass
class Probe:
    """One way of talking to the server (implicit TLS, or plaintext then STARTTLS)."""

    mode: Literal["implicit-tls", "plaintext"]
    ok: bool = False
    failure: str | None = None
    greeting: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    starttls: bool = False
    tls_extensions: dict[str, str] | None = None
    cert: CertInfo | None = None


@dataclass
class Diagnosis:
    host: str
    port: int
    servername: str
    reachable: bool = False
    address: str | None = None
    connect_ms: float | None = None
    failure: str | None = None
    mode: Literal["implicit TLS", "STARTTLS", "plaintext only", "unknown"] = "unknown"
    probes: list[Probe] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    auth_before_tls: list[str] = field(default_factory=list)
    pipelining: bool = False
    size: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reachable and self.mode != "unknown" and not self.problems


async def _reply(reader: asyncio.StreamReader, timeout: float) -> tuple[int, list[str]]:
    """One (multi-line) SMTP reply; bounded in lines and time."""
    lines: list[str] = []
    for _ in range(200):
        raw = await asyncio.wait_for(reader.readline(), timeout)
        if not raw:
            raise ConnectionError("the server closed the connection")
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if len(line) < 3 or not line[:3].isdigit() or (len(line) > 3 and line[3] not in " -"):
            raise _NotSMTP(f"not an SMTP reply: {line[:60]!r}")
        lines.append(line[4:])
        if len(line) == 3 or line[3] == " ":
            return int(line[:3]), lines
    raise _NotSMTP("an SMTP reply of more than 200 lines")


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, timeout: float
) -> tuple[int, list[str]]:
    writer.write(line.encode("ascii") + b"\r\n")
    await asyncio.wait_for(writer.drain(), timeout)
    return await _reply(reader, timeout)


def _extensions(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines[1:]:
        keyword, _, params = line.replace("=", " ", 1).partition(" ")
        key = keyword.upper()
        found[key] = " ".join(filter(None, [found.get(key, ""), params.strip()]))
    return found


async def _ehlo(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float
) -> dict[str, str]:
    sock = writer.get_extra_info("sockname")
    local = sock[0] if isinstance(sock, tuple) else "127.0.0.1"
    literal = f"[IPv6:{local}]" if ":" in local else f"[{local}]"
    code, lines = await _command(reader, writer, f"EHLO {literal}", timeout)
    if code != 250:
        code, lines = await _command(reader, writer, f"HELO {literal}", timeout)
        if code != 250:
            raise _NotSMTP(f"EHLO and HELO refused: {code} {' '.join(lines)}")
        return {}
    return _extensions(lines)


def _contexts(ca_file: Path | None) -> tuple[ssl.SSLContext, ssl.SSLContext, ssl.SSLContext]:
    """(trusting and checking the name, trusting but not checking it, trusting nothing).

    The weaker two exist only to *describe* a certificate the strict one refused: which
    names it carries and who issued it. Nothing is ever sent over them but EHLO and QUIT.
    """
    strict = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    noname = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    noname.check_hostname = False
    blind = ssl.create_default_context()
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE
    return strict, noname, blind


def _cert_from_dict(cert: dict[str, Any], info: CertInfo) -> None:
    def flat(rdns: Any) -> str:
        return ", ".join(f"{k}={v}" for rdn in rdns or () for k, v in rdn)

    info.names = [v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")]
    info.subject = flat(cert.get("subject"))
    info.issuer = flat(cert.get("issuer"))
    not_after = cert.get("notAfter")
    if isinstance(not_after, str):
        expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
        info.not_after = expires.strftime("%Y-%m-%d")
        info.days_left = (expires - datetime.now(UTC)).days


def _cert_from_der(der: bytes, info: CertInfo) -> None:
    """Names from a certificate nothing vouched for; needs the optional ``cryptography``."""
    try:
        from cryptography import x509
    except ImportError:
        return
    cert = x509.load_der_x509_certificate(der)
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        info.names = [
            *san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        ]
    info.subject = cert.subject.rfc4514_string()
    info.issuer = cert.issuer.rfc4514_string()
    expires = cert.not_valid_after_utc
    info.not_after = expires.strftime("%Y-%m-%d")
    info.days_left = (expires - datetime.now(UTC)).days


def _describe_tls(writer: asyncio.StreamWriter, info: CertInfo) -> None:
    obj = writer.get_extra_info("ssl_object")
    if not isinstance(obj, ssl.SSLObject):
        return
    info.tls_version = obj.version()
    cert = obj.getpeercert()
    if cert:
        _cert_from_dict(cert, info)
    else:
        der = obj.getpeercert(binary_form=True)
        if der:
            _cert_from_der(der, info)


def _close(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        writer.close()


async def _session(
    host: str,
    port: int,
    servername: str,
    context: ssl.SSLContext | None,
    implicit: bool,
    timeout: float,
) -> tuple[Probe, CertInfo | None]:
    """One conversation: connect (TLS first if implicit), greeting, EHLO, STARTTLS, QUIT.

    Raises ssl.SSLCertVerificationError when ``context`` refuses the certificate, so the
    caller can try again with a weaker context just to describe it.
    """
    probe = Probe("implicit-tls" if implicit else "plaintext")
    cert: CertInfo | None = None
    tls_kw: dict[str, Any] = {}
    if implicit:
        assert context is not None
        tls_kw = {"ssl": context, "server_hostname": servername, "ssl_handshake_timeout": timeout}
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, **tls_kw), timeout * (2 if implicit else 1)
    )
    try:
        if implicit:
            cert = CertInfo(
                verified=context is not None
                and context.verify_mode != ssl.CERT_NONE
                and context.check_hostname,
                checked_name=servername,
            )
            _describe_tls(writer, cert)
        try:
            code, lines = await _reply(reader, timeout)
        except TimeoutError:
            probe.failure = f"no greeting within {timeout:g}s"
            return probe, cert
        probe.greeting = f"{code} {lines[0] if lines else ''}".strip()
        if code != 220:
            probe.failure = f"the server refuses sessions: {probe.greeting}"
            return probe, cert
        probe.extensions = await _ehlo(reader, writer, timeout)
        probe.ok = True
        if not implicit and "STARTTLS" in probe.extensions and context is not None:
            code, lines = await _command(reader, writer, "STARTTLS", timeout)
            if code != 220:
                probe.failure = f"STARTTLS offered but refused: {code} {' '.join(lines)}"
                return probe, cert
            await asyncio.wait_for(writer.start_tls(context, server_hostname=servername), timeout)
            probe.starttls = True
            cert = CertInfo(
                verified=context.verify_mode != ssl.CERT_NONE and context.check_hostname,
                checked_name=servername,
            )
            _describe_tls(writer, cert)
            probe.tls_extensions = await _ehlo(reader, writer, timeout)
        with contextlib.suppress(Exception):
            await _command(reader, writer, "QUIT", min(timeout, 1.0))
        return probe, cert
    finally:
        _close(writer)


async def _probe(
    host: str, port: int, servername: str, implicit: bool, ca_file: Path | None, timeout: float
) -> Probe:
    """Probe one mode; if the certificate is refused, say why and describe it anyway."""
    strict, noname, blind = _contexts(ca_file)
    try:
        probe, cert = await _session(host, port, servername, strict, implicit, timeout)
        probe.cert = cert
        return probe
    except ssl.SSLCertVerificationError as exc:
        problem = exc.verify_message or exc.reason or str(exc)
        mismatch = exc.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH: the chain is fine
    weaker = noname if mismatch else blind
    probe, cert = await _session(host, port, servername, weaker, implicit, timeout)
    if cert is not None:
        cert.verified = False
        cert.problem = problem
    probe.cert = cert
    return probe


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def diagnose(
    host: str,
    port: int,
    *,
    servername: str | None = None,
    ca_file: Path | None = None,
    timeout: float = 5.0,
) -> Diagnosis:
    """Find out how to talk to an SMTP server, and what a config for it should say.

    Implicit TLS is tried first: on a plaintext server the handshake fails at once (the
    server's "220" is not a TLS record), whereas a plaintext probe of a TLS port waits out
    the whole greeting timeout - the very "465 without TLS" stall we want to explain.
    """
    name = servername or host
    diag = Diagnosis(host, port, name)
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        diag.failure = f"no answer from {host}:{port} within {timeout:g}s (a firewall drops it?)"
        if port == 25:
            diag.failure += "; many ISPs and clouds block outbound port 25"
        return diag
    except OSError as exc:
        if isinstance(exc, ConnectionRefusedError):
            diag.failure = f"nothing listens on {host}:{port} (connection refused)"
        else:
            diag.failure = f"cannot connect to {host}:{port}: {exc.strerror or exc}"
        return diag
    diag.reachable = True
    diag.connect_ms = (time.monotonic() - started) * 1000
    peer = writer.get_extra_info("peername")
    diag.address = str(peer[0]) if isinstance(peer, tuple) else None
    _close(writer)

    tls_probe: Probe | None = None
    try:
        tls_probe = await _probe(host, port, name, True, ca_file, timeout)
    except (ssl.SSLError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
        tls_probe = Probe("implicit-tls", failure=f"no TLS handshake ({_one_line(str(exc), 120)})")
    except (_NotSMTP, OSError) as exc:
        tls_probe = Probe("implicit-tls", failure=_one_line(str(exc), 160))
    diag.probes.append(tls_probe)
    if not tls_probe.ok:
        try:
            plain = await _probe(host, port, name, False, ca_file, timeout)
        except (_NotSMTP, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            plain = Probe("plaintext", failure=_one_line(str(exc) or type(exc).__name__, 160))
        diag.probes.append(plain)
    _conclude(diag, ca_file)
    return diag


def _conclude(diag: Diagnosis, ca_file: Path | None) -> None:
    """Turn what the probes saw into a mode, settings to use, and named mistakes."""
    host, port = diag.host, diag.port
    tls_probe = diag.probes[0]
    plain = diag.probes[1] if len(diag.probes) > 1 else None
    settings: dict[str, Any] = {"host": host, "port": port}
    cert: CertInfo | None = None
    if tls_probe.ok:
        diag.mode = "implicit TLS"
        cert = tls_probe.cert
        caps = tls_probe.extensions
        if port != 465:
            settings["secure"] = True
            diag.notes.append(
                f"port {port} speaks implicit TLS: set secure = true (it is only the "
                "default on port 465); without it the client waits for a greeting that "
                "never comes"
            )
        else:
            settings["secure"] = True
            diag.notes.append(
                "port 465 expects implicit TLS (secure = true, the default on 465). "
                "The common mistake: a plaintext client here waits for a greeting that "
                "never comes, then times out"
            )
    elif plain is not None and plain.ok:
        caps = plain.tls_extensions if plain.tls_extensions is not None else plain.extensions
        if plain.starttls:
            diag.mode = "STARTTLS"
            cert = plain.cert
            settings["require_tls"] = True
            if port == 465:
                settings["secure"] = False
                diag.notes.append(
                    "port 465 speaks STARTTLS here, not implicit TLS: set secure = false "
                    "explicitly (secure defaults to true on 465)"
                )
            else:
                diag.notes.append(
                    f"port {port} speaks STARTTLS: leave secure = false (the default). "
                    "The common mistake ('TLS on 587'): secure = true on a STARTTLS port "
                    "fails at once with 'wrong version number'"
                )
        else:
            diag.mode = "plaintext only"
            if is_loopback(host):
                settings["ignore_tls"] = True
                diag.notes.append(
                    "no STARTTLS offered: fine for a loopback test server (ignore_tls = true)"
                )
            else:
                diag.problems.append(
                    "the server offers no TLS at all: mail and any password would cross the "
                    "network in clear; the SMTP provider refuses AUTH without TLS, and "
                    "refuses to send (require_tls, on by default) unless require_tls = false"
                )
        if plain.extensions.get("AUTH") and plain.starttls:
            diag.auth_before_tls = plain.extensions["AUTH"].split()
            diag.notes.append(
                "the server offers AUTH before TLS; the SMTP provider never uses it there"
            )
        elif plain.extensions.get("AUTH") and not plain.starttls:
            diag.auth_before_tls = plain.extensions["AUTH"].split()
            diag.problems.append(
                "AUTH is offered over plaintext only: the SMTP provider will not send "
                "credentials without TLS (allow_plaintext_auth is for loopback tests)"
            )
    else:
        reasons = "; ".join(f"{p.mode}: {p.failure}" for p in diag.probes if p.failure)
        diag.failure = f"{host}:{port} accepts connections but does not speak SMTP ({reasons})"
        return
    diag.auth = caps.get("AUTH", "").split()
    diag.pipelining = "PIPELINING" in caps
    size = caps.get("SIZE", "").split()
    diag.size = int(size[0]) if size and size[0].isdigit() else None
    if cert is not None:
        _judge_cert(diag, cert, settings, ca_file)
    if diag.auth:
        settings["auth"] = {"user": "you@example.com", "password": "${SMTP_PASSWORD}"}
    elif diag.mode != "plaintext only":
        diag.notes.append(
            "no AUTH offered: the server takes mail without login (or only "
            "from allowed addresses), so leave auth out"
        )
    if port == 25:
        diag.notes.append(
            "port 25 is for server-to-server relay: often blocked outbound by ISPs and "
            "clouds, and relays may refuse AUTH; for an app prefer 587 (STARTTLS) or "
            "465 (implicit TLS)"
        )
    diag.settings = settings


def _judge_cert(
    diag: Diagnosis, cert: CertInfo, settings: dict[str, Any], ca_file: Path | None
) -> None:
    if ca_file is not None:
        settings["tls"] = {"ca_file": str(ca_file)}
    if cert.verified:
        if diag.servername != diag.host:
            settings.setdefault("tls", {})["servername"] = diag.servername
        if cert.days_left is not None and cert.days_left < 14:
            diag.notes.append(f"the certificate expires in {cert.days_left} day(s)")
        return
    problem = cert.problem or "not trusted"
    dns_names = [n for n in cert.names if not n.startswith("*") and not _is_ip(n)]
    if "hostname mismatch" in problem.lower() or "ip address mismatch" in problem.lower():
        if dns_names:
            settings.setdefault("tls", {})["servername"] = dns_names[0]
            diag.problems.append(
                f"the certificate does not carry the name {diag.servername!r} (it carries "
                f"{', '.join(cert.names)}): connect with tls.servername = "
                f"{dns_names[0]!r} (sent in SNI and checked), if that is the server you mean"
            )
        else:
            diag.problems.append(f"the certificate does not carry {diag.servername!r}")
    elif "expired" in problem.lower():
        diag.problems.append(
            f"the certificate has expired ({cert.not_after}): the server must renew it"
        )
    else:
        diag.problems.append(
            f"the certificate is not trusted ({problem}): if this server uses a private CA, "
            "set tls.ca_file to that CA's PEM file; never set tls.verify = false in production"
        )
        if dns_names and diag.servername not in cert.names:
            settings.setdefault("tls", {})["servername"] = dns_names[0]


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

    async def go() -> list[Diagnosis]:
        return [
            await diagnose(host, p, servername=servername, ca_file=ca_file, timeout=timeout)
            for p in ports
        ]

    results: list[Diagnosis] = _run(go)
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
    from ._demo.runner import DemoOptions, render_summary, run_demo

    options = DemoOptions(messages=messages, concurrency=concurrency, rate=rate)

    async def go() -> Any:
        return await run_demo(options, out)

    report = _run(go)
    out.print()
    render_summary(report, out)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``mailer = "mailer.cli:main"``)."""
    app(args=argv, prog_name="mailer")


if __name__ == "__main__":
    main()
