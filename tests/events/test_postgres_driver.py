"""Without asyncpg (the ``postgres`` extra), a ``postgresql://`` store refuses to open with
a ConfigError that names the extra, before any I/O, and without echoing the DSN's password.
The check is written once (``mailer._pgdriver``); each store says what needed the driver."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

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


@pytest.mark.parametrize(
    ("store", "needed_by"),
    [
        (PostgresBackend, "a postgresql:// events or suppression store"),
        (PostgresStore, "a postgresql:// outbox"),
    ],
)
async def test_a_postgres_store_without_asyncpg_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, store: Callable[[str], Any], needed_by: str
) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)
    with pytest.raises(ConfigError) as info:
        await store(_dsn()).open()
    text = str(info.value)
    assert text == f"{needed_by} needs asyncpg: pip install 'mailer-failover[postgres]'"
    assert PASSWORD not in text
