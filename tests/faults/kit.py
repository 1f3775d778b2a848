"""The fault-matrix kit: faulty real servers, a load runner, and the ledger check.

* The SMTP servers are the SMTP provider's own test servers (``tests/smtp/servers.py``,
  imported as tests.smtp.servers), extended here with faults that kit
  lacks: a reply that comes *late* (``"delay:SECONDS:REPLY"``, or ``"delay:SECONDS:"``
  to run the real command late), and a message the server *queues* before it hangs up
  or goes silent (``"queue-drop"``, ``"queue-hang"``) - the uncertain case where the
  message really was delivered.
* :class:`HTTPFake` is a Resend-compatible API on 127.0.0.1 (so the real Resend adapter
  and httpx talk to a real socket), scripted per request: 429 with Retry-After, 5xx,
  a reply that never comes, a dropped connection, each before or after it accepts.
* :func:`run_load` sends many messages concurrently, bounded in time, and keeps every
  outcome; :func:`check_ledger` proves the promise from what each server received, by
  Message-ID: delivered exactly once where the caller was told "sent", never where the
  caller was told "failed", at most once where it was told "uncertain", never twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from tests.smtp import servers

from mailer import (
    AllProvidersFailed,
    DeliveryError,
    DeliveryUncertain,
    Mailer,
    Message,
    SendResult,
)

Certs = servers.Certs
SilentServer = servers.SilentServer
ScriptedServer = servers.ScriptedServer
TokenEndpoint = servers.TokenEndpoint
free_port = servers.free_port
make_certs = servers.make_certs
USERS = servers.USERS

_MESSAGE_ID = re.compile(rb"(?im)^Message-ID:[ \t]*(<[^>\r\n]+>)")


def message_id_of(content: bytes) -> str:
    m = _MESSAGE_ID.search(content)
    assert m is not None, content[:300]
    return m.group(1).decode()


# -- SMTP -------------------------------------------------------------------------------


class _FaultSMTP(servers._FaultySMTP):  # type: ignore[name-defined,misc]
    """The kit's server protocol, plus late replies (``delay:SECONDS:REPLY``)."""

    def _wrap(self, verb: str, method: Any) -> Any:
        async def wrapper(arg: str) -> None:
            shown = (arg or "").split(" ", 1)[0] if verb == "AUTH" else (arg or "")
            self._state.commands.append(f"{verb} {shown}".strip())
            fault = self._state.take_fault(verb, arg)
            if fault is None:
                await method(arg)
                return
            reply = fault.reply
            if reply.startswith("delay:"):
                _, seconds, reply = reply.split(":", 2)
                await asyncio.sleep(float(seconds))
                if not reply:
                    await method(arg)
                    return
            if reply == "drop":
                if self.transport is not None:
                    self.transport.close()
            elif reply == "hang":
                await asyncio.sleep(60)
            else:
                await self.push(reply)
                if reply.startswith("421") and self.transport is not None:
                    self.transport.close()

        return wrapper


class _FaultHandler(servers._Handler):  # type: ignore[name-defined,misc]
    """Replies after the final ".", including the ones where the message was queued."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        fault = self.state.take_fault("DATA_END", "")
        if fault is None:
            self.state.messages.append(envelope)
            return "250 2.0.0 OK queued as test"
        reply = fault.reply
        if reply.startswith("delay:"):
            # queued at once; the 250 saying so comes late
            _, seconds, reply = reply.split(":", 2)
            reply = reply or "250 2.0.0 OK queued, answered late"
            if reply.startswith("250"):
                self.state.messages.append(envelope)
            await asyncio.sleep(float(seconds))
            return str(reply)
        if reply.startswith("queue-"):
            self.state.messages.append(envelope)  # it is queued: only the answer is lost
            reply = reply.removeprefix("queue-")
        if reply == "drop":
            if server.transport is not None:
                server.transport.close()
            await asyncio.sleep(60)  # cancelled when the connection goes
        if reply == "hang":
            await asyncio.sleep(60)
        return str(reply)


class FaultServer(servers.SMTPTestServer):  # type: ignore[name-defined,misc]
    """The kit's SMTPTestServer with the extra faults above."""

    def start(self, port: int | None = None) -> FaultServer:
        super().start(port)
        controller = self._controller
        assert controller is not None
        handler = _FaultHandler(self.state)
        controller.handler = handler
        controller.factory = lambda: _FaultSMTP(handler, state=self.state, **controller.SMTP_kwargs)
        return self

    def received(self) -> Counter[str]:
        with self.state.lock:
            envelopes = list(self.state.messages)
        return Counter(message_id_of(e.original_content or e.content) for e in envelopes)

    def recipients(self) -> dict[str, list[str]]:
        with self.state.lock:
            envelopes = list(self.state.messages)
        return {message_id_of(e.original_content or e.content): list(e.rcpt_tos) for e in envelopes}


