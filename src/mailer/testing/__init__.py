"""The test kit: for testing code that sends mail, and for testing provider plugins.

Without servers:

* ``ScriptedProvider`` (a memory provider that fails on a script), ``MemoryProvider``;
* the ``outbox`` pytest fixture (the messages every memory provider accepted during the
  test, like Django's ``mail.outbox``), registered through the ``pytest11`` entry point;
* ``ProviderConformance``: the shared test case every provider plugin subclasses;
* ``stub_endpoint`` / ``send_stubbed``: one respx-stubbed endpoint.

Real servers on 127.0.0.1, for the faults a mock cannot act out:

* ``SMTPTestServer``: aiosmtpd with TLS/STARTTLS (``make_certs``), AUTH incl. XOAUTH2
  (``TokenEndpoint``) and faults per command; ``SilentServer`` / ``ScriptedServer`` /
  ``closed_port()`` for the faults before the greeting; ``SMTPSink``, a dependency-free
  server that keeps what it receives and goes down like a real one;
* ``HTTPTestServer``: a scripted loopback HTTP server (status, hang, drop, slow, per
  request) that records what it received; ``FakeResend``, Resend's API on it;
* ``HTTPConnectProxy`` / ``SOCKSProxy``: real proxies (loopback destinations only) that
  record what they were asked, and can hold every request unanswered (``hang``);
* ``in_thread`` / ``LoopThread``: an async server on an event loop of its own, for a test
  whose own loop is busy (CPU work, trio, blocking clients, other processes);
* ``wait_until`` / ``eventually``: the bounded polling helpers;
* ``dkim_key(n)``: an RSA key for DKIM signing and the TXT record that publishes it,
  made once per process (a ``DKIMKey``; needs ``cryptography``);
* ``FakeClock``: the one clock breakers, deadlines, budgets and rate limits read, moved
  by hand (``with FakeClock() as clock: clock.advance(30)``).

The SMTP server and the certificates need ``mailer-failover[testing]`` (aiosmtpd,
trustme, respx); the names load on first use, so ``import mailer.testing`` never needs
them, and a missing one raises ImportError naming the extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .._clock import FakeClock
    from ..providers._memory import MemoryProvider
    from ._certs import TLS_NAME, Certs, make_certs
    from ._conformance import ErrorCase, ProviderConformance
    from ._dkim import DKIMKey, dkim_key
    from ._http import HTTPRequest, HTTPTestServer, Reply, read_request, serve
    from ._plugin import outbox
    from ._poll import eventually, wait_until
    from ._proxies import HTTPConnectProxy, SOCKSProxy
    from ._resend import FakeResend
    from ._respx import Sent, send_stubbed, stub_endpoint
    from ._scripted import ScriptedProvider
    from ._sink import ReceivedMessage, SMTPSink
    from ._smtp import USERS, Fault, ServerState, SMTPTestServer, message_id_of
    from ._sockets import (
        ScriptedServer,
        SilentServer,
        ThreadedSocketServer,
        closed_port,
        free_port,
        release_port,
    )
    from ._thread import LoopThread, in_thread
    from ._token import TokenEndpoint

_WHERE = {
    "FakeClock": ".._clock",
    "MemoryProvider": "..providers._memory",
    "TLS_NAME": "._certs",
    "Certs": "._certs",
    "make_certs": "._certs",
    "ErrorCase": "._conformance",
    "ProviderConformance": "._conformance",
    "DKIMKey": "._dkim",
    "dkim_key": "._dkim",
    "HTTPRequest": "._http",
    "HTTPTestServer": "._http",
    "Reply": "._http",
    "read_request": "._http",
    "serve": "._http",
    "HTTPConnectProxy": "._proxies",
    "SOCKSProxy": "._proxies",
    "outbox": "._plugin",
    "eventually": "._poll",
    "wait_until": "._poll",
    "FakeResend": "._resend",
    "Sent": "._respx",
    "send_stubbed": "._respx",
    "stub_endpoint": "._respx",
    "ScriptedProvider": "._scripted",
    "ReceivedMessage": "._sink",
    "SMTPSink": "._sink",
    "USERS": "._smtp",
    "Fault": "._smtp",
    "ServerState": "._smtp",
    "SMTPTestServer": "._smtp",
    "message_id_of": "._smtp",
    "ScriptedServer": "._sockets",
    "SilentServer": "._sockets",
    "ThreadedSocketServer": "._sockets",
    "closed_port": "._sockets",
    "free_port": "._sockets",
    "release_port": "._sockets",
    "LoopThread": "._thread",
    "in_thread": "._thread",
    "TokenEndpoint": "._token",
}

__all__ = [
    "TLS_NAME",
    "USERS",
    "Certs",
    "DKIMKey",
    "ErrorCase",
    "FakeClock",
    "FakeResend",
    "Fault",
    "HTTPConnectProxy",
    "HTTPRequest",
    "HTTPTestServer",
    "LoopThread",
    "MemoryProvider",
    "ProviderConformance",
    "ReceivedMessage",
    "Reply",
    "SMTPSink",
    "SMTPTestServer",
    "SOCKSProxy",
    "ScriptedProvider",
    "ScriptedServer",
    "Sent",
    "ServerState",
    "SilentServer",
    "ThreadedSocketServer",
    "TokenEndpoint",
    "closed_port",
    "dkim_key",
    "eventually",
    "free_port",
    "in_thread",
    "make_certs",
    "message_id_of",
    "outbox",
    "read_request",
    "release_port",
    "send_stubbed",
    "serve",
    "stub_endpoint",
    "wait_until",
]


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the kit (the demo does) needs neither pytest nor the extra.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
