"""The structured delivery log: one record per attempt and per outcome, secrets redacted,
and the JSON logging config documented in docs/observability.md."""

from __future__ import annotations

import json
import logging
import logging.config
from typing import Any

import pytest

from mailer import AllProvidersFailed, Mailer, Message, TransientError
from mailer._log import register_secret
from mailer.testing import ScriptedProvider

from .docs import doc_block

pytestmark = pytest.mark.anyio

CANARY = "sk-canary-7f3a9c"


def msg() -> Message:
    return Message(sender="app@example.com", to="user@example.org", subject="s", text="x")


def delivery(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "mailer.delivery"]


async def test_one_record_per_attempt_and_outcome(
    caplog: pytest.LogCaptureFixture, outbox: list[Message]
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    primary = ScriptedProvider("primary", ["transient"])
    mailer = Mailer([primary, ScriptedProvider("secondary")], retry={"attempts": 1})
    message = msg()
    await mailer.send(message)

    records = delivery(caplog)
    assert [(r.event, r.provider, r.outcome, r.levelname) for r in records] == [  # type: ignore[attr-defined]
        ("attempt", "primary", "TransientError", "INFO"),
        ("failover", "primary", "TransientError", "WARNING"),
        ("attempt", "secondary", "sent", "DEBUG"),
        ("sent", "secondary", "sent", "INFO"),
    ]
    for record in records:
        assert record.message_id == message.message_id  # type: ignore[attr-defined]
    attempt, _, ok, sent = records
    assert attempt.duration >= 0 and attempt.error  # type: ignore[attr-defined]
    assert hasattr(attempt, "committed")  # None: the memory provider does not report it
    assert sent.duration == pytest.approx(attempt.duration + ok.duration, abs=1e-5)  # type: ignore[attr-defined]
    assert sent.attempts == 2  # type: ignore[attr-defined]


async def test_failed_outcome_is_an_error_record_with_secrets_redacted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    register_secret(CANARY)
    error = TransientError(f"server echoed the key {CANARY}", code=421)
    mailer = Mailer([ScriptedProvider("only", [error])], retry={"attempts": 1})
    with pytest.raises(AllProvidersFailed):
        await mailer.send(msg())
    records = delivery(caplog)
    assert [(r.event, r.levelname) for r in records] == [  # type: ignore[attr-defined]
        ("attempt", "INFO"),
        ("failover", "WARNING"),  # to nobody: the Mailer reports it even so
        ("failed", "ERROR"),
    ]
    attempt, _, failed = records
    assert attempt.code == 421  # type: ignore[attr-defined]
    assert failed.outcome == "AllProvidersFailed"  # type: ignore[attr-defined]
    for record in (attempt, failed):
        assert CANARY not in record.getMessage()
        assert CANARY not in record.error  # type: ignore[attr-defined]
        assert "**********" in record.error  # type: ignore[attr-defined]


async def test_documented_json_logging_config(capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, Any] = {}
    exec(doc_block("observability.md", "logging-config"), namespace)  # noqa: S102 - our own docs
    logger = logging.getLogger("mailer")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    try:
        logging.config.dictConfig(namespace["LOGGING"])
        register_secret(CANARY)
        mailer = Mailer(
            [ScriptedProvider("primary", [TransientError(f"no {CANARY}", code=451)]),
             ScriptedProvider("secondary")],
            retry={"attempts": 1},
        )  # fmt: skip
        message = msg()
        await mailer.send(message)
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line]
    events = [(r["event"], r["provider"], r["outcome"]) for r in lines]
    assert events == [
        ("attempt", "primary", "TransientError"),
        ("failover", "primary", "TransientError"),
        ("sent", "secondary", "sent"),
    ]  # the successful attempt is DEBUG, below the documented INFO
    assert all(r["message_id"] == message.message_id for r in lines)
    assert lines[0]["code"] == 451 and lines[0]["levelname"] == "INFO"
    assert isinstance(lines[2]["duration"], float)
    assert CANARY not in json.dumps(lines)


async def test_events_for_nobody_are_not_built_and_a_listener_sees_all(
    caplog: pytest.LogCaptureFixture, outbox: list[Message]
) -> None:
    """With the log the only listener, an event it would drop is not built (the hot
    path's ``Runtime.listening``): at WARNING a send leaves no record and no stray
    "failed"; at INFO the "sent" record is back; a listener sees every event."""
    caplog.set_level(logging.WARNING, logger="mailer")
    mailer = Mailer([ScriptedProvider("only")])
    await mailer.send(msg())
    assert delivery(caplog) == []

    caplog.set_level(logging.INFO, logger="mailer")
    message = msg()
    await mailer.send(message)
    assert [(r.event, r.levelname) for r in delivery(caplog)] == [("sent", "INFO")]  # type: ignore[attr-defined]

    seen: list[str] = []
    unsubscribe = mailer.subscribe(lambda event: seen.append(event.kind))
    caplog.set_level(logging.WARNING, logger="mailer")
    await mailer.send(msg())
    unsubscribe()
    assert seen == ["start", "attempt", "sent"]