# -- HTTP -------------------------------------------------------------------------------


@dataclass(eq=False)
class HTTPFake:
    """Resend's ``POST /emails`` on 127.0.0.1, with a per-request fault script.

    Each request takes the next mode from ``script`` (then ``mode``): ``ok``;
    ``429:SECONDS`` (Retry-After); ``503``; ``500``; ``hang`` / ``drop`` (no answer,
    nothing accepted); ``accept-500`` / ``accept-hang`` / ``accept-drop`` (accepted,
    then the answer is an error or never comes). With ``idempotent`` (Resend's
    behaviour) a repeated Idempotency-Key delivers nothing new.
    """

    api_key: str = "re_fault_key"
    mode: str = "ok"
    idempotent: bool = True
    script: deque[str] = field(default_factory=deque)
    received: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    port: int = 0
    _keys: dict[str, str] = field(default_factory=dict)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self, **overrides: Any) -> dict[str, Any]:
        return {"api_key": self.api_key, "base_url": self.base_url, "timeout": 1.0, **overrides}

    async def start(self) -> HTTPFake:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    def _next_mode(self) -> str:
        return self.script.popleft() if self.script else self.mode

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                for _ in range(100):
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._answer(writer, headers, body):
                    return
        except (OSError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            pass  # the client left, or the fake is stopping
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(
        self, writer: asyncio.StreamWriter, headers: dict[str, str], body: bytes
    ) -> bool:
        self.requests += 1
        mode = self._next_mode()
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return self._write(writer, 401, {"name": "validation_error", "message": "bad key"})
        if mode.startswith("429"):
            seconds = mode.partition(":")[2] or "1"
            return self._write(
                writer,
                429,
                {"name": "rate_limit_exceeded", "message": "slow"},
                {"Retry-After": seconds},
            )
        if mode in ("503", "500"):
            return self._write(writer, int(mode), {"name": "server_error", "message": "down"})
        if mode in ("hang", "drop"):
            if mode == "hang":
                await asyncio.sleep(30)
            return False
        email = json.loads(body)
        key = headers.get("idempotency-key")
        if self.idempotent and key and key in self._keys:
            return self._write(writer, 200, {"id": self._keys[key]})  # a replay
        email_id = secrets.token_hex(8)
        if key:
            self._keys[key] = email_id
        self.received[email["headers"]["Message-ID"]] += 1
        if mode == "accept-500":
            return self._write(writer, 500, {"name": "server_error", "message": "oops"})
        if mode == "accept-hang":
            await asyncio.sleep(30)
            return False
        if mode == "accept-drop":
            return False
        return self._write(writer, 200, {"id": email_id})

    @staticmethod
    def _write(
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        extra: dict[str, str] | None = None,
    ) -> bool:
        data = json.dumps(payload).encode()
        head = [
            f"HTTP/1.1 {status} X",
            "Content-Type: application/json",
            f"Content-Length: {len(data)}",
            *(f"{k}: {v}" for k, v in (extra or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        return True


# -- load and ledger --------------------------------------------------------------------


@dataclass
class Outcome:
    message: Message
    result: SendResult | None = None
    error: BaseException | None = None

    @property
    def uncertain(self) -> bool:
        e = self.error
        return isinstance(e, DeliveryUncertain) or (
            isinstance(e, AllProvidersFailed) and e.possibly_delivered
        )


def messages(
    n: int,
    *,
    to: Callable[[int], list[str]] | None = None,
    sender: Callable[[int], str] | None = None,
) -> list[Message]:
    return [
        Message(
            sender=sender(i) if sender else "app@example.com",
            to=to(i) if to else [f"u{i}@example.org"],
            subject=f"m{i}",
            text=f"body {i}\n.\nstill body",
        )
        for i in range(n)
    ]


async def run_load(
    mailer: Mailer,
    batch: Iterable[Message],
    *,
    concurrency: int = 20,
    timeout: float = 8.0,
    between: Callable[[int], Any] | None = None,
) -> list[Outcome]:
    """Send every message (``concurrency`` at a time); keep each result or error."""
    outcomes = [Outcome(m) for m in batch]
    limit = anyio.Semaphore(concurrency)

    async def one(o: Outcome) -> None:
        async with limit:
            try:
                o.result = await mailer.send(o.message)
            except DeliveryError as exc:
                o.error = exc

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            for i, o in enumerate(outcomes):
                if between is not None:
                    await between(i)
                tg.start_soon(one, o)
    return outcomes


@dataclass
class Summary:
    sent: Counter[str] = field(default_factory=Counter)  # by provider
    errors: Counter[str] = field(default_factory=Counter)  # by error class
    uncertain_delivered: int = 0
    seconds: float = 0.0

    def __str__(self) -> str:
        return f"sent={dict(self.sent)} errors={dict(self.errors)}"


def check_ledger(
    outcomes: list[Outcome],
    received: dict[str, Counter[str]],
    recipients: dict[str, dict[str, list[str]]] | None = None,
) -> Summary:
    """The promise, checked per message against what every server received."""
    summary = Summary()
    ours = {o.message.message_id for o in outcomes}
    for name, counter in received.items():
        stray = set(counter) - ours
        assert not stray, f"{name} received messages nobody sent: {sorted(stray)[:3]}"
    for o in outcomes:
        mid = o.message.message_id
        where = {name: c[mid] for name, c in received.items() if c[mid]}
        total = sum(where.values())
        assert total <= 1, f"{mid} delivered {total} times: {where} (outcome {o.error!r})"
        if o.result is not None:
            assert o.error is None
            assert list(where) == [o.result.provider], (
                f"{mid}: reported sent by {o.result.provider}, received by {where}"
            )
            assert o.result.message_id == mid
            summary.sent[o.result.provider] += 1
            seen = (recipients or {}).get(o.result.provider, {}).get(str(mid))
            if seen is not None:
                assert seen == o.result.accepted, (mid, seen, o.result.accepted)
        else:
            assert isinstance(o.error, DeliveryError), f"{mid}: not reported: {o.error!r}"
            summary.errors[type(o.error).__name__] += 1
            if o.uncertain:
                summary.uncertain_delivered += total
            else:
                assert total == 0, f"{mid} reported failed ({o.error!r}) but {where} received it"
            if isinstance(o.error, AllProvidersFailed):
                assert o.error.message is not None
                assert o.error.message.message_id == mid
    return summary


def fast_mailer(providers: list[Any], **options: Any) -> Mailer:
    """A Mailer tuned for tests: short cooldowns, quick retries, a short deadline."""
    settings: dict[str, Any] = {
        "send_timeout": 4.0,
        "health": {
            "failure_threshold": 3,
            "cooldown": 0.2,
            "max_cooldown": 0.5,
            "auth_cooldown": 0.5,
        },
        "retry": {"attempts": 2, "backoff": 0.01, "max_backoff": 0.02},
    }
    settings.update(options)
    return Mailer(providers, **settings)


class Timer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started
