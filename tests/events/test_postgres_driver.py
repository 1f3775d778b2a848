"""Without asyncpg (the ``postgres`` extra), a ``postgresql://`` store refuses to open with
a ConfigError that names the extra, before any I/O, and without echoing the DSN's password.
The check is written once (``mailer._pgdriver``); each store says what needed the driver."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import pytest

from mailer import ConfigError
from mailer._events.postgres import PostgresBackend
from mailer._outbox.postgres import PostgresStore
from mailer.testing import closed_port

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-never-shown"


def _dsn() -> str:
    # a port that refuses: were the check after any I/O, the error would be a refused
    # connection instead of the ConfigError
    return f"postgresql://mailer:{PASSWORD}@127.0.0.1:{closed_port()}/mail"


async def _refused(open_store: Callable[[], Awaitable[None]]) -> str:
    with pytest.raises(ConfigError) as info:
        await open_store()
    return str(info.value)


async def test_the_events_store_without_asyncpg_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    store = PostgresBackend(_dsn())
    text = await _refused(store.open)
    assert text == (
        "a postgresql:// events or suppression store needs asyncpg: "
        "pip install 'mailer-failover[postgres]'"
    )
    assert PASSWORD not in text


async def test_the_outbox_store_without_asyncpg_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    store = PostgresStore(_dsn())
    text = await _refused(store.open)
    assert text == "a postgresql:// outbox needs asyncpg: pip install 'mailer-failover[postgres]'"
    assert PASSWORD not in text
