"""A starved event loop on the HTTP path: this process's slowness, not the API's.

httpx applies a timeout per operation (anyio's ``fail_after`` around the TCP connect,
the TLS handshake, each write and read), armed with values cut to the pre-commit budget
when the request starts; once armed, those timers count wall time. A loop held up by CPU
work while a handshake waits for a (slowish) API lets such a timer expire with nothing
to read when the loop runs again: the try failed as a ``ConnectTimeout``, the breaker
opened and the mail failed over. The transport now asks the attempt whether the budget
moved on by the loop's lag and, as nothing of the request left, tries again.

Real parts: the kit's scripted HTTP server (its own thread and event loop, so it answers
on time while the test's loop is starved) behind TLS, a relay that holds the server's
first bytes on chosen connections (a slow handshake), the Resend adapter, and CPU work
in the test's own loop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mailer import Mailer, Message
from mailer.providers._resend import ResendProvider
from mailer.testing import (
    Certs,
    HTTPTestServer,
    ScriptedProvider,
    SilentServer,
    make_certs,
)

from .kit import messages
from .lagkit import BUDGET, SHORT, SLACK, SlowHandshakeRelay, burn, failed_attempts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the lag monitor is asyncio's (trio counts wall time)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(Path(tmp_path_factory.mktemp("http-lag-certs")), names=("127.0.0.1",))


def resend(name: str, base_url: str, certs: Certs) -> ResendProvider:
    """A real adapter with its default timeouts (10 s, connect 5 s)."""
    return ResendProvider.from_config(
        name, {"api_key": "re_test_key", "base_url": base_url, "ca_file": str(certs.ca_file)}
    )


def sent(api: HTTPTestServer, message: Message) -> int:
    """How many times the API received ``message`` (its subject is unique)."""
    return sum(1 for r in api.log if r.json().get("subject") == message.subject)


async def test_a_handshake_timed_out_by_a_starved_loop_is_tried_again(
    api: HTTPTestServer, certs: Certs
) -> None:
    """The API's TLS flight never comes on the first connection (held past the test);
    the loop is held for 1.7 s from the moment it is held (an event, not a guessed
    0.1 s, so load cannot move the stall before the ClientHello). The handshake's 1 s
    timer (cut to the budget) expired during the stall and nothing had arrived when the
    loop ran again; but the loop ran for next to none of it: not the API's failure.
    Nothing was sent, so the transport connects again (at once, this time): the send
    goes out on the primary, once, and its breaker stays closed."""
    relay = SlowHandshakeRelay(api.port, 30.0, slow={1}).start()  # stop() ends the hold
    try:
        backup = ScriptedProvider("backup")
        primary = resend("primary", f"https://127.0.0.1:{relay.port}", certs)
        mailer = Mailer([primary, backup], budget=SHORT)
        message = messages(1)[0]
        async with mailer:
            task = asyncio.create_task(mailer.send(message))
            await relay.wait_held()  # connected, the ClientHello out, the flight held
            burn(SHORT["pre_commit"] + 0.7)
            result = await asyncio.wait_for(task, 10)
            assert result.provider == "primary", failed_attempts(result)
            assert not failed_attempts(result)
            assert mailer.health()["primary"]["state"] == "closed"
        assert relay.accepted == 2, "the first handshake was not timed out: proves nothing"
    finally:
        relay.stop()
    assert backup.calls == 0 and sent(api, message) == 1


async def test_the_same_stall_fails_over_when_the_budget_counts_wall_time(
    api: HTTPTestServer, certs: Certs
) -> None:
    """``budget.loop_lag = false``: the same stall fails the healthy primary over, with
    nothing sent to it. It shows the test above reproduces the failure."""
    relay = SlowHandshakeRelay(api.port, 30.0, slow={1}).start()
    try:
        backup = ScriptedProvider("backup")
        primary = resend("primary", f"https://127.0.0.1:{relay.port}", certs)
        mailer = Mailer([primary, backup], budget={**SHORT, "loop_lag": False})
        message = messages(1)[0]
        async with mailer:
            task = asyncio.create_task(mailer.send(message))
            await relay.wait_held()
            burn(SHORT["pre_commit"] + 0.7)
            result = await asyncio.wait_for(task, 10)
        assert result.provider == "backup"
        (error,) = failed_attempts(result)
        assert "nothing was sent" in error, error
    finally:
        relay.stop()
    assert sent(api, message) == 0


@pytest.mark.parametrize("turns", [2, 6, 15])
async def test_a_loop_starved_during_a_request_sends_it_once(
    api: HTTPTestServer, certs: Certs, turns: int
) -> None:
    """A healthy API, the loop held past the budget a few turns into the request
    (connecting, in the handshake or with the request out, by the machine's speed): the
    send goes out on the primary, once."""
    backup = ScriptedProvider("backup")
    mailer = Mailer([resend("primary", api.base_url, certs), backup], budget=SHORT)
    message = messages(1)[0]
    async with mailer:
        task = asyncio.create_task(mailer.send(message))
        for _ in range(turns):
            await asyncio.sleep(0)
        burn(SHORT["pre_commit"] + 0.6)
        result = await asyncio.wait_for(task, 10)
        assert result.provider == "primary", failed_attempts(result)
        assert not failed_attempts(result)
        assert mailer.health()["primary"]["state"] == "closed"
    assert backup.calls == 0 and sent(api, message) == 1


async def test_a_hung_tls_api_is_still_left_after_a_budget_of_running_time(
    certs: Certs,
) -> None:
    """An API that accepts TCP and never answers the handshake, the defaults, and a loop
    held for 1.5 s just after the send starts: the primary is left after the budget of
    the loop's running time (3 s + the stall), the backup takes the send, and the hang
    is still a verdict (the breaker opens)."""
    dead = SilentServer().start()
    try:
        backup = ScriptedProvider("backup")
        mailer = Mailer([resend("primary", f"https://127.0.0.1:{dead.port}", certs), backup])
        stall = 1.5
        async with mailer:
            started = time.monotonic()
            task = asyncio.create_task(mailer.send(messages(1)[0]))
            await asyncio.sleep(0.05)
            burn(stall)
            result = await asyncio.wait_for(task, 20)
            took = time.monotonic() - started
            assert mailer.health()["primary"]["state"] == "open"
    finally:
        dead.stop()
    assert result.provider == "backup"
    (error,) = failed_attempts(result)
    assert "nothing was sent" in error, error
    assert BUDGET + stall - 0.3 < took < BUDGET + stall + SLACK, took
