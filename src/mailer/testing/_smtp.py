"""A real SMTP server with injected faults: aiosmtpd on 127.0.0.1, in a thread.

Why a real server rather than a mock: what a failover library must get right lives in the
protocol (which reply came after which command, whether the message was queued before the
connection dropped), so the tests assert on what the *server* saw. It records every
command (AUTH without its secret), every message, the SNI names it was asked for and the
live connection count (current and peak).

The faults (:meth:`ServerState.fail`), per command or after the final "." (``DATA_END``):
an SMTP reply ("451 4.3.0 try later", "421 ..." also hangs up), ``drop`` (close without a
reply), ``hang`` (never reply), ``delay:SECONDS`` (answer as usual, late),
``delay:SECONDS:REPLY`` (``REPLY``, late; after DATA_END the message is queued at once and
only the answer is late) and, after DATA_END, ``queue-drop`` / ``queue-hang`` (the message
*was* queued; only the answer is lost: the uncertain case). ``GREETING`` replaces the
220 (``421 ...``, ``hang``, ``drop``, ``delay:SECONDS``). ``IDLE`` makes the idle timeout
say ``reply`` before closing. A refused connection is :func:`~mailer.testing.closed_port`.

Built on aiosmtpd's documented extension points (a ``Controller`` whose ``factory()``
returns an ``SMTP`` subclass, a handler with ``handle_RCPT``/``handle_DATA`` and an
``auth_XOAUTH2`` mechanism). It has no hook that runs before *every* command, so the
fault wrapper goes around the verb table aiosmtpd builds (``_smtp_methods``); that and
the idle-timeout callback are the only private names it touches.

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
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.parser import BytesParser
from typing import Any

from ._certs import TLS_NAME, Certs
from ._deps import EXTRA
from ._poll import wait_until
from ._sockets import free_port, release_port

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"mailer.testing's SMTP server needs aiosmtpd: pip install '{EXTRA}'"
    ) from exc

__all__ = ["USERS", "Fault", "SMTPTestServer", "ServerState", "message_id_of"]

#: the accounts the server knows by default (AUTH PLAIN/LOGIN, and XOAUTH2's ``user``)
USERS: Mapping[str, str] = {"alice": "s3cret-pass"}

_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:[ \t]*(<[^>\r\n]+>)")
_MECHANISMS = ("PLAIN", "LOGIN", "XOAUTH2")
_LONG = 60.0  # a "hang": longer than any client timeout a test sets


def message_id_of(content: bytes) -> str:
    """The Message-ID in a received message's headers (AssertionError when absent)."""
    m = _MESSAGE_ID.search(content)
    assert m is not None, content[:300]
    return m.group(1).decode()


@dataclass
class Fault:
    """Answer ``command`` (and ``match`` in its argument) with ``reply``, or act.

    ``reply`` is described in the module docstring. ``times`` limits how often it fires
    (None: always); ``skip`` lets that many matching commands through first (fail the
    second DATA_END: ``skip=1``). ``fired`` counts how often it has fired: a test that
    must act while the server sits on a command (cancel the send, starve its loop) waits
    for it, where a guessed sleep could end before a loaded machine's client got there.
    """

    command: str
    reply: str
    match: str | None = None
    times: int | None = None
    skip: int = 0
    fired: int = 0


def _split_delay(reply: str) -> tuple[float, str | None]:
    """``delay:S`` -> (S, None): act as usual; ``delay:S:REPLY`` -> (S, REPLY)."""
    _, seconds, *rest = reply.split(":", 2)
    return float(seconds), (rest[0] if rest else None)


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

    def fail(
        self,
        command: str,
        reply: str,
        *,
        match: str | None = None,
        times: int | None = None,
        skip: int = 0,
    ) -> Fault:
        """Inject a fault for later commands; returns it (its ``fired`` count)."""
        fault = Fault(command.upper(), reply, match, times, skip)
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, command: str, arg: str) -> Fault | None:
        """The fault that fires for this command now, if any (counting it)."""
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
                fault.fired += 1
                return fault
        return None

    def reset(self) -> None:
        """Forget what was seen (the faults stay)."""
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

    def store(self, envelope: Envelope, peer: Any) -> None:
        with self.lock:
            self.messages.append(envelope)
            self.peers.append(peer)

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


def _waiting(reader: object) -> bool:
    """Whether the client's next bytes were already buffered (it pipelined)."""
    return bool(getattr(reader, "_buffer", b""))


