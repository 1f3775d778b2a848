"""The Date header is formatted once per second (mailer._message.render.date_now)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import pytest

from mailer import Message
from mailer._message import render


def _date_of(message: Message) -> str:
    head = message.as_bytes().split(b"\r\n\r\n", 1)[0].decode()
    return next(line[6:] for line in head.split("\r\n") if line.startswith("Date: "))


def test_each_second_its_own_date(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [datetime(2026, 12, 5, 3, 0, 0, 100_000, tzinfo=UTC)]
    monkeypatch.setattr(render, "_utcnow", lambda: now[0])
    first = _date_of(Message(sender="a@x.org", to=["b@x.org"], subject="s", text="t"))
    now[0] = now[0].replace(microsecond=900_000)  # the same second: the cached text
    same = _date_of(Message(sender="a@x.org", to=["b@x.org"], subject="s", text="t"))
    now[0] = now[0].replace(second=1, microsecond=0)
    later = _date_of(Message(sender="a@x.org", to=["b@x.org"], subject="s", text="t"))
    assert first == same == format_datetime(datetime(2026, 12, 5, 3, 0, 0, tzinfo=UTC))
    assert parsedate_to_datetime(later) == datetime(2026, 12, 5, 3, 0, 1, tzinfo=UTC)


def test_a_date_header_given_is_kept() -> None:
    given = "Tue, 01 Dec 2026 10:00:00 +0000"
    message = Message(
        sender="a@x.org", to=["b@x.org"], subject="s", text="t", headers={"Date": given}
    )
    assert _date_of(message) == given
