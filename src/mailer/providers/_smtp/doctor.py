"""``mailer doctor``: find out how an SMTP server must be talked to, and say so.

A raw SMTP probe of its own rather than a use of the SMTP provider: its job is to find out
what a server *does* (implicit TLS or STARTTLS, which certificate, which AUTH mechanisms)
before anyone has a working config, so it must not need one.

Two halves. :func:`diagnose` does the I/O and records what it saw in a :class:`Diagnosis`;
:func:`conclude`, :func:`judge_cert` and :func:`suggest_auth` are pure decisions over that
record (tested directly, with no server), and the CLI only renders the result. The
settings they suggest are checked against :class:`SMTPConfig` before they are shown, so
the doctor never advises a config the provider would refuse.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aiosmtplib.errors import SMTPResponseException
from pydantic import ValidationError

from ..._log import one_line
from ..._options import validation_text
from ..._text import REASON
from .config import SMTPConfig, is_loopback
from .pipeline import Reply, parse_replies

__all__ = [
    "CertInfo",
    "Diagnosis",
    "Probe",
    "check_settings",
    "conclude",
    "diagnose",
    "judge_cert",
    "suggest_auth",
]

#: the mechanisms the SMTP provider speaks
SUPPORTED_AUTH = ("PLAIN", "LOGIN", "XOAUTH2")


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
    #: usable as is, but at a cost the user must accept knowingly (not a problem: the
    #: exit code stays 0)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reachable and self.mode != "unknown" and not self.problems


async def _reply(reader: asyncio.StreamReader, timeout: float) -> Reply:
    """One (multi-line) SMTP reply, read a line at a time (so nothing past it is taken)
    and parsed by the parser the SMTP provider uses; bounded in size and time."""
    buffer, replies = bytearray(), deque[Reply]()
    while not replies:
        raw = await asyncio.wait_for(reader.readline(), timeout)
        if not raw:
            raise ConnectionError("the server closed the connection")
        buffer += raw
        try:
            parse_replies(buffer, replies, 1)
        except SMTPResponseException as exc:
            raise _NotSMTP(f"not an SMTP reply ({exc.message})") from None
    code, text = replies[0]
    # shown to a person, not matched: bytes that are not UTF-8 become U+FFFD
    return Reply(code, text.encode("utf-8", "surrogateescape").decode("utf-8", "replace"))


async def _command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: str, timeout: float
) -> Reply:
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
    reply = await _command(reader, writer, f"EHLO {literal}", timeout)
    if reply.code != 250:
        reply = await _command(reader, writer, f"HELO {literal}", timeout)
        if reply.code != 250:
            raise _NotSMTP(f"EHLO and HELO refused: {reply.code} {' '.join(reply.lines)}")
        return {}
    return _extensions(reply.lines)


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
            greeting = await _reply(reader, timeout)
        except TimeoutError:
            probe.failure = f"no greeting within {timeout:g}s"
            return probe, cert
        probe.greeting = f"{greeting.code} {greeting.lines[0]}".strip()
        if greeting.code != 220:
            probe.failure = f"the server refuses sessions: {probe.greeting}"
            return probe, cert
        probe.extensions = await _ehlo(reader, writer, timeout)
        probe.ok = True
        if not implicit and "STARTTLS" in probe.extensions and context is not None:
            reply = await _command(reader, writer, "STARTTLS", timeout)
            if reply.code != 220:
                text = " ".join(reply.lines)
                probe.failure = f"STARTTLS offered but refused: {reply.code} {text}"
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
        tls_probe = Probe(
            "implicit-tls", failure=f"no TLS handshake ({one_line(str(exc), REASON)})"
        )
    except (_NotSMTP, OSError) as exc:
        tls_probe = Probe("implicit-tls", failure=one_line(str(exc), REASON))
    diag.probes.append(tls_probe)
    if not tls_probe.ok:
        try:
            plain = await _probe(host, port, name, False, ca_file, timeout)
        except (_NotSMTP, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
            plain = Probe("plaintext", failure=one_line(str(exc) or type(exc).__name__, REASON))
        diag.probes.append(plain)
    conclude(diag, ca_file)
    return diag


def suggest_auth(mechanisms: list[str]) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """(auth settings, a note, a problem) for the AUTH mechanisms a server offers.

    Password auth only when the server takes PLAIN or LOGIN; a server that offers only
    XOAUTH2 (Gmail and Microsoft 365 with basic auth off) needs OAuth2, and a password
    config would fail at the first send.
    """
    offered = {m.upper() for m in mechanisms}
    if not offered:
        note = (
            "no AUTH offered: the server takes mail without login (or only from allowed "
            "addresses), so leave auth out"
        )
        return None, note, None
    if offered & {"PLAIN", "LOGIN"}:
        return {"user": "you@example.com", "password": "${SMTP_PASSWORD}"}, None, None
    if "XOAUTH2" in offered:
        auth = {"user": "you@example.com", "oauth2": {"access_token": "${SMTP_ACCESS_TOKEN}"}}
        note = (
            "the server offers only XOAUTH2, no password login: authenticate with OAuth2 "
            "(a static oauth2.access_token as shown, or oauth2.preset / token_url with "
            "client_id, client_secret and refresh_token to refresh it; `mailer docs smtp`)"
        )
        return auth, note, None
    problem = (
        f"the server offers AUTH {' '.join(sorted(offered))} only; the SMTP provider speaks "
        f"{', '.join(SUPPORTED_AUTH)}"
    )
    return None, None, problem


def check_settings(settings: dict[str, Any]) -> str | None:
    """Why our own config check refuses ``settings``, or None when it accepts them."""
    try:
        SMTPConfig.model_validate(settings)
    except ValidationError as exc:
        return validation_text("config for the suggested settings", exc, SMTPConfig)
    return None


def conclude(diag: Diagnosis, ca_file: Path | None = None) -> None:
    """Turn what the probes saw into a mode, settings to use, and named mistakes."""
    host, port = diag.host, diag.port
    tls_probe = diag.probes[0]
    plain = diag.probes[1] if len(diag.probes) > 1 else None
    settings: dict[str, Any] = {"host": host, "port": port}
    cert: CertInfo | None = None
    # whether a password or token would cross the network in clear
    plaintext = False
    if tls_probe.ok:
        diag.mode = "implicit TLS"
        cert = tls_probe.cert
        caps = tls_probe.extensions
        settings["secure"] = True
        if port != 465:
            diag.notes.append(
                f"port {port} speaks implicit TLS: set secure = true (it is only the "
                "default on port 465); without it the client waits for a greeting that "
                "never comes"
            )
        else:
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
            if plain.extensions.get("AUTH"):
                diag.auth_before_tls = plain.extensions["AUTH"].split()
                diag.notes.append(
                    "the server offers AUTH before TLS; the SMTP provider never uses it there"
                )
        else:
            diag.mode = "plaintext only"
            plaintext = True
            if not is_loopback(host):
                diag.problems.append(
                    "the server offers no TLS at all: mail and any password would cross the "
                    "network in clear; the SMTP provider refuses AUTH without TLS"
                )
            if plain.extensions.get("AUTH"):
                diag.auth_before_tls = plain.extensions["AUTH"].split()
                if not is_loopback(host):
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
        judge_cert(diag, cert, settings, ca_file)
    auth, note, problem = suggest_auth(diag.auth)
    if plaintext and auth is not None:
        if is_loopback(host):
            # a loopback test server (Mailhog, a dev relay): the one place this is allowed
            settings["ignore_tls"] = True
            settings["allow_plaintext_auth"] = True
            settings["auth"] = auth
            diag.warnings.append(
                "credentials will cross in clear: this server offers AUTH without TLS "
                "(no STARTTLS), so allow_plaintext_auth = true sends the user and password "
                "unencrypted; acceptable for a loopback test server only, and only with "
                "a password used nowhere else"
            )
        # elsewhere: no auth settings; the problems above say why
    else:
        if plaintext and is_loopback(host):
            settings["ignore_tls"] = True
            diag.notes.append(
                "no STARTTLS offered: fine for a loopback test server (ignore_tls = true)"
            )
        if auth is not None:
            settings["auth"] = auth
        if note is not None:
            diag.notes.append(note)
    if problem is not None:
        diag.problems.append(problem)
    if port == 25:
        diag.notes.append(
            "port 25 is for server-to-server relay: often blocked outbound by ISPs and "
            "clouds, and relays may refuse AUTH; for an app prefer 587 (STARTTLS) or "
            "465 (implicit TLS)"
        )
    refused = check_settings(settings)
    if refused is not None:  # a bug in the rules above; never print a config we refuse
        diag.problems.append(f"no working settings could be derived: {refused}")
    diag.settings = settings


def judge_cert(
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