class _FaultySMTP(SMTP):
    """aiosmtpd's server, recording commands and injecting faults per command."""

    def __init__(self, handler: Any, *, state: ServerState, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = state
        self._counted = False
        self._in_ehlo = False
        self._greeted = False
        for verb, method in list(self._smtp_methods.items()):
            self._smtp_methods[verb] = self._wrap(verb, method)

    def _wrap(
        self, verb: str, method: Callable[[str], Awaitable[None]]
    ) -> Callable[[str], Awaitable[None]]:
        async def wrapper(arg: str) -> None:
            shown = (arg or "").split(" ", 1)[0] if verb == "AUTH" else (arg or "")
            self._state.commands.append(f"{verb} {shown}".strip())
            self._state.buffered.append((verb, _waiting(getattr(self, "_reader", None))))
            fault = self._state.take_fault(verb, arg)
            reply = None if fault is None else fault.reply
            if reply is not None and reply.startswith("delay:"):
                seconds, reply = _split_delay(reply)
                await asyncio.sleep(seconds)
                reply = reply or None  # "delay:S" and "delay:S:" run the command late
            if reply is None:
                self._in_ehlo = verb == "EHLO"
                try:
                    await method(arg)
                finally:
                    self._in_ehlo = False
            elif reply == "drop":
                if self.transport is not None:
                    self.transport.close()
            elif reply == "hang":
                await asyncio.sleep(_LONG)
            else:
                await self.push(reply)
                if reply.startswith("421") and self.transport is not None:
                    self.transport.close()

        return wrapper

    async def push(self, status: Any) -> None:
        if not self._greeted:  # the first line a connection gets is the greeting
            self._greeted = True
            if await self._greeting_fault():
                return
        if self._in_ehlo and not self._state.eight_bit_mime and status == "250-8BITMIME":
            return
        if self._in_ehlo and self._state.pipelining and status == "250 HELP":
            await super().push("250-PIPELINING")
        await super().push(status)

    async def _greeting_fault(self) -> bool:
        """Act out a ``GREETING`` fault; True when it replaced the greeting."""
        fault = self._state.take_fault("GREETING", "")
        reply = None if fault is None else fault.reply
        if reply is not None and reply.startswith("delay:"):
            seconds, reply = _split_delay(reply)
            await asyncio.sleep(seconds)
            reply = reply or None
        if reply is None:
            return False
        if reply == "hang":
            await asyncio.sleep(_LONG)
        elif reply != "drop":
            await super().push(reply)
        if (reply == "drop" or reply.startswith("421")) and self.transport is not None:
            self.transport.close()
        return True

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
        if fault is not None and isinstance(self.transport, asyncio.WriteTransport):
            with contextlib.suppress(Exception):
                self.transport.write(fault.reply.encode() + b"\r\n")
        hang_up: Callable[[], None] = super()._timeout_cb  # untyped in aiosmtpd
        hang_up()


class _Handler:
    def __init__(self, state: ServerState, users: Mapping[str, str] | None) -> None:
        self.state = state
        self.users = users

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        limit = self.state.max_recipients
        if limit is not None and len(envelope.rcpt_tos) >= limit:
            return self.state.too_many_reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        fault = self.state.take_fault("DATA_END", "")
        # True when the client's next commands came with the payload (pipelined behind it)
        self.state.buffered.append(("DATA_END", _waiting(getattr(server, "_reader", None))))
        reply = None if fault is None else fault.reply
        if reply is not None and reply.startswith("delay:"):
            seconds, late = _split_delay(reply)
            if late is None:  # "delay:S": take the message late
                await asyncio.sleep(seconds)
                reply = None
            else:  # "delay:S:REPLY": queued at once; the answer saying so comes late
                reply = late or "250 2.0.0 OK queued, answered late"
                if reply.startswith("250"):
                    self.state.store(envelope, session.peer)
                await asyncio.sleep(seconds)
                return reply
        if reply is None:
            self.state.store(envelope, session.peer)
            return "250 2.0.0 OK queued as test"
        if reply.startswith("queue-"):
            self.state.store(envelope, session.peer)  # it is queued: only the answer is lost
            reply = reply.removeprefix("queue-")
        if reply == "drop":
            if server.transport is not None:
                server.transport.close()
            await asyncio.sleep(_LONG)  # cancelled when the connection goes
        if reply == "hang":
            await asyncio.sleep(_LONG)
        return reply

    def known(self, user: str | None, password: str | None = None) -> bool:
        if self.users is None:
            return True  # any login goes
        if user is None or user not in self.users:
            return False
        return password is None or self.users[user] == password

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
        if token in self.state.valid_tokens and self.known(fields.get("user")):
            return AuthResult(success=True, auth_data=fields["user"])
        error = json.dumps({"status": "401", "schemes": "bearer", "scope": "smtp"})
        await server.challenge_auth(error)  # the client answers with an empty line
        return AuthResult(
            success=False, handled=False, message="535 5.7.8 Username and Password not accepted"
        )

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword):
            user, password = data.login.decode(), data.password.decode()
            if self.known(user, password):
                return AuthResult(success=True, auth_data=user)
        return AuthResult(success=False, handled=False)


