"""Real SMTP servers (aiosmtpd) and a real OAuth2 token endpoint on 127.0.0.1, for tests.

Reusable beyond the SMTP provider's own tests: the reliability work imports these.

* :class:`SMTPTestServer`: aiosmtpd in a thread, plaintext / STARTTLS / implicit TLS
  (trustme certificates), PLAIN + LOGIN + XOAUTH2, and per-command fault injection
  (:meth:`ServerState.fail`). It records every command (AUTH without its secret), every
  message, the SNI names it was asked for, and the live connection count (current and
  peak), so tests can assert what the *server* saw.
* :class:`SilentServer`: accepts TCP connections and never says a word (greeting hang,
  or an implicit-TLS port as seen by a plaintext client).
* :class:`ScriptedServer`: sends fixed lines on connect then closes (421 greeting...).
* :class:`TokenEndpoint`: a small HTTP server speaking the OAuth2 refresh-token grant.
* :class:`SOCKSProxy` (SOCKS4, 4a and 5, optional username/password) and
  :class:`HTTPConnectProxy` (optional Basic auth): real proxies that relay to loopback
  and record what each client asked for.
* :class:`Blackhole`: a loopback address whose connection attempts hang (SYNs dropped),
  as a broken IPv6 route does.

aiosmtpd traps handled here: it cannot bind port 0 (we pick a free port first);
implicit TLS with AUTH needs ``auth_require_tls=False``; a failed ``AuthResult`` must
have ``handled=False`` for the server to send our 535 itself.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.policy
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = [
    "TLS_NAME",
    "Blackhole",
    "Certs",
    "Fault",
    "HTTPConnectProxy",
    "SMTPTestServer",
    "SOCKSProxy",
    "ScriptedServer",
    "ServerState",
    "SilentServer",
    "StripTLSProxy",
    "SwitchServer",
    "TokenEndpoint",
    "free_port",
    "make_certs",
    "wait_until",
]

#: the only name in the test server certificate (so an IP host needs tls.servername)
TLS_NAME = "mail.test.example"
USERS = {"alice": "s3cret-pass"}


def free_port() -> int:
    """A port that was free a moment ago (aiosmtpd cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Certs:
    """A private CA and a server certificate for :data:`TLS_NAME` only."""

    ca: trustme.CA
    ca_file: Path
    server: trustme.LeafCert
    other_ca_file: Path  # a CA that signed nothing we serve: "unknown CA"

    def server_context(self, on_sni: Any = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if on_sni is not None:
            ctx.sni_callback = on_sni
        return ctx


def make_certs(directory: Path, names: tuple[str, ...] = (TLS_NAME,)) -> Certs:
    """A private CA in ``directory`` and a server certificate carrying ``names``."""
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = directory / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return Certs(ca=ca, ca_file=ca_file, server=ca.issue_cert(*names), other_ca_file=other)


@dataclass
class Fault:
    """Answer ``command`` (and ``match`` in its argument) with ``reply``, or act.

    ``reply`` is an SMTP reply line ("451 4.3.0 try later"), or "drop" (close without a
    reply) or "hang" (never reply), or "delay:SECONDS" (answer as usual, but late).
    ``command`` "DATA_END" is the reply to the message itself, after the final "."; "IDLE"
    makes idle timeouts send ``reply`` before closing.
    ``times`` limits how often it fires (None: always); ``skip`` lets that many matching
    commands through first (fail the second DATA_END: ``skip=1``).
    """

    command: str
    reply: str
    match: str | None = None
    times: int | None = None
    skip: int = 0


@dataclass
class ServerState:
    """What the server saw, shared between its thread and the test (under a lock)."""

    commands: list[str] = field(default_factory=list)
    messages: list[Envelope] = field(default_factory=list)
    #: the client address (host, port) each message came from, in step with ``messages``
    peers: list[Any] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    auth_tokens: list[str] = field(default_factory=list)
    valid_tokens: set[str] = field(default_factory=set)
    faults: list[Fault] = field(default_factory=list)
    connections: int = 0
    current: int = 0
    peak: int = 0
    #: offer PIPELINING (RFC 2920) in EHLO
    pipelining: bool = False
    #: offer 8BITMIME (RFC 6152) in EHLO, as aiosmtpd does; False: a 7-bit-only server
    eight_bit_mime: bool = True
    #: (verb, whether more input was already waiting when it was handled): a True after
    #: MAIL means the client did not wait for MAIL's reply before sending RCPT
    buffered: list[tuple[str, bool]] = field(default_factory=list)
    #: recipients taken per transaction; RCPTs beyond it get ``too_many_reply``
    max_recipients: int | None = None
    too_many_reply: str = "452 4.5.3 Error: too many recipients"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, command: str, reply: str, *, match: str | None = None,
             times: int | None = None, skip: int = 0) -> None:  # fmt: skip
        """Inject a fault for later commands."""
        with self.lock:
            self.faults.append(Fault(command.upper(), reply, match, times, skip))

    def take_fault(self, command: str, arg: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.command != command:
                    continue
                if fault.match is not None and fault.match not in (arg or ""):
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    continue
                if fault.times is not None:
                    if fault.times <= 0:
                        continue
                    fault.times -= 1
                return fault
        return None

    def reset(self) -> None:
        with self.lock:
            self.commands.clear()
            self.buffered.clear()
            self.messages.clear()
            self.peers.clear()
            self.sni.clear()
            self.auth_tokens.clear()
            self.connections = 0
            self.peak = self.current

    def opened(self) -> None:
        with self.lock:
            self.connections += 1
            self.current += 1
            self.peak = max(self.peak, self.current)

    def closed(self) -> None:
        with self.lock:
            self.current -= 1

    def verbs(self) -> list[str]:
        return [c.split(" ", 1)[0] for c in self.commands]

    def message_ids(self) -> list[str]:
        """The Message-ID of every message received, in order (a delivery ledger)."""
        with self.lock:
            envelopes = list(self.messages)
        ids = []
        for envelope in envelopes:
            content = envelope.original_content or b""
            headers = BytesParser(policy=email.policy.compat32).parsebytes(
                content, headersonly=True
            )
            ids.append(str(headers.get("Message-ID", "")).strip())
        return ids


class _FaultySMTP(SMTP):
    """aiosmtpd's server, recording commands and injecting faults per command."""

    def __init__(self, handler: Any, *, state: ServerState, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = state
        self._counted = False
        self._in_ehlo = False
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._wrap(verb, method)

    def _wrap(self, verb: str, method: Any) -> Any:
        async def wrapper(arg: str) -> None:
            shown = (arg or "").split(" ", 1)[0] if verb == "AUTH" else (arg or "")
            self._state.commands.append(f"{verb} {shown}".strip())
            waiting = bool(getattr(self._reader, "_buffer", b""))
            self._state.buffered.append((verb, waiting))
            fault = self._state.take_fault(verb, arg)
            if fault is None or fault.reply.startswith("delay:"):
                if fault is not None:
                    await asyncio.sleep(float(fault.reply.removeprefix("delay:")))
                self._in_ehlo = verb == "EHLO"
                try:
                    await method(arg)
                finally:
                    self._in_ehlo = False
            elif fault.reply == "drop":
                assert self.transport is not None
                self.transport.close()
            elif fault.reply == "hang":
                await asyncio.sleep(60)
            else:
                await self.push(fault.reply)
                if fault.reply.startswith("421") and self.transport is not None:
                    self.transport.close()

        return wrapper

    async def push(self, status: Any) -> None:
        if self._in_ehlo and not self._state.eight_bit_mime and status == "250-8BITMIME":
            return
        if self._in_ehlo and self._state.pipelining and status == "250 HELP":
            await super().push("250-PIPELINING")
        await super().push(status)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._counted:
            self._counted = True
            self._state.opened()
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._counted:
            self._counted = False
            self._state.closed()
        super().connection_lost(error)

    def _timeout_cb(self) -> None:
        # Real servers say why they hang up on an idle client.
        fault = self._state.take_fault("IDLE", "")
        if fault is not None and self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.write(fault.reply.encode() + b"\r\n")
        super()._timeout_cb()


class _Handler:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str,
        rcpt_options: list[str],
    ) -> str:  # fmt: skip
        limit = self.state.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return self.state.too_many_reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self.state.take_fault("DATA_END", "")
        reader = getattr(server, "_reader", None)
        # True when the client's next commands came with the payload (pipelined behind it)
        self.state.buffered.append(("DATA_END", bool(getattr(reader, "_buffer", b""))))
        if fault is not None and fault.reply.startswith("delay:"):
            await asyncio.sleep(float(fault.reply.removeprefix("delay:")))
            fault = None
        if fault is not None:
            if fault.reply == "drop":
                assert server.transport is not None
                server.transport.close()
                await asyncio.sleep(60)  # cancelled when the connection goes
            if fault.reply == "hang":
                await asyncio.sleep(60)
            return fault.reply
        with self.state.lock:
            self.state.messages.append(envelope)
            self.state.peers.append(session.peer)
        return "250 2.0.0 OK queued as test"

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        if len(args) == 2:
            blob = base64.b64decode(args[1])
        else:
            answer = await server.challenge_auth("", encode_to_b64=False)
            if not isinstance(answer, bytes):
                return AuthResult(success=False, handled=False)
            blob = answer
        fields = dict(part.split("=", 1) for part in blob.decode().split("\x01") if "=" in part)
        token = fields.get("auth", "").removeprefix("Bearer ")
        self.state.auth_tokens.append(token)
        if token in self.state.valid_tokens and fields.get("user") in USERS:
            return AuthResult(success=True, auth_data=fields["user"])
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "smtp"})
        await server.challenge_auth(error)  # the client answers with an empty line
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )


def _authenticator(
    server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    if isinstance(data, LoginPassword):
        user, password = data.login.decode(), data.password.decode()
        if USERS.get(user) == password:
            return AuthResult(success=True, auth_data=user)
    return AuthResult(success=False, handled=False)


class _Controller(Controller):
    def __init__(self, handler: _Handler, state: ServerState, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = state

    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, state=self._state, **self.SMTP_kwargs)


class SMTPTestServer:
    """aiosmtpd on 127.0.0.1 in a thread.

    ``tls``: None (plaintext), "starttls" or "implicit". ``auth``: offer AUTH (PLAIN,
    LOGIN, XOAUTH2) - on a plaintext server that means AUTH without TLS, which the client
    must refuse unless allowed. ``idle_timeout``: the server's own idle timeout.
    ``smtputf8``: offer SMTPUTF8 (RFC 6531) and take UTF-8 addresses.
    ``pipelining``: offer PIPELINING in EHLO (aiosmtpd itself does not, though it reads
    pipelined commands in order); None reads ``SMTP_TEST_PIPELINING=1`` from the
    environment, so the whole suite can be run against pipelining servers.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        certs: Certs | None = None,
        *,
        tls: str | None = None,
        auth: bool = True,
        auth_required: bool = False,
        idle_timeout: float = 300.0,
        pipelining: bool | None = None,
        smtputf8: bool = False,
    ) -> None:
        if tls is not None and certs is None:
            raise ValueError("TLS needs certs")
        self.certs = certs
        self.tls = tls
        self.state = ServerState()
        if pipelining is None:
            pipelining = os.environ.get("SMTP_TEST_PIPELINING") == "1"
        self.state.pipelining = pipelining
        self.port = 0
        self._auth = auth
        self._auth_required = auth_required
        self._idle_timeout = idle_timeout
        self._smtputf8 = smtputf8
        self._controller: _Controller | None = None

    def _on_sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        self.state.sni.append(name)

    def start(self, port: int | None = None) -> SMTPTestServer:
        """Start on a free port, or on ``port`` (a server that comes back where it was)."""
        kwargs: dict[str, Any] = {
            "timeout": self._idle_timeout,
            "auth_required": self._auth_required,
            "enable_SMTPUTF8": self._smtputf8,
        }
        if self.tls is not None:
            assert self.certs is not None
            context = self.certs.server_context(self._on_sni)
            if self.tls == "implicit":
                kwargs["ssl_context"] = context
            else:
                kwargs["tls_context"] = context
        if self._auth:
            kwargs["authenticator"] = _authenticator
            kwargs["auth_require_tls"] = False
        else:
            kwargs["auth_exclude_mechanism"] = ["PLAIN", "LOGIN", "XOAUTH2"]
        for _ in range(5 if port is None else 20):
            self.port = free_port() if port is None else port
            controller = _Controller(
                _Handler(self.state), self.state, hostname=self.host, port=self.port,
                server_hostname=TLS_NAME, ready_timeout=5.0, **kwargs,
            )  # fmt: skip
            try:
                controller.start()
            except OSError:
                if port is not None:
                    time.sleep(0.1)  # the port may be in TIME_WAIT a moment longer
                continue
            self._controller = controller
            break
        else:
            raise RuntimeError("could not bind a test SMTP server")
        # Forget the controller's own readiness probe.
        deadline = time.monotonic() + 2
        while self.state.current and time.monotonic() < deadline:
            time.sleep(0.01)
        self.state.reset()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A provider config for this server, verified against the test CA."""
        config: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "secure": self.tls == "implicit",
            "name": "client.test",
            "connection_timeout": 2.0,
            "greeting_timeout": 2.0,
            "socket_timeout": 3.0,
        }
        if self.tls is not None:
            assert self.certs is not None
            config["tls"] = {"ca_file": str(self.certs.ca_file), "servername": TLS_NAME}
        config.update(overrides)
        return config

    def named_config(self, **overrides: Any) -> dict[str, Any]:
        """:meth:`config` with ``host`` = the certificate's name (TLS_NAME), and only
        ``tls.ca_file``: SNI and the name check use the host itself. The test resolves
        TLS_NAME to loopback (or a proxy does), and the non-loopback defaults apply."""
        config = self.config(host=TLS_NAME, **overrides)
        assert self.certs is not None
        config["tls"] = {"ca_file": str(self.certs.ca_file)}
        return config

    def wait_for(self, predicate: Any, timeout: float = 2.0) -> bool:
        """Poll server state (it lives in another thread) until ``predicate()``."""
        return wait_until(predicate, timeout)


