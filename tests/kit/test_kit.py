"""The test kit's own promises: what it needs installed, and the faults no other test
acts out on its own (the greeting, a body never read, an answer lost after acceptance)."""

from __future__ import annotations

import smtplib
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from mailer.testing import (
    FakeResend,
    SMTPTestServer,
    closed_port,
    eventually,
    free_port,
    release_port,
    serve,
    wait_until,
)

pytestmark = pytest.mark.anyio

#: runs without the extra and without pytest: both are made unimportable first
_NO_EXTRA = """
import sys
for name in ("aiosmtpd", "trustme", "respx", "pytest"):
    sys.modules[name] = None  # import fails as if not installed
import mailer.testing as kit
from mailer.testing import FakeResend, HTTPTestServer, SMTPSink, wait_until
import mailer._demo.runner  # `mailer demo` runs from a plain install
for name in ("SMTPTestServer", "make_certs"):
    try:
        getattr(kit, name)(*(["."] if name == "make_certs" else []))
    except ImportError as exc:
        print(name, exc)
"""


def test_the_kit_and_the_demo_import_without_the_extra_naming_it_when_needed() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _NO_EXTRA], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert lines[0].startswith("SMTPTestServer") and "mailer-failover[testing]" in lines[0]
    assert lines[1].startswith("make_certs") and "mailer-failover[testing]" in lines[1]


def test_greeting_faults() -> None:
    with SMTPTestServer(auth=False) as server:
        server.state.fail("GREETING", "421 4.3.2 too busy", times=1)
        with pytest.raises(smtplib.SMTPConnectError) as info:
            smtplib.SMTP(server.host, server.port, timeout=5)
        assert info.value.smtp_code == 421
        server.state.fail("GREETING", "delay:0.5", times=1)
        started = time.monotonic()
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            assert time.monotonic() - started >= 0.5
            assert client.noop()[0] == 250
        server.state.fail("GREETING", "hang", times=1)
        with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
            smtplib.SMTP(server.host, server.port, timeout=0.5)


def test_a_late_reply_after_the_data_queues_the_message_at_once() -> None:
    with SMTPTestServer(auth=False) as server:
        server.state.fail("DATA_END", "delay:1:250 2.0.0 late")
        client = smtplib.SMTP(server.host, server.port, timeout=0.3)
        with pytest.raises((TimeoutError, smtplib.SMTPServerDisconnected)):
            client.sendmail("a@example.com", ["b@example.org"], "Message-ID: <m@x>\r\n\r\nhi")
        client.close()
        assert server.received() == {"<m@x>": 1}  # received, though the client was not told


def test_a_fault_counts_how_often_it_fired() -> None:
    """``fail()`` returns the fault; ``fired`` moves when the server acts it out (a test
    waits for it instead of guessing when the client reached the command), not for a
    command it lets through (``skip``) nor once its ``times`` are spent."""
    with SMTPTestServer(auth=False) as server:
        refuse = server.state.fail("MAIL", "451 4.3.0 try later", times=1, skip=1)
        assert refuse.fired == 0
        with smtplib.SMTP(server.host, server.port, timeout=5) as client:
            client.ehlo()
            assert client.mail("a@example.com")[0] == 250  # skipped
            assert refuse.fired == 0
            client.rset()
            assert client.mail("a@example.com")[0] == 451
            assert refuse.fired == 1
            client.rset()
            assert client.mail("a@example.com")[0] == 250  # its one time is spent
        assert refuse.fired == 1 and refuse.times == 0


async def test_hang_before_the_body_reads_nothing() -> None:
    async with serve("hang-before-body") as api, httpx.AsyncClient(timeout=0.3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{api.base_url}/x", content=b"body")
        assert api.connections == 1 and api.requests == 0 and api.log == []


async def test_an_answer_lost_after_acceptance_and_the_replay() -> None:
    async with FakeResend(mode="accept-500") as api, httpx.AsyncClient(timeout=2) as client:
        email = {"from": "a@example.com", "to": ["b@example.org"], "subject": "s",
                 "headers": {"Message-ID": "<m1@example.com>"}}  # fmt: skip
        headers = {"Authorization": f"Bearer {api.api_key}", "Idempotency-Key": "k1"}
        first = await client.post(f"{api.base_url}/emails", json=email, headers=headers)
        replay = await client.post(f"{api.base_url}/emails", json=email, headers=headers)
        assert first.status_code == 500  # accepted, but the caller was told otherwise
        assert replay.status_code == 200  # the replay is final: nothing new to lose
        assert api.received == {"<m1@example.com>": 1}
        assert [r.json()["subject"] for r in api.log] == ["s", "s"]


def test_wait_until_is_bounded_by_count_and_by_time() -> None:
    calls: list[float] = []

    def never() -> bool:
        calls.append(time.monotonic())
        return False

    assert not wait_until(never, timeout=10, polls=3)
    assert len(calls) == 3
    calls.clear()
    started = time.monotonic()
    assert not wait_until(never, timeout=0.2, interval=0.05)
    assert 0.2 <= time.monotonic() - started < 1.0
    assert wait_until(lambda: len(calls) >= 2 or never(), timeout=5)


async def test_eventually_sees_a_change() -> None:
    state: dict[str, Any] = {"n": 0}

    def bump() -> bool:
        state["n"] += 1
        return bool(state["n"] >= 3)

    assert await eventually(bump, timeout=2, interval=0.01)
    assert state["n"] == 3


def test_a_closed_port_refuses_and_nothing_else_can_take_it() -> None:
    """closed_port() holds its port bound (never listening) for the process's life: a
    connection is refused, and no server, here or in another process, can bind it."""
    port = closed_port()
    with socket.socket() as client, pytest.raises(ConnectionRefusedError):
        client.connect(("127.0.0.1", port))
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with pytest.raises(OSError, match="in use"):
            server.bind(("127.0.0.1", port))
    assert port not in {free_port() for _ in range(50)}


def test_a_closed_port_held_on_another_loopback_address_refuses_there() -> None:
    """``closed_port(host)`` holds the port on that address: a refused IPv4 address
    other than 127.0.0.1, and IPv6's ::1 where the machine has it."""
    hosts = ["127.0.0.2"] + (["::1"] if socket.has_ipv6 and _ipv6_loopback() else [])
    for host in hosts:
        port = closed_port(host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family) as client, pytest.raises(ConnectionRefusedError):
            client.connect((host, port))
        with socket.socket(family) as server, pytest.raises(OSError, match="in use"):
            server.bind((host, port))


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_a_server_comes_back_on_a_closed_port() -> None:
    """A provider that found nobody (a ``closed_port()``) comes back there:
    ``SMTPTestServer.start(port)`` lets the reservation go and binds it; and once let
    go, ``release_port`` is a no-op."""
    port = closed_port()
    server = SMTPTestServer().start(port)
    try:
        assert server.port == port
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert client.recv(3) == b"220"
    finally:
        server.stop()
    release_port(port)  # already let go: nothing to do