class _Controller(Controller):
    def __init__(self, handler: _Handler, state: ServerState, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._state = state

    def factory(self) -> SMTP:
        return _FaultySMTP(self.handler, state=self._state, **self.SMTP_kwargs)


class SMTPTestServer:
    """aiosmtpd on 127.0.0.1 in a thread, with faults (see the module docstring).

    ``tls``: None (plaintext), "starttls" or "implicit" (needs ``certs``). ``auth``: offer
    AUTH (PLAIN, LOGIN, XOAUTH2) - on a plaintext server that means AUTH without TLS,
    which the client must refuse unless allowed; ``auth_mechanisms`` are the ones offered;
    ``auth_require_tls`` hides AUTH until STARTTLS. ``users``: the accounts (None: any
    login succeeds). ``idle_timeout``: the server's own idle timeout. ``smtputf8``: offer
    SMTPUTF8 (RFC 6531). ``server_hostname``: the name in its greeting.
    ``pipelining``: offer PIPELINING in EHLO (aiosmtpd itself does not, though it reads
    pipelined commands in order); None reads ``SMTP_TEST_PIPELINING=1`` from the
    environment, so a whole suite can be run against pipelining servers.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        certs: Certs | None = None,
        *,
        tls: str | None = None,
        auth: bool = True,
        auth_mechanisms: tuple[str, ...] = _MECHANISMS,
        auth_required: bool = False,
        auth_require_tls: bool = False,
        users: Mapping[str, str] | None = USERS,
        idle_timeout: float = 300.0,
        pipelining: bool | None = None,
        smtputf8: bool = False,
        server_hostname: str = TLS_NAME,
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
        self.users = users
        self._auth = auth
        self._mechanisms = auth_mechanisms
        self._auth_required = auth_required
        self._auth_require_tls = auth_require_tls
        self._idle_timeout = idle_timeout
        self._smtputf8 = smtputf8
        self._server_hostname = server_hostname
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
        handler = _Handler(self.state, self.users)
        if self._auth:
            kwargs["authenticator"] = handler.authenticate
            kwargs["auth_require_tls"] = self._auth_require_tls
        mechanisms = self._mechanisms if self._auth else ()
        kwargs["auth_exclude_mechanism"] = [m for m in _MECHANISMS if m not in mechanisms]
        if port is not None:
            release_port(port, self.host)  # a closed_port() that now comes back
        for _ in range(5 if port is None else 20):
            self.port = free_port() if port is None else port
            controller = _Controller(
                handler,
                self.state,
                hostname=self.host,
                port=self.port,
                server_hostname=self._server_hostname,
                ready_timeout=5.0,
                **kwargs,
            )
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
        wait_until(lambda: not self.state.current, 2.0)
        self.state.reset()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SMTPTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

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

    def wait_for(self, predicate: Callable[[], object], timeout: float = 2.0) -> bool:
        """Poll server state (it lives in another thread) until ``predicate()``."""
        return wait_until(predicate, timeout)

    def received(self) -> Counter[str]:
        """How many times each Message-ID was received (the delivery ledger)."""
        with self.state.lock:
            envelopes = list(self.state.messages)
        return Counter(message_id_of(_content(e)) for e in envelopes)

    def recipients(self) -> dict[str, list[str]]:
        """The envelope recipients each Message-ID was received for."""
        with self.state.lock:
            envelopes = list(self.state.messages)
        return {message_id_of(_content(e)): list(e.rcpt_tos) for e in envelopes}


def _content(envelope: Envelope) -> bytes:
    content = envelope.original_content or envelope.content or b""
    return content if isinstance(content, bytes) else content.encode()
