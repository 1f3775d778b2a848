"""Shared test setup: async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from tests.health.redis_kit import RedisServer
from tests.pgcluster import PostgresCluster, find_bin

from mailer._clock import FakeClock
from mailer.testing import Certs, make_certs

#: the tests' own plugin (a provider that loads, one that cannot): found through its
#: dist-info on sys.path, never installed, so a demo install does not list it
TEST_PLUGIN_PATH = str(Path(__file__).parent / "fixtures" / "mailer-testplugin" / "src")
if TEST_PLUGIN_PATH not in sys.path:
    sys.path.append(TEST_PLUGIN_PATH)
#: Property tests are judged on their inputs, never on the machine's speed. Hypothesis's
#: default 200 ms deadline per example and its ``too_slow`` health check fail a test on a
#: loaded CI machine (a stalled example re-run fast is reported "Unreliable test timings"),
#: so every ``@given`` without its own ``@settings`` runs with neither.
settings.register_profile("suite", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("suite")

# and for the `python -m mailer` subprocesses the CLI tests start
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.environ.get("PYTHONPATH"), TEST_PLUGIN_PATH) if p
)


@pytest.fixture
def anyio_backend() -> str:
    # The SMTP provider is built on aiosmtplib, which is asyncio-only.
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    """A clock the tests move by hand, so breaker tests never sleep."""
    return FakeClock(1000.0)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A private CA (trustme) and a certificate for ``mailer.testing.TLS_NAME``, made once
    for the session (a module that needs other names makes its own)."""
    return make_certs(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real Redis on a loopback port, shared by the session (tests keep to their own
    ``prefix``); started on first use."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the session (each test gets its own database)."""
    if find_bin() is None:
        pytest.skip(
            "PostgreSQL is not installed, and `make install` could not install it "
            "(that needs root and apt-get)"
        )
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return pg_cluster.dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: tests share the server, never its keys."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, which it may stop and start again."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()
