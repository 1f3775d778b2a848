"""Failover across kinds: an HTTP API that fails hands over to a real SMTP server.

The issue's acceptance case: SendGrid answering 503 (or 429 with Retry-After) fails over
to SMTP, and the rate-limited provider is not asked again before Retry-After has passed.
SendGrid is stubbed with respx at its documented endpoint; SMTP is a real aiosmtpd server.
"""

from __future__ import annotations

import httpx
import pytest
import respx

from mailer import Mailer, Message
from mailer._clock import FakeClock
from mailer.testing import SMTPTestServer

pytestmark = pytest.mark.anyio

SENDGRID = "https://api.sendgrid.test"


def build(server: SMTPTestServer, clock: FakeClock) -> Mailer:
    return Mailer.from_config(
        {
            "providers": [
                {
                    "type": "sendgrid",
                    "name": "sendgrid",
                    "priority": 1,
                    "config": {"api_key": "SG.canary-key", "base_url": SENDGRID},
                },
                {"type": "smtp", "name": "smtp", "priority": 2, "config": server.config(auth=None)},
            ],
            "retry": {"attempts": 2, "backoff": 0},
        },
        clock=clock,
    )


def message(i: int) -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], subject=f"n{i}", text="x")


def delivered_ids(server: SMTPTestServer) -> list[str]:
    ids = []
    for env in server.state.messages:
        content = env.content if isinstance(env.content, bytes) else env.content.encode()
        for line in content.split(b"\r\n"):
            if line.lower().startswith(b"message-id:"):
                ids.append(line.split(b":", 1)[1].strip().decode())
    return ids


async def test_503_fails_over_to_smtp(plain_server: SMTPTestServer) -> None:
    clock = FakeClock(100.0)
    async with build(plain_server, clock) as mailer:
        with respx.mock(assert_all_called=True) as mock:
            route = mock.post(f"{SENDGRID}/v3/mail/send").mock(
                return_value=httpx.Response(503, json={"errors": [{"message": "unavailable"}]})
            )
            sent = [message(i) for i in range(3)]
            results = [await mailer.send(m) for m in sent]
    assert [r.provider for r in results] == ["smtp"] * 3
    attempts = [a.outcome for a in results[0].attempts]
    assert attempts == ["TransientError", "TransientError", "sent"]  # retried once, then over
    assert route.call_count == 6
    assert delivered_ids(plain_server) == [m.message_id for m in sent]


async def test_429_rests_sendgrid_until_retry_after(plain_server: SMTPTestServer) -> None:
    clock = FakeClock(100.0)
    async with build(plain_server, clock) as mailer:
        with respx.mock() as mock:
            route = mock.post(f"{SENDGRID}/v3/mail/send")
            route.side_effect = [
                httpx.Response(429, headers={"Retry-After": "30"}),
                httpx.Response(202, headers={"X-Message-Id": "sg-1"}),
            ]
            first = await mailer.send(message(0))
            assert first.provider == "smtp" and route.call_count == 1  # 429 is not retried
            for i in range(5):
                clock.now += 5  # 25 s of the 30 s rest
                assert (await mailer.send(message(i + 1))).provider == "smtp"
            assert route.call_count == 1  # not asked again before Retry-After has passed
            clock.now += 6
            back = await mailer.send(message(9))
    assert back.provider == "sendgrid" and back.provider_message_id == "sg-1"
    assert route.call_count == 2
    assert len(delivered_ids(plain_server)) == 6


async def test_read_timeout_is_not_failed_over(plain_server: SMTPTestServer) -> None:
    from mailer import DeliveryUncertain

    clock = FakeClock(100.0)
    async with build(plain_server, clock) as mailer:
        with respx.mock() as mock:
            mock.post(f"{SENDGRID}/v3/mail/send").mock(side_effect=httpx.ReadTimeout("slow"))
            with pytest.raises(DeliveryUncertain) as info:
                await mailer.send(message(0))
    assert info.value.provider == "sendgrid"
    assert "SG.canary-key" not in repr(info.value) + str(info.value)
    assert delivered_ids(plain_server) == []  # the SMTP backup was not used: no duplicate