def wait_until(predicate: Any, timeout: float) -> bool:
    """Poll ``predicate()`` every 10 ms until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


class _ThreadedSocketServer:
    host = "127.0.0.1"

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind((self.host, 0))
        self._listener.listen(64)
        self._listener.settimeout(0.1)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> _ThreadedSocketServer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            self._clients.append(client)
            with contextlib.suppress(OSError):
                self.on_connect(client)

    def on_connect(self, client: socket.socket) -> None:
        pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for client in self._clients:
            client.close()
        self._listener.close()


class SilentServer(_ThreadedSocketServer):
    """Accepts connections and never sends anything."""


class ScriptedServer(_ThreadedSocketServer):
    """Sends ``lines`` on connect, then closes (e.g. "421 4.3.2 too busy")."""

    def __init__(self, lines: list[str], *, close: bool = True) -> None:
        super().__init__()
        self._payload = "".join(f"{line}\r\n" for line in lines).encode()
        self._close = close

    def on_connect(self, client: socket.socket) -> None:
        client.sendall(self._payload)
        if self._close:
            client.shutdown(socket.SHUT_RDWR)


class StripTLSProxy(_ThreadedSocketServer):
    """A man in the middle on 127.0.0.1 that removes STARTTLS from the EHLO reply.

    Everything is relayed both ways, except that ``250-STARTTLS``/``250 STARTTLS`` lines
    never reach the client (the multi-line reply is re-terminated), the downgrade attack
    that makes an opportunistic client send in plaintext. ``seen_by_mitm`` keeps what
    the client sent, as the attacker would read it.
    """

    def __init__(self, upstream_port: int) -> None:
        super().__init__()
        self._upstream_port = upstream_port
        self.seen_by_mitm = bytearray()
        self._lock = threading.Lock()

    def on_connect(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port), timeout=5)
        self._clients.append(upstream)
        for target in (self._to_server, self._to_client):
            threading.Thread(target=target, args=(client, upstream), daemon=True).start()

    def _to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                with self._lock:
                    self.seen_by_mitm += data
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.shutdown(socket.SHUT_WR)

    def _to_client(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer, held = b"", []
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                buffer += data
                *lines, buffer = buffer.split(b"\r\n")
                out = []
                for line in lines:
                    if line[:4] == b"250-":
                        held.append(line)  # a multi-line reply: wait for its last line
                        continue
                    if held or line[:3] == b"250":
                        reply = [x for x in [*held, line] if x[4:].upper() != b"STARTTLS"]
                        held = []
                        if not reply:
                            continue
                        reply = [b"250-" + x[4:] for x in reply[:-1]] + [b"250 " + reply[-1][4:]]
                        out += reply
                    else:
                        out.append(line)
                if out:
                    client.sendall(b"".join(x + b"\r\n" for x in out))
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)


class SwitchServer(_ThreadedSocketServer):
    """A port whose server can hang or come back: while ``hung``, it accepts connections
    and never says a word (as :class:`SilentServer`); otherwise it relays each new
    connection to ``target`` (a real server). ``connections`` records (time.time(),
    hung) for each connection, so tests can tell the probes from the sends."""

    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target
        self.hung = True
        self.connections: list[tuple[float, bool]] = []

    def on_connect(self, client: socket.socket) -> None:
        hung = self.hung
        self.connections.append((time.time(), hung))
        if hung:
            return
        upstream = socket.create_connection(self.target, timeout=5)
        self._clients.append(upstream)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    source.settimeout(None)
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class _Proxy(_ThreadedSocketServer):
    """What both proxies share: credentials, a name table, the relay, the record.

    ``resolve`` maps host names the proxy is asked for (socks5h, socks4a, HTTP) to
    loopback addresses, so a client can name the test certificate's host and stay on
    127.0.0.1. ``requests`` records each destination as the client sent it (a name or
    an address), ``auth`` each credential pair offered.
    """

    def __init__(
        self, *, user: str | None = None, password: str | None = None,
        resolve: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.user, self.password = user, password
        self.resolve = dict(resolve or {})
        self.requests: list[tuple[str, int]] = []
        self.auth: list[tuple[str, str]] = []

    def on_connect(self, client: socket.socket) -> None:
        threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(5)
        with contextlib.suppress(OSError, ValueError):
            self.handshake(client)

    def handshake(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _open(self, host: str, port: int) -> socket.socket | None:
        self.requests.append((host, port))
        try:
            upstream = socket.create_connection((self.resolve.get(host, host), port), timeout=5)
        except OSError:
            return None
        self._clients.append(upstream)
        return upstream

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pipe, args=(a, b), daemon=True).start()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ValueError("closed")
        data += chunk
    return data


class SOCKSProxy(_Proxy):
    """SOCKS5 (RFC 1928, RFC 1929 username/password when ``user`` is set) and SOCKS4/4a."""

    def handshake(self, client: socket.socket) -> None:
        version = _read_exactly(client, 1)[0]
        if version == 5:
            self._socks5(client)
        elif version == 4:
            self._socks4(client)
        else:
            client.close()

    def _socks5(self, client: socket.socket) -> None:
        methods = _read_exactly(client, _read_exactly(client, 1)[0])
        wanted = 2 if self.user is not None else 0
        if wanted not in methods:
            client.sendall(b"\x05\xff")
            client.close()
            return
        client.sendall(bytes([5, wanted]))
        if wanted == 2:
            _read_exactly(client, 1)  # sub-negotiation version 1
            user = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
            password = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
            self.auth.append((user, password))
            ok = (user, password) == (self.user, self.password)
            client.sendall(b"\x01\x00" if ok else b"\x01\x01")
            if not ok:
                client.close()
                return
        _, command, _, kind = _read_exactly(client, 4)
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, _read_exactly(client, 4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, _read_exactly(client, 16))
        else:
            host = _read_exactly(client, _read_exactly(client, 1)[0]).decode()
        port = int.from_bytes(_read_exactly(client, 2), "big")
        upstream = self._open(host, port) if command == 1 else None
        reply = 0 if upstream is not None else (5 if command == 1 else 7)
        client.sendall(bytes([5, reply, 0, 1, 0, 0, 0, 0, 0, 0]))
        if upstream is None:
            client.close()
            return
        self._relay(client, upstream)

    def _socks4(self, client: socket.socket) -> None:
        command, port_hi, port_lo = _read_exactly(client, 3)
        address = _read_exactly(client, 4)
        user = b""
        while (byte := _read_exactly(client, 1)) != b"\x00":
            user += byte
        self.auth.append((user.decode(), ""))
        if address[:3] == b"\x00\x00\x00" and address[3]:  # SOCKS4a: a name follows
            name = b""
            while (byte := _read_exactly(client, 1)) != b"\x00":
                name += byte
            host = name.decode()
        else:
            host = socket.inet_ntoa(address)
        if self.user is not None and user.decode() != self.user:
            client.sendall(b"\x00\x5d" + b"\x00" * 6)
            client.close()
            return
        upstream = self._open(host, port_hi * 256 + port_lo) if command == 1 else None
        client.sendall(b"\x00" + (b"\x5a" if upstream else b"\x5b") + b"\x00" * 6)
        if upstream is None:
            client.close()
            return
        self._relay(client, upstream)


class HTTPConnectProxy(_Proxy):
    """HTTP CONNECT (RFC 9110 section 9.3.6), Basic ``Proxy-Authorization`` when ``user``
    is set (407 otherwise); anything but CONNECT gets 405."""

    def handshake(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        request, *lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        method, target, _ = request.split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            client.close()
            return
        if self.user is not None:
            given = headers.get("proxy-authorization", "")
            if given.startswith("Basic "):
                user, _, password = base64.b64decode(given[6:]).decode().partition(":")
                self.auth.append((user, password))
            expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
            if given != f"Basic {expected}":
                client.sendall(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                    b'Proxy-Authenticate: Basic realm="test"\r\n\r\n'
                )
                client.close()
                return
        host, _, port = target.rpartition(":")
        upstream = self._open(host.strip("[]"), int(port))
        if upstream is None:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            client.close()
            return
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._relay(client, upstream)


class Blackhole:
    """A loopback address and port where a TCP connect hangs, as on a broken route.

    A listener with a backlog of 0 whose queue is filled and never accepted: Linux
    then drops further SYNs, so a connect neither succeeds nor fails until its timeout,
    which is what a blackholed IPv6 route does to a client.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(0)
        self.port = int(self._listener.getsockname()[1])
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket(family, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((host, self.port))
            self._fillers.append(filler)

    def hangs(self, timeout: float = 0.3) -> bool:
        """Whether a connect to it is still pending after ``timeout`` (the premise)."""
        family = self._listener.family
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.settimeout(timeout)
            try:
                probe.connect((self.host, self.port))
            except TimeoutError:
                return True
            except OSError:
                return False
            return False

    def close(self) -> None:
        for filler in self._fillers:
            filler.close()
        self._listener.close()


class TokenEndpoint:
    """An OAuth2 token endpoint (refresh-token grant) on 127.0.0.1.

    Hands out ``tokens`` in order (the last one repeats) with ``expires_in``; or, with
    ``error`` set, answers ``status`` and ``{"error": error, ...}``. Records each request
    form, and sleeps ``delay`` seconds per request (to widen races).
    """

    def __init__(self, tokens: list[str] | None = None) -> None:
        self.tokens = list(tokens or ["fresh-token"])
        self.expires_in: float | None = 3600
        self.error: str | None = None
        self.status = 400
        self.delay = 0.0
        self.requests: list[dict[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                endpoint.requests.append(form)
                time.sleep(endpoint.delay)
                if endpoint.error is not None:
                    status, body = (
                        endpoint.status,
                        {
                            "error": endpoint.error,
                            "error_description": "Token has been expired or revoked.",
                        },
                    )
                else:
                    index = min(len(endpoint.requests), len(endpoint.tokens)) - 1
                    status, body = (
                        200,
                        {
                            "access_token": endpoint.tokens[index],
                            "token_type": "Bearer",
                        },
                    )
                    if endpoint.expires_in is not None:
                        body["expires_in"] = endpoint.expires_in
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)


@contextlib.contextmanager
def running(*servers: Any) -> Iterator[None]:
    """Start servers and stop them whatever happens."""
    started = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield
    finally:
        for server in reversed(started):
            server.stop()
