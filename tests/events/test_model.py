"""DeliveryEvent is checked when built: its fields come from untrusted input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from mailer import DeliveryEvent
from mailer._events import normalize_recipient

from .conftest import event


def test_fields_and_normalisation() -> None:
    e = event(
        "bounced",
        bounce="hard",
        recipient=" <Jo.Smith@Bücher.EXAMPLE> ",
        message_id="a@b",
        timestamp=datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        event_id="ev-1",
        raw={"k": 1},
    )
    assert e.recipient == "Jo.Smith@xn--bcher-kva.example"  # local part exact, domain IDNA
    assert e.message_id == "<a@b>"  # the form SendResult.message_id has
    assert e.timestamp == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    assert e.timestamp.tzinfo is UTC
    assert e.suppression_key == "bounced:hard"
    assert "raw" not in repr(e)  # a whole payload is never printed
    with pytest.raises(AttributeError):
        e.type = "delivered"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "bounce"}, "type must be one of"),
        ({"timestamp": datetime(2026, 1, 1)}, "naive"),
        ({"timestamp": "2026-01-01T00:00:00Z"}, "must be a datetime"),
        ({"type": "bounced", "bounce": "medium"}, "'hard', 'soft' or None"),
        ({"type": "delivered", "bounce": "hard"}, "only for type 'bounced'"),
        ({"recipient": "no-at-sign"}, "local@domain"),
        ({"recipient": "a b@example.org"}, "whitespace or control"),
        ({"recipient": "a@exa_mple..org\u200b"}, "whitespace or control|IDNA"),
        ({"provider": ""}, "provider's name"),
        ({"event_id": 5}, "event_id must be a string"),
    ],
)
def test_bad_fields_are_refused(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "type": "delivered",
        "provider": "p",
        "recipient": "u@example.org",
        "timestamp": datetime.now(UTC),
    }
    with pytest.raises(ValueError, match=message):
        DeliveryEvent(**{**base, **fields})  # type: ignore[arg-type]


def test_matching_rules() -> None:
    """RFC 5321: the local part is exact, the domain case-insensitive (IDNA A-labels)."""
    assert normalize_recipient("User@EXAMPLE.org") == "User@example.org"
    assert normalize_recipient("User@EXAMPLE.org") != normalize_recipient("user@example.org")
    assert normalize_recipient("u@BÜCHER.example") == normalize_recipient("u@xn--bcher-kva.example")
    assert normalize_recipient("u@example.org.") == "u@example.org"
    assert normalize_recipient("u@[192.0.2.1]") == "u@[192.0.2.1]"
    with pytest.raises(ValueError):
        normalize_recipient("u@-bad-.example\u0301")


@pytest.mark.anyio
async def test_a_batch_naming_one_provider_id_twice_keeps_the_last(any_url: str | None) -> None:
    """A provider that answers the same id twice in one flushed batch (a fake, a retried
    request) must not fail the batch: Postgres refuses an upsert touching a row twice in
    one statement, which made ``Mailer.aclose()`` raise from the final flush."""
    from mailer._events.backends import open_backend
    from mailer._events.store import SendRecord

    backend = open_backend(any_url)
    await backend.open()
    try:
        await backend.record_sends(
            [
                SendRecord("ses", "same-id", "<first@example.org>", 1.0),
                SendRecord("ses", "other-id", "<other@example.org>", 1.0),
                SendRecord("ses", "same-id", "<second@example.org>", 2.0),
            ]
        )
        found = await backend.lookup("ses", ["same-id", "other-id"])
    finally:
        await backend.close()
    assert found == {"same-id": "<second@example.org>", "other-id": "<other@example.org>"}
