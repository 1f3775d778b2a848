"""Rate limits per provider, in-process (the memory store); the shared limiter is tested
in test_shared.py and test_processes.py."""

from __future__ import annotations

import time

import pytest

from mailer import Mailer, Message
from mailer._clock import FakeClock
from mailer._config import load_config
from mailer._errors import ConfigError
from mailer._routing.ratelimit import Gcra, RateLimit
from mailer.providers._smtp.config import SMTPConfig
from mailer.testing import ScriptedProvider

pytestmark = pytest.mark.anyio


def msg() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], text="hi")


def test_gcra_spaces_slots_and_allows_the_burst() -> None:
    clock = FakeClock(100.0)
    g = Gcra(RateLimit(messages=4, per=1.0), clock)
    assert [g.reserve(0) for _ in range(4)] == [0, 0, 0, 0]  # burst = messages
    assert g.reserve(0) is None  # the fifth must wait 0.25 s: not taken
    assert g.left() == (0, pytest.approx(0.25))
    assert g.reserve(1) == pytest.approx(0.25)
    clock.now += 1.25
    assert g.left()[0] == 4
    smooth = Gcra(RateLimit(messages=10, per=1.0, burst=1), clock)
    assert smooth.reserve(1) == 0
    assert smooth.reserve(1) == pytest.approx(0.1)
    assert smooth.reserve(1) == pytest.approx(0.2)


async def test_sends_wait_for_their_slot() -> None:
    primary = ScriptedProvider("primary", rate_limit={"messages": 10, "per": 1, "burst": 1})
    async with Mailer([primary, ScriptedProvider("backup")], budget={"pre_commit": 1}) as m:
        started = time.monotonic()
        for _ in range(6):
            assert (await m.send(msg())).provider == "primary"
        assert time.monotonic() - started >= 0.45  # five gaps of 0.1 s


async def test_a_slot_past_the_budget_goes_to_the_next_provider_at_once() -> None:
    primary = ScriptedProvider("primary", rate_limit={"messages": 1, "per": 30})
    async with Mailer([primary, ScriptedProvider("backup")], budget={"pre_commit": 0.5}) as m:
        assert (await m.send(msg())).provider == "primary"
        started = time.monotonic()
        result = await m.send(msg())
        assert result.provider == "backup"
        assert time.monotonic() - started < 0.3
        assert "rate limit (1 per 30s)" in (result.attempts[0].error or "")
        assert m.health()["primary"]["state"] == "closed"  # no verdict on its health


async def test_max_wait_deadline_waits_past_the_budget() -> None:
    limit = {"messages": 2, "per": 1, "burst": 1, "max_wait": "deadline"}
    primary = ScriptedProvider("primary", rate_limit=limit)
    async with Mailer([primary], budget={"pre_commit": 0.1}, send_timeout=5) as m:
        await m.send(msg())
        started = time.monotonic()
        assert (await m.send(msg())).provider == "primary"
        assert time.monotonic() - started >= 0.4


def test_rate_limit_on_the_entry_or_in_the_config() -> None:
    limit = {"messages": 5, "per": 2}
    for entry in (
        {"type": "memory", "rate_limit": limit},
        {"type": "memory", "config": {"rate_limit": limit}},
    ):
        m = Mailer.from_config({"providers": [entry]})
        assert m.providers[0].config.rate_limit == RateLimit(messages=5, per=2)
    with pytest.raises(ConfigError, match="rate_limit"):
        load_config({"providers": [{"type": "failover", "rate_limit": limit,
                                    "providers": ["memory://"]}]})  # fmt: skip
    with pytest.raises(ConfigError, match="rate_limit"):
        load_config({"providers": [{"type": "memory", "rate_limit": limit,
                                    "config": {"rate_limit": limit}}]})  # fmt: skip
    with pytest.raises(ConfigError):
        Mailer.from_config({"providers": [{"type": "memory", "rate_limit": {"messages": 0}}]})


def test_nodemailer_rate_limit_and_rate_delta() -> None:
    cfg = SMTPConfig.model_validate({"host": "smtp.example.com", "rateLimit": 5,
                                     "rateDelta": 2000})  # fmt: skip
    assert cfg.rate_limit == RateLimit(messages=5, per=2.0)
    assert SMTPConfig.model_validate({"rateLimit": 3}).rate_limit == RateLimit(messages=3, per=1)
    assert SMTPConfig.model_validate({"rateLimit": False}).rate_limit is None
    for bad in ({"rateDelta": 1000}, {"rateLimit": 3, "rate_limit": {"messages": 3}},
                {"rateLimit": 3, "rateDelta": "soon"}):  # fmt: skip
        with pytest.raises(ValueError):
            SMTPConfig.model_validate(bad)
