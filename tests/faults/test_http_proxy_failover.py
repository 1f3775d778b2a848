"""Failover of an HTTP provider behind an HTTPS proxy (the ``proxy`` option).

httpcore hands the request's trace extension, the hook that fires our commit point when
the request body starts, to the proxy's CONNECT request as well. The commit point then
fired at the CONNECT, and every later failure (the API's TLS handshake hanging, the
proxy never answering the CONNECT) counted as "the API may have the message": the send
ended uncertain instead of failing over. The transport now tells the proxy's set-up
apart from our request; only our request's body is the commit point.

Real parts: the SMTP kit's HTTP CONNECT proxy (it resolves the certificate's name to
loopback), the kit's scripted HTTPS API, a TCP server that never answers a handshake,
a blackholed address, CPU work holding the test's loop, and the Resend adapter. Each
test but the last fails on the old transport; the last shows the commit point still
fires at our body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from tests.smtp.network import Blackhole

from mailer import DeliveryUncertain, Mailer, commit_hooks
from mailer.providers._resend import ResendProvider
from mailer.testing import (
    TLS_NAME,
    Certs,
    HTTPConnectProxy,
    HTTPTestServer,
    ScriptedProvider,
    SilentServer,
    serve,
)

from .kit import messages
from .lagkit import SHORT, SLACK, SlowHandshakeRelay, burn, failed_attempts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

#: the adapter's own timeout: longer than the budget, so a hang left at the budget is
#: told apart from one left at the timeout (after the commit point)
TIMEOUT = 4.0


@pytest.fixture
def proxy() -> Iterator[HTTPConnectProxy]:
    relay = HTTPConnectProxy(resolve={TLS_NAME: "127.0.0.1"})
    relay.start()
    yield relay
    relay.stop()


def resend(
    name: str, port: int, ca: Certs, proxy: HTTPConnectProxy, timeout: float = TIMEOUT
) -> ResendProvider:
    """The real adapter, reaching ``TLS_NAME:port`` only through ``proxy``."""
    return ResendProvider.from_config(name, {
        "api_key": "re_proxy_key", "base_url": f"https://{TLS_NAME}:{port}",
        "ca_file": str(ca.ca_file), "proxy": f"http://127.0.0.1:{proxy.port}",
        "timeout": timeout,
    })  # fmt: skip


async def test_an_api_hung_in_its_tls_handshake_behind_the_proxy_fails_over(
    certs: Certs,
    proxy: HTTPConnectProxy,
) -> None:
    """The proxy connects to the primary API, whose TLS handshake never ends: nothing of
    the request left, so the send fails over to the backup API (through the same proxy)
    at the budget, and the commit point is crossed once, at the backup's body."""
    dead = SilentServer().start()
    crossed: list[float] = []

    async def hook() -> None:
        crossed.append(time.monotonic())

    try:
        async with serve("ok", tls=certs.server_context()) as good:
            primary = resend("primary", dead.port, certs, proxy)
            backup = resend("backup", good.port, certs, proxy)
            mailer = Mailer([primary, backup], budget=SHORT, retry={"attempts": 1})
            async with mailer:
                started = time.monotonic()
                with commit_hooks(hook):
                    result = await mailer.send(messages(1)[0])
                took = time.monotonic() - started
            assert good.requests == 1
    finally:
        dead.stop()
    assert result.provider == "backup"
    (error,) = failed_attempts(result)
    assert "nothing was sent" in error, error
    assert proxy.requests == [(TLS_NAME, dead.port), (TLS_NAME, good.port)]
    assert len(crossed) == 1, "the commit point fired for the primary's CONNECT"
    assert took < SHORT["pre_commit"] + SLACK, took


