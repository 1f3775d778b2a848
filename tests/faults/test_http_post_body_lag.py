"""A timeout after the request body, on a wait the event loop's lag cut short.

The attempt's deadline counts wall time. When the loop is held up before the commit
point, the pre-commit budget moves on by the lag, but the deadline does not: the API is
left less of its window to answer after the body. Its timeout then is still uncertain
(the API may have the message), but it is no verdict on the provider: the breaker used
to open on it (a slow call), sending every later mail elsewhere because this process
stalled. The rule is in ``mailer._routing.leaf`` (``_lag_cut_short``).

Real parts: the kit's scripted HTTPS API on its own thread and loop (it answers on time
while the test's loop is starved), a relay that holds the first handshake, the Resend
adapter and CPU work in the test's loop.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from mailer import DeliveryUncertain, Mailer
from mailer.providers._resend import ResendProvider
from mailer.testing import Certs, HTTPTestServer, ScriptedProvider, make_certs

from .kit import messages
from .lagkit import SHORT, SLACK, SlowHandshakeRelay, burn

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

#: the adapter's timeout, and its window: one try (``retry.attempts = 1``) has it all
TIMEOUT = 3.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the lag monitor is asyncio's


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(Path(tmp_path_factory.mktemp("post-body-lag")), names=("127.0.0.1",))


def mailer(port: int, certs: Certs, **options: object) -> Mailer:
    primary = ResendProvider.from_config("primary", {
        "api_key": "re_test_key", "base_url": f"https://127.0.0.1:{port}",
        "ca_file": str(certs.ca_file), "timeout": TIMEOUT,
    })  # fmt: skip
    return Mailer(
        [primary, ScriptedProvider("backup")], budget=SHORT, retry={"attempts": 1}, **options
    )


async def test_a_post_body_timeout_on_a_wait_the_lag_cut_short_leaves_the_breaker_closed(
    api: HTTPTestServer, certs: Certs
) -> None:
    """The API's first TLS flight never comes (held past the test); the loop is held
    for 1.6 s from the moment it is held (an event, not a guessed 0.1 s: on a loaded
    machine the ClientHello could leave after the stall had begun, and the stall then
    proved nothing). The handshake's timer, cut to the 1 s budget, expired during the
    stall, so the handshake is tried again (nothing was sent). The body goes out at
    about 1.7 s with 1.3 s of the 3 s window left, and the API answers 2 s after it: the
    send is uncertain, the API has it once, and the primary's breaker stays closed."""
    api.mode = "delay:2.0"
    relay = SlowHandshakeRelay(api.port, 30.0, slow={1}).start()  # stop() ends the hold
    try:
        mail = mailer(relay.port, certs)
        async with mail:
            started = time.monotonic()
            task = asyncio.create_task(mail.send(messages(1)[0]))
            await relay.wait_held()  # connected, the ClientHello out, the flight held
            burn(SHORT["pre_commit"] + 0.6)
            with pytest.raises(DeliveryUncertain, match="may have been accepted"):
                await asyncio.wait_for(task, 10)
            took = time.monotonic() - started
            assert mail.health()["primary"]["state"] == "closed"
        assert relay.accepted == 2, "the handshake was not tried again: proves nothing"
    finally:
        relay.stop()
    assert api.requests == 1
    # The window counts wall time from the attempt's start (just after ``started``), so
    # the verdict comes at its end whatever the stall moved: the lag moved the budget on,
    # not the window. Load only adds to the slack: the held flight, not the clock, starts
    # the stall, and a later stall sends the body later, the API's answer further past
    # the window's end (0.6 s past it at the least)
    assert TIMEOUT - 0.2 < took < TIMEOUT + SLACK, took


async def test_a_post_body_timeout_without_lag_still_opens_the_breaker(
    api: HTTPTestServer, certs: Certs
) -> None:
    """The control: the loop keeps up and the API takes longer than its whole window:
    a slow call, and the breaker opens on it."""
    api.mode = f"delay:{TIMEOUT + 1}"
    mail = mailer(api.port, certs)
    async with mail:
        with pytest.raises(DeliveryUncertain, match="may have been accepted"):
            await mail.send(messages(1)[0])
        assert mail.health()["primary"]["state"] == "open"
    assert api.requests == 1
