"""The HTTP commit point: right before the request body leaves (httpcore's
``send_request_body.started``), checked against real servers on 127.0.0.1.

* A server that accepts TCP and never answers the TLS handshake holds the attempt before
  its commit point: the pre-commit budget ends it as a TransientError ("nothing was
  sent"), marked ``timed_out`` and not worth retrying on the same provider.
* A server that reads the whole request and never answers holds it after the commit
  point: the budget no longer applies, the send's deadline does, and the outcome is
  DeliveryUncertain.
* An attempt abandoned while its commit hooks run does not send the body at all.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from mailer import DeliveryError, DeliveryUncertain, Message, TransientError
from mailer._attempt import AttemptContext, attached, commit_hooks, current_attempt
from mailer.providers._resend import ResendProvider
from mailer.testing import serve

pytestmark = pytest.mark.anyio

MESSAGE = Message(sender="a@example.com", to=["b@example.org"], subject="hi", text="t")


async def attempt(
    provider: ResendProvider,
    *,
    budget: float,
    deadline: float,
    hooks: tuple[Callable[[], Awaitable[None]], ...] = (),
) -> tuple[AttemptContext, anyio.CancelScope, DeliveryError | None, float]:
    """One attempt as the routing layer runs it: a scope cancelled at the pre-commit
    budget, lifted to the send's deadline at the commit point."""
    now = time.monotonic()
    state = AttemptContext(
        provider=provider.name,
        deadline=now + deadline,
        budget_deadline=now + budget,
        lift_to=now + deadline + 1,
    )
    with commit_hooks(*hooks):
        token = state.enter()
    error = None
    try:
        with anyio.CancelScope(deadline=state.budget_deadline) as scope:
            state.scope = scope
            try:
                await provider.send(MESSAGE)
            except DeliveryError as exc:
                error = exc
    finally:
        state.exit(token)
        await provider.aclose()
    return state, scope, error, time.monotonic() - now


def make(base_url: str, **config: Any) -> ResendProvider:
    return ResendProvider.from_config("resend", {"api_key": "re_key_1234", "base_url": base_url,
                                                 "timeout": 30, **config})  # fmt: skip


async def test_http_providers_report_their_commit_point() -> None:
    assert ResendProvider.reports_commit_point


async def test_hang_before_the_body_is_abandoned_at_the_budget() -> None:
    async with serve("silent") as server:
        provider = make(f"https://127.0.0.1:{server.port}")
        state, scope, error, took = await attempt(provider, budget=0.5, deadline=20)
    assert not state.committed
    assert took < 5, "the pre-commit budget did not bound the attempt"
    # the connect timeout (bounded by the budget) or the scope ended it; either way safe
    if error is not None:
        assert type(error) is TransientError
        assert "nothing was sent" in str(error)
        assert error.timed_out and not error.retry_here
    else:
        assert scope.cancelled_caught


async def test_hang_after_the_body_is_uncertain_at_the_send_deadline() -> None:
    async with serve("hang") as server:
        provider = make(f"http://127.0.0.1:{server.port}")
        state, scope, error, took = await attempt(provider, budget=0.3, deadline=1.5)
        assert server.requests == 1
    assert state.committed
    assert state.setup_time is not None and state.setup_time < 0.3
    assert not scope.cancelled_caught, "an attempt past its commit point was abandoned"
    assert isinstance(error, DeliveryUncertain)
    assert not error.retry_here
    # uncertain (the body left), and a slow call all the same: the breaker opens on the
    # first, so later sends do not each wait the whole timeout (issue 21, item 19)
    assert error.timed_out
    assert 1.0 < took < 10, "the read was bounded by the budget instead of the send deadline"


async def test_abandoned_at_the_commit_point_sends_no_body() -> None:
    state_box: list[AttemptContext] = []

    async def release() -> None:  # another send found the provider down meanwhile
        current = current_attempt()
        assert attached(current)
        state_box.append(current)
        current.release()

    async with serve("hang") as server:
        provider = make(f"http://127.0.0.1:{server.port}")
        state, _, error, _ = await attempt(provider, budget=5, deadline=5, hooks=(release,))
        await asyncio.sleep(0.1)
        assert server.connections == 1
        assert server.requests == 0
    assert state_box == [state]
    assert not state.committed
    assert type(error) is TransientError
    assert "before its commit point" in str(error)


async def test_connection_refused_is_transient_and_worth_retrying() -> None:
    async with serve("silent") as server:
        port = server.port
    provider = make(f"http://127.0.0.1:{port}")  # nothing listens there any more
    state, _, error, _ = await attempt(provider, budget=5, deadline=5)
    assert not state.committed
    assert type(error) is TransientError
    assert error.retry_here and not error.timed_out


async def test_dns_failure_is_not_worth_retrying_here() -> None:
    provider = make("https://no-such-host.invalid")
    _, _, error, _ = await attempt(provider, budget=5, deadline=5)
    assert type(error) is TransientError
    assert not error.retry_here


async def test_certificate_error_is_not_worth_retrying_here(tmp_path: Any) -> None:
    import ssl

    import trustme

    ca, other = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path / "other.pem"
    other.cert_pem.write_to_path(str(ca_file))  # trusts a CA that did not sign the server

    async with serve("drop", tls=context) as server:
        provider = make(f"https://127.0.0.1:{server.port}", ca_file=str(ca_file))
        state, _, error, _ = await attempt(provider, budget=5, deadline=5)
    assert not state.committed
    assert type(error) is TransientError
    assert not error.retry_here


async def test_a_burst_larger_than_the_pool_is_queued_not_failed_over() -> None:
    """40 sends at once on 2 connections to an API answering in 0.25 s: about 5 s for the
    last, longer than the default 3 s budget. Waiting for a connection is queueing behind
    our own sends, so every one goes to the primary. (It used to end 'no progress to the
    commit point within the 3s pre-commit budget (a hang ...)' for the last ones, read as
    a hung provider: the breaker opened and the rest were released to the backup.)"""
    from collections import Counter

    from mailer import Mailer
    from mailer.testing import ScriptedProvider

    backup = ScriptedProvider("backup")
    async with serve("ok", delay=0.25) as api:
        primary = ResendProvider.from_config("resend", {
            "api_key": "re_key_1234", "base_url": f"http://127.0.0.1:{api.port}",
            "max_connections": 2,
        })  # fmt: skip
        mailer = Mailer([primary, backup])  # every timing setting at its default
        messages = [Message(sender="a@example.com", to=[f"u{i}@example.org"], text="x")
                    for i in range(40)]  # fmt: skip
        async with mailer:
            started = time.monotonic()
            results = await asyncio.gather(*(mailer.send(m) for m in messages))
            took = time.monotonic() - started
            # the adaptive budget learns set-up times, not time spent queued
            assert mailer.health()["resend"]["budget"] < 4.0
    assert took > 3.0, "drained within one budget: the test proves nothing"
    assert Counter(r.provider for r in results) == {"resend": 40}
    assert api.requests == 40 and backup.calls == 0
    assert api.connections <= 2
