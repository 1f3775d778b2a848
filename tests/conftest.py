"""Shared test setup: async tests run on asyncio through anyio's pytest plugin."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

#: the tests' own plugin (a provider that loads, one that cannot): found through its
#: dist-info on sys.path, never installed, so a demo install does not list it
TEST_PLUGIN_PATH = str(Path(__file__).parent / "fixtures" / "mailer-testplugin" / "src")
if TEST_PLUGIN_PATH not in sys.path:
    sys.path.append(TEST_PLUGIN_PATH)
# and for the `python -m mailer` subprocesses the CLI tests start
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (os.environ.get("PYTHONPATH"), TEST_PLUGIN_PATH) if p
)


@pytest.fixture
def anyio_backend() -> str:
    # The SMTP provider is built on aiosmtplib, which is asyncio-only.
    return "asyncio"


class FakeClock:
    """A clock the tests move by hand, so breaker tests never sleep."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
