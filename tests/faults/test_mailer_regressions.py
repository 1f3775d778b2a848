"""Mailer bugs the fault matrix found, pinned down without a network (scripted providers)."""

from __future__ import annotations

import pytest

from mailer import AllProvidersFailed, Mailer, Message
from mailer.errors import DeliveryUncertain, TransientError
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
    route = mailer._routes[0]

    def fail_and_open(_: Message) -> None:
        route.breaker._open(route.breaker.clock(), 60)  # what concurrent failures do
        raise TransientError("down", code=421)

    failing.script(fail_and_open, fail_and_open, fail_and_open)
    result = await mailer.send(msg())
    assert result.provider == "spare"
    assert failing.calls == 1


def test_not_tried_is_transient() -> None:
    from mailer.mailer import _NotTried

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