async def test_a_proxy_that_never_answers_the_connect_fails_over(
    certs: Certs,
    proxy: HTTPConnectProxy,
) -> None:
    """The primary's address is blackholed behind the proxy, which holds the CONNECT
    unanswered while it tries to reach it: the proxy's set-up timed out, nothing was
    sent, and the backup takes the send."""
    hole = Blackhole()
    try:
        async with serve("ok", tls=certs.server_context()) as good:
            proxy.resolve["primary.test.example"] = hole.host
            primary = ResendProvider.from_config("primary", {
                "api_key": "re_proxy_key", "base_url": f"https://primary.test.example:{hole.port}",
                "ca_file": str(certs.ca_file), "proxy": f"http://127.0.0.1:{proxy.port}",
                "timeout": TIMEOUT,
            })  # fmt: skip
            backup = resend("backup", good.port, certs, proxy)
            mailer = Mailer([primary, backup], budget=SHORT, retry={"attempts": 1})
            async with mailer:
                started = time.monotonic()
                result = await mailer.send(messages(1)[0])
                took = time.monotonic() - started
            assert good.requests == 1
    finally:
        hole.close()
    assert result.provider == "backup"
    (error,) = failed_attempts(result)
    assert "nothing was sent" in error, error
    assert took < SHORT["pre_commit"] + SLACK, took


async def test_an_api_that_takes_the_body_and_hangs_behind_the_proxy_stays_uncertain(
    certs: Certs,
    proxy: HTTPConnectProxy,
) -> None:
    """The commit point still fires at our request's body: an API that reads the whole
    request and never answers leaves the send uncertain after the adapter's timeout,
    and it is neither resent nor failed over."""
    async with (
        serve("hang", tls=certs.server_context()) as hung,
        serve("ok", tls=certs.server_context()) as good,
    ):
        primary = resend("primary", hung.port, certs, proxy)
        backup = resend("backup", good.port, certs, proxy)
        mailer = Mailer([primary, backup], budget=SHORT, retry={"attempts": 1})
        async with mailer:
            started = time.monotonic()
            with pytest.raises(DeliveryUncertain) as caught:
                await mailer.send(messages(1)[0])
            took = time.monotonic() - started
        assert hung.requests == 1 and good.requests == 0
    assert "may have been accepted" in str(caught.value)
    assert TIMEOUT - 0.3 < took < TIMEOUT + SLACK, took


async def test_a_handshake_through_the_proxy_timed_out_by_a_starved_loop_is_tried_again(
    certs: Certs,
    proxy: HTTPConnectProxy,
    api: HTTPTestServer,
) -> None:
    """The loop-lag rule behind a proxy (tests/faults/test_http_loop_lag.py without
    one): on the first tunnel the API's TLS flight is held (past the test), and once the
    ClientHello is through and the flight held, the loop is starved for longer than the
    budget: the handshake's timer expires during the stall, with next to none of the
    loop's running time spent. The CONNECT's body had started, and the old transport
    took that for ours: the healthy primary failed over. Now the try is made again and
    the send goes out on the primary, once.

    Load-proof: the stall starts when the flight is held (an event, not a guessed 0.1 s),
    the flight never comes during it (no race with the loop's wake-up), and the budget
    (2 s) leaves the set-up before the stall and the second try a wide margin."""
    budget = {"pre_commit": 2.0, "max": 15.0}
    relay = SlowHandshakeRelay(api.port, 30.0, slow={1}).start()  # stop() ends the hold
    try:
        backup = ScriptedProvider("backup")
        # the default timeout, as without a proxy: each of Resend's two tries has 5 s
        primary = resend("primary", relay.port, certs, proxy, timeout=10.0)
        mailer = Mailer([primary, backup], budget=budget)
        async with mailer:
            task = asyncio.create_task(mailer.send(messages(1)[0]))
            await relay.wait_held()  # the tunnel open, the ClientHello out, the flight held
            burn(budget["pre_commit"] + 0.5)
            result = await asyncio.wait_for(task, 10)
            assert result.provider == "primary", failed_attempts(result)
            assert mailer.health()["primary"]["state"] == "closed"
        assert relay.accepted == 2, "the first handshake was not timed out: proves nothing"
    finally:
        relay.stop()
    assert backup.calls == 0 and api.requests == 1
