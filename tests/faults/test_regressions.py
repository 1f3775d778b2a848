"""Mailer bugs the fault matrix found, pinned down without a network (scripted providers)."""

from __future__ import annotations

import anyio
import pytest

from mailer import AllProvidersFailed, Mailer, Message
from mailer._errors import DeliveryUncertain, TransientError
from mailer.testing import ScriptedProvider

pytestmark = pytest.mark.anyio


def msg() -> Message:
    return Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t")


async def test_a_provider_the_deadline_never_reached_keeps_its_health() -> None:
    # The primary eats the whole send_timeout; the secondary is never contacted. It must
    # not be counted as failing: three such sends used to open a healthy provider's
    # breaker, so the next sends skipped the one provider that worked.
    slow = ScriptedProvider("slow", ["transient"], latency=0.3, repeat=True)
    spare = ScriptedProvider("spare")
    mailer = Mailer(
        [slow, spare],
        send_timeout=0.25,
        retry={"attempts": 1},
        health={"failure_threshold": 1, "cooldown": 60},
    )
    with pytest.raises(AllProvidersFailed):
        await mailer.send(msg())
    assert mailer.health()["spare"]["state"] == "closed"
    assert spare.calls == 0
    result = await mailer.send(msg())  # slow is open now; spare takes it
    assert result.provider == "spare"


async def test_no_retry_on_a_provider_whose_breaker_opened_meanwhile() -> None:
    # While this send waits to retry, other sends prove the provider down (its breaker
    # opens): go to the next provider instead of spending the deadline on a dead one.
    failing = ScriptedProvider("failing")
    spare = ScriptedProvider("spare")
    mailer = Mailer(
        [failing, spare],
        send_timeout=5,
        retry={"attempts": 5, "backoff": 0.01, "max_backoff": 0.01},
    )
    breaker = mailer.root.runtime.leaf(failing).breaker

    def fail_and_open(_: Message) -> None:
        breaker._open(breaker.clock(), 60)  # what concurrent failures do
        raise TransientError("down", code=421)

    failing.script(fail_and_open, fail_and_open, fail_and_open)
    result = await mailer.send(msg())
    assert result.provider == "spare"
    assert failing.calls == 1


def test_not_tried_is_transient() -> None:
    from mailer._routing.leaf import _NotTried

    assert issubclass(_NotTried, TransientError)


class IdempotentScripted(ScriptedProvider):
    idempotent = True


@pytest.mark.parametrize("then", ["transient", "permanent", "auth"])
async def test_uncertain_then_a_failed_retry_is_still_uncertain(then: str) -> None:
    # Found by the matrix (HTTP: accepted, then no answer; the idempotent retry then hit
    # a full connection pool): the retry's TransientError replaced the uncertain outcome,
    # so the Mailer failed over and the message was delivered twice.
    api = IdempotentScripted("api", ["uncertain", then])
    spare = ScriptedProvider("spare")
    mailer = Mailer([api, spare], retry={"attempts": 2, "backoff": 0})
    with pytest.raises(DeliveryUncertain, match="an earlier attempt may have delivered"):
        await mailer.send(msg())
    assert spare.calls == 0
    assert len(api.messages) == 1


async def test_a_failed_token_refresh_is_shared_with_the_connections_queued_on_it() -> None:
    # Found by the matrix (token endpoint slower than token_timeout, a pool of 5): each
    # connection queued on the refresh lock asked the failing endpoint again, one after
    # another, so the last one waited 5 x token_timeout, past the send deadline, and the
    # Mailer's backstop reported DeliveryUncertain for a send that never reached MAIL.
    from mailer.providers._smtp.config import OAuth2Options
    from mailer.providers._smtp.oauth import TokenSource
    from mailer.testing import TokenEndpoint

    endpoint = TokenEndpoint(["tok"]).start()
    # token_timeout 0.5 (it was 0.2): one after another the five would take 2.5 s, shared
    # they take one timeout; 0.2 s against a bound of 0.5 left too little room for a
    # loaded machine's scheduling, 0.5 against 1.5 leaves a second
    endpoint.delay = 1.5
    try:
        source = TokenSource(OAuth2Options(token_url=endpoint.url, client_id="c",
                                           client_secret="s", refresh_token="r",
                                           token_timeout=0.5))  # fmt: skip
        outcomes: list[BaseException] = []

        async def one() -> None:
            try:
                await source.get()
            except TransientError as exc:
                outcomes.append(exc)

        with anyio.fail_after(5):
            started = anyio.current_time()
            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(one)
            took = anyio.current_time() - started
        assert len(outcomes) == 5
        assert len(endpoint.requests) == 1
        assert took < 1.5, took  # 3 timeouts: not 5 in a row
    finally:
        endpoint.stop()


async def test_waiting_for_a_token_refresh_is_bounded_by_the_send_deadline() -> None:
    import time

    from mailer._attempt import AttemptContext
    from mailer.providers._smtp.config import OAuth2Options
    from mailer.providers._smtp.oauth import TokenSource

    source = TokenSource(OAuth2Options(token_url="http://127.0.0.1:9/t", client_id="c",
                                       client_secret="s", refresh_token="r"))  # fmt: skip
    await source._lock.acquire()  # another connection's refresh is running
    token = AttemptContext("p", deadline=time.monotonic() + 0.2).enter()
    try:
        with anyio.fail_after(2), pytest.raises(TransientError, match="deadline passed"):
            await source.get()
    finally:
        AttemptContext.exit(token)
        source._lock.release()
