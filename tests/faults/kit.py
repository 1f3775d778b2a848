"""The fault matrix's load runner and ledger check; the faulty servers are the test kit's.

* The servers are ``mailer.testing``'s: :class:`~mailer.testing.SMTPTestServer` with its
  faults (late replies, a message queued before the server hangs up or goes silent: the
  uncertain case where the message really was delivered) and
  :class:`~mailer.testing.FakeResend`, Resend's API scripted per request (429 with
  Retry-After, 5xx, a reply that never comes, a dropped connection, each before or after
  it accepts).
* :func:`run_load` sends many messages concurrently, bounded in time, and keeps every
  outcome; :func:`check_ledger` proves the promise from what each server received, by
  Message-ID: delivered exactly once where the caller was told "sent", never where the
  caller was told "failed", at most once where it was told "uncertain", never twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio

from mailer import (
    AllProvidersFailed,
    DeliveryError,
    DeliveryUncertain,
    Mailer,
    Message,
    SendResult,
)


@dataclass
class Outcome:
    message: Message
    result: SendResult | None = None
    error: BaseException | None = None

    @property
    def uncertain(self) -> bool:
        e = self.error
        return isinstance(e, DeliveryUncertain) or (
            isinstance(e, AllProvidersFailed) and e.possibly_delivered
        )


def messages(
    n: int,
    *,
    to: Callable[[int], list[str]] | None = None,
    sender: Callable[[int], str] | None = None,
) -> list[Message]:
    return [
        Message(
            sender=sender(i) if sender else "app@example.com",
            to=to(i) if to else [f"u{i}@example.org"],
            subject=f"m{i}",
            text=f"body {i}\n.\nstill body",
        )
        for i in range(n)
    ]


async def run_load(
    mailer: Mailer,
    batch: Iterable[Message],
    *,
    concurrency: int = 20,
    timeout: float = 8.0,
    between: Callable[[int], Any] | None = None,
) -> list[Outcome]:
    """Send every message (``concurrency`` at a time); keep each result or error."""
    outcomes = [Outcome(m) for m in batch]
    limit = anyio.Semaphore(concurrency)

    async def one(o: Outcome) -> None:
        async with limit:
            try:
                o.result = await mailer.send(o.message)
            except DeliveryError as exc:
                o.error = exc

    with anyio.fail_after(timeout):
        async with anyio.create_task_group() as tg:
            for i, o in enumerate(outcomes):
                if between is not None:
                    await between(i)
                tg.start_soon(one, o)
    return outcomes


@dataclass
class Summary:
    sent: Counter[str] = field(default_factory=Counter)  # by provider
    errors: Counter[str] = field(default_factory=Counter)  # by error class
    uncertain_delivered: int = 0
    seconds: float = 0.0
    #: every send's outcome, for a case that checks more than the counts
    outcomes: list[Outcome] = field(default_factory=list)

    def __str__(self) -> str:
        return f"sent={dict(self.sent)} errors={dict(self.errors)}"


def check_ledger(
    outcomes: list[Outcome],
    received: dict[str, Counter[str]],
    recipients: dict[str, dict[str, list[str]]] | None = None,
) -> Summary:
    """The promise, checked per message against what every server received."""
    summary = Summary(outcomes=outcomes)
    ours = {o.message.message_id for o in outcomes}
    for name, counter in received.items():
        stray = set(counter) - ours
        assert not stray, f"{name} received messages nobody sent: {sorted(stray)[:3]}"
    for o in outcomes:
        mid = o.message.message_id
        where = {name: c[mid] for name, c in received.items() if c[mid]}
        total = sum(where.values())
        assert total <= 1, f"{mid} delivered {total} times: {where} (outcome {o.error!r})"
        if o.result is not None:
            assert o.error is None
            assert list(where) == [o.result.provider], (
                f"{mid}: reported sent by {o.result.provider}, received by {where}"
            )
            assert o.result.message_id == mid
            summary.sent[o.result.provider] += 1
            seen = (recipients or {}).get(o.result.provider, {}).get(str(mid))
            if seen is not None:
                assert seen == o.result.accepted, (mid, seen, o.result.accepted)
        else:
            assert isinstance(o.error, DeliveryError), f"{mid}: not reported: {o.error!r}"
            summary.errors[type(o.error).__name__] += 1
            if o.uncertain:
                summary.uncertain_delivered += total
            else:
                assert total == 0, f"{mid} reported failed ({o.error!r}) but {where} received it"
            if isinstance(o.error, AllProvidersFailed):
                assert o.error.message is not None
                assert o.error.message.message_id == mid
    return summary


def fast_mailer(providers: list[Any], **options: Any) -> Mailer:
    """A Mailer tuned for tests: short cooldowns, quick retries, a short deadline.

    The deadline is 8 s: no case means it to fire (each hang has its own shorter
    timeout), and at 4 s a loaded machine ran sends past it while they waited for
    a shared OAuth2 refresh, so they never reached the backup."""
    settings: dict[str, Any] = {
        "send_timeout": 8.0,
        "health": {
            "failure_threshold": 3,
            "cooldown": 0.2,
            "max_cooldown": 0.5,
            "auth_cooldown": 0.5,
        },
        "retry": {"attempts": 2, "backoff": 0.01, "max_backoff": 0.02},
    }
    settings.update(options)
    return Mailer(providers, **settings)


class Timer:
    def __init__(self) -> None:
        self.started = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


async def soak_on_primary(
    mailer: Mailer,
    batch: list[Message],
    received: Callable[[], dict[str, Counter[str]]],
    primary: str = "a",
) -> float:
    """Start every send of ``batch`` at once and require each to go out once, on
    ``primary``, with no failed attempt on the way (the soaks: a burst far larger than the
    pool must queue, not fail over). Returns the seconds it took."""
    async with mailer:
        started = time.monotonic()
        outcomes = await run_load(mailer, batch, concurrency=len(batch), timeout=540)
        took = time.monotonic() - started
    reasons = Counter(
        str(a.error)[:90] for o in outcomes if o.result is not None
        for a in o.result.attempts if a.error is not None
    )  # fmt: skip
    assert not reasons, reasons.most_common(5)
    summary = check_ledger(outcomes, received())
    assert summary.sent == {primary: len(batch)} and not summary.errors, summary
    return took
