"""Provider groups on their own, in config and DSN forms, and the commit point."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import anyio
import pytest

from mailer import (
    AllProvidersFailed,
    ConfigError,
    DeliveryUncertain,
    Failover,
    Mailer,
    Message,
    RoundRobin,
    TransientError,
    Weighted,
    commit_hooks,
)
from mailer._routing.budget import BudgetConfig, SetupEstimator
from mailer.testing import ScriptedProvider

pytestmark = pytest.mark.anyio


def msg() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], text="hi")


async def test_a_group_sends_on_its_own() -> None:
    a, b = ScriptedProvider("a", ["transient", "transient"]), ScriptedProvider("b")
    group = Failover([a, b])
    result = await group.send(msg())
    assert result.provider == "b"
    assert [t.outcome for t in result.attempts] == ["TransientError", "TransientError", "sent"]


async def test_round_robin_takes_turns_by_weight() -> None:
    a, b = ScriptedProvider("a"), ScriptedProvider("b")
    group = RoundRobin([a, b], [2, 1])
    order = [(await group.send(msg())).provider for _ in range(6)]
    assert order == ["a", "b", "a", "a", "b", "a"]  # smooth: never b twice in a row


async def test_weighted_shares_and_falls_back_within_the_group() -> None:
    a, b = ScriptedProvider("a"), ScriptedProvider("b", ["auth"])
    mailer = Mailer([Weighted([a, b], [1, 3])], rng=random.Random(3), retry={"attempts": 1})
    counts = Counter([(await mailer.send(msg())).provider for _ in range(200)])
    # b, drawn first for most sends, failed once (auth: rests 300 s); every send went
    # out through a, the fallback within the group
    assert counts == {"a": 200}
    assert b.calls == 1


async def test_nested_uncertain_is_raised_not_failed_over() -> None:
    inner = Failover([ScriptedProvider("a", ["uncertain"])], name="inner")
    c = ScriptedProvider("c")
    with pytest.raises(DeliveryUncertain):
        await Mailer([Failover([inner, c])]).send(msg())
    assert c.calls == 0


async def test_all_failed_reports_each_provider_not_each_group() -> None:
    a = ScriptedProvider("a", ["transient"], repeat=True)
    b = ScriptedProvider("b", ["auth"])
    mailer = Mailer([Failover([Weighted([a]), b])], retry={"attempts": 1})
    with pytest.raises(AllProvidersFailed) as info:
        await mailer.send(msg())
    assert set(info.value.errors) == {"a", "b"}
    assert not info.value.possibly_delivered


def test_group_entries_and_dsns_in_config(tmp_path: Path) -> None:
    path = tmp_path / "mailer.json"
    path.write_text(
        json.dumps(
            {
                "providers": [
                    "failover(roundrobin(memory://?name=a memory://?name=b) memory://?name=c)",
                    {
                        "type": "weighted",
                        "name": "spare",
                        "weights": [3, 1],
                        "providers": [
                            {"type": "memory", "name": "d"},
                            "memory://?name=e",
                        ],
                    },
                ]
            }
        )
    )
    mailer = Mailer.from_config(path)
    assert [p.name for p in mailer.providers] == ["a", "b", "c", "d", "e"]
    first, spare = mailer.root.children
    assert isinstance(first, Failover) and isinstance(first.children[0], RoundRobin)
    assert isinstance(spare, Weighted) and spare.name == "spare" and spare.weights == [3, 1]


@pytest.mark.parametrize(
    ("entry", "match"),
    [
        ({"type": "failover", "providers": []}, "non-empty"),
        ({"type": "failover", "providers": ["memory://"], "config": {"x": 1}}, "not 'config'"),
        ({"type": "memory", "providers": ["memory://"]}, "belong to groups"),
        ({"type": "weighted", "providers": ["memory://"], "weights": [1, 2]}, "one weight"),
        ("failover(memory://?name=a memory://?name=a)", "unique name"),
        ("failover(memory://", "parentheses|scheme|valid"),
    ],
)
def test_bad_group_config(entry: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Mailer.from_config({"providers": [entry]})


async def test_send_to_named_providers_only() -> None:
    a, b, c = ScriptedProvider("a"), ScriptedProvider("b"), ScriptedProvider("c")
    mailer = Mailer([a, b, c])
    assert (await mailer.send(msg(), providers=["c", "b"])).provider == "c"
    assert a.calls == 0
    with pytest.raises(ValueError, match="names no provider"):
        await mailer.send(msg(), providers=["zz"])


async def test_commit_hooks_run_before_the_commit_point_only() -> None:
    seen: list[str] = []
    a = ScriptedProvider("a", ["transient"])  # refused before its commit point
    b = ScriptedProvider("b")

    async def hook() -> None:
        seen.append(f"hook:{a.calls}:{b.calls}")

    mailer = Mailer([a, b], retry={"attempts": 1})
    with commit_hooks(hook):
        result = await mailer.send(msg())
    assert result.provider == "b"
    assert seen == ["hook:1:1"]  # once, for b's attempt, before b accepted
    assert [t.committed for t in result.attempts] == [False, True]


async def test_budget_does_not_cut_an_attempt_after_its_commit_point() -> None:
    # "stall": the message is taken, then no answer: past the commit point the budget
    # no longer applies; only the send's deadline does, and the outcome is uncertain.
    stalled = ScriptedProvider("s", ["stall"])
    mailer = Mailer([stalled], budget={"pre_commit": 0.1, "max": 0.1}, send_timeout=0.6)
    with anyio.fail_after(5), pytest.raises(DeliveryUncertain):
        await mailer.send(msg())


async def test_hang_before_the_commit_point_is_transient_and_opens_the_breaker() -> None:
    hung, spare = ScriptedProvider("h", ["hang"]), ScriptedProvider("spare")
    mailer = Mailer([hung, spare], budget={"pre_commit": 0.2})
    result = await mailer.send(msg())
    assert result.provider == "spare"
    error = result.attempts[0]
    assert error.outcome == "TransientError" and "budget" in (error.error or "")
    assert mailer.health()["h"]["state"] == "open"  # the first slow call opens it
    assert hung.calls == 1  # and it was not retried


def test_adaptive_budget_grows_for_a_slow_provider_and_is_capped() -> None:
    est = SetupEstimator(BudgetConfig(pre_commit=3.0, max=15.0))
    assert est.budget() == 3.0
    for _ in range(20):
        est.observe(0.05)  # a fast, pooled provider: the floor
    assert est.budget() == 3.0
    slow = SetupEstimator(BudgetConfig(pre_commit=3.0, max=15.0))
    for seconds in (2.5, 3.5, 2.8, 4.0):  # far away, slow AUTH
        slow.observe(seconds)
    assert 4.0 < slow.budget() <= 15.0
    for _ in range(5):
        slow.observe(100.0)
    assert slow.budget() == 15.0
    fixed = SetupEstimator(BudgetConfig(adaptive=False))
    fixed.observe(10.0)
    assert fixed.budget() == 3.0
    with pytest.raises(ValueError, match="at least"):
        BudgetConfig(pre_commit=5, max=1)


async def test_transient_that_heals_is_retried_but_a_hang_is_not() -> None:
    flaky = ScriptedProvider("f", [TransientError("blip")])
    mailer = Mailer([flaky], retry={"attempts": 2, "backoff": 0})
    assert (await mailer.send(msg())).provider == "f"
    assert flaky.calls == 2


async def test_commit_hooks_run_for_a_provider_that_reports_no_commit_point() -> None:
    class Quiet(ScriptedProvider):
        reports_commit_point = False

    seen: list[int] = []
    quiet = Quiet("q")

    async def hook() -> None:
        seen.append(quiet.calls)

    with commit_hooks(hook):
        result = await Mailer([quiet]).send(msg())
    assert seen == [0]  # before the provider was even called: it may send at once
    assert result.attempts[0].committed is None  # it reports nothing
