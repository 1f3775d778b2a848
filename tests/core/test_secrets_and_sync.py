"""Secrets stay out of repr and logs; the sync facade keeps one loop (and pool) alive."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mailer import ConfigError, Mailer, Message, SyncMailer
from mailer._log import get_logger, register_secret
from mailer.providers._memory import MemoryProvider
from mailer.testing import ScriptedProvider

CANARY = "CANARY-s3cr3t-token-91x"


def msg(**kw: Any) -> Message:
    return Message(sender="a@example.com", to=["b@example.org"], text="x", **kw)


@pytest.mark.anyio
async def test_secret_config_never_in_repr_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    m = Mailer.from_config(
        {
            "providers": [
                {"type": "echo", "name": "e", "config": {"token": CANARY}},
                {"type": "memory"},
            ]
        }
    )
    provider = m.providers[0]
    for text in (repr(m), repr(provider), str(provider.config), repr(provider.config)):
        assert CANARY not in text
    # a secret that reaches a log line by any route is redacted by the mailer loggers
    get_logger("mailer").warning("server echoed %s back", CANARY)
    get_logger("mailer.smtp").debug("transcript: AUTH PLAIN %s", CANARY)
    await m.send(msg())
    assert caplog.records
    assert CANARY not in caplog.text
    assert "**********" in caplog.text


def test_redaction_of_runtime_tokens(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    register_secret("ya29.runtime-oauth-token")
    get_logger("mailer.oauth").info("got token ya29.runtime-oauth-token for user")
    assert "ya29.runtime-oauth-token" not in caplog.text


def test_sync_mailer_keeps_one_loop_across_calls() -> None:
    loops: set[int] = set()
    threads: set[str] = set()

    def record(_: Message) -> None:
        import asyncio

        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.current_thread().name)

    p = ScriptedProvider("a", [record] * 20)
    with SyncMailer(Mailer([p])) as sm, ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: sm.send(msg(subject=str(i))), range(20)))
    assert {r.provider for r in results} == {"a"}
    assert len(p.messages) == 20
    assert len(loops) == 1 and threads == {"mailer-loop"}
    assert p.closed


def test_sync_mailer_from_config_and_errors() -> None:
    from mailer import AllProvidersFailed, MailerError

    sm = SyncMailer({"providers": [{"type": "memory", "config": {"outcomes": ["auth"]}}]})
    with pytest.raises(AllProvidersFailed):
        sm.send(msg())
    sm.close()
    sm.close()  # idempotent
    with pytest.raises(MailerError, match="closed"):
        sm.send(msg())


def test_sync_mailer_send_many_runs_sends_concurrently_in_the_callers_context() -> None:
    import contextvars
    import time

    from mailer import AllProvidersFailed, MailerError

    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
    seen: list[str] = []

    def record(message: Message) -> None:
        seen.append(request_id.get())

    # 0.5 s per send: five one after the other would take at least 2.5 s, together about
    # 0.5 s. (0.2 s a send against a bound of 0.9 left a loaded machine 0.7 s for five
    # sends' own work; 1.5 s leaves it a second)
    a = ScriptedProvider("a", [record] * 5 + ["auth"], latency=0.5)
    b = ScriptedProvider("b")
    with SyncMailer(Mailer([a, b], retry={"attempts": 1})) as sm:
        request_id.set("req-1")
        started = time.monotonic()
        results = sm.send_many([msg(subject=str(i)) for i in range(5)])
        took = time.monotonic() - started
        mixed = sm._send_each([msg(), msg()], [["a"], ["b"]])  # the Django backend's form
        only_b = sm.send_many([msg()], providers=["b"])
        with pytest.raises(ConfigError, match="one entry per message"):
            sm._send_each([msg()], [])
    assert [getattr(r, "provider", None) for r in results] == ["a"] * 5
    assert took < 1.5, took  # concurrent on the one loop
    assert seen == ["req-1"] * 5  # the calling thread's context went along
    assert isinstance(mixed[0], AllProvidersFailed)  # a's "auth", and only a was allowed
    assert getattr(mixed[1], "provider", None) == "b"
    assert getattr(only_b[0], "provider", None) == "b"
    with pytest.raises(MailerError, match="closed"):
        sm.send_many([msg()])


@pytest.mark.anyio
async def test_outbox_fixture(outbox: list[Message]) -> None:
    m = Mailer([MemoryProvider("mem")])
    await m.send(msg(subject="one"))
    await m.send(msg(subject="two"))
    assert [x.subject for x in outbox] == ["one", "two"]
