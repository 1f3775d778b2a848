"""What the starved-loop tests share (SMTP in test_loop_lag, HTTP in test_http_loop_lag,
test_http_post_body_lag and test_http_proxy_failover): the budget they measure against,
the slack a shared machine needs, the CPU work that holds the event loop, and a relay
that makes a TLS handshake slow on chosen connections. (The API they starve the loop
against runs on a loop of its own: the ``api`` fixture in conftest.py.)"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

from mailer._routing.budget import BudgetConfig
from mailer.testing import ThreadedSocketServer

BUDGET = BudgetConfig().pre_commit  # the default, 3 s
#: a shorter budget, for the cases that do not need the default's scale
SHORT = {"pre_commit": 1.0, "max": 15.0}
#: what a send may take beyond its expected time on this shared, noisy machine
SLACK = 1.5


def burn(seconds: float) -> None:
    """Hold the event loop with CPU work for ``seconds`` (bounded by the clock)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(200))


def failed_attempts(result: Any) -> list[str]:
    return [str(a.error) for a in result.attempts if a.error is not None]


class SlowHandshakeRelay(ThreadedSocketServer):
    """Relays TCP to ``port``; on the connections numbered in ``slow`` (1 = the first)
    the upstream's first bytes (its TLS handshake flight) are held for ``delay`` s.
    ``held`` is set when a slow connection's flight has arrived and is being held (the
    client's ClientHello went through, the API answered): the moment a test starves
    its loop from, whatever the machine's load made it take to get there."""

    def __init__(self, port: int, delay: float, slow: set[int]) -> None:
        super().__init__()
        self._upstream, self._delay, self._slow = port, delay, slow
        self.held = threading.Event()

    def on_connect(self, client: socket.socket) -> None:
        hold = self._delay if self.accepted in self._slow else 0.0
        upstream = socket.create_connection((self.host, self._upstream), timeout=5)
        self.relay(client, upstream, hold=hold, held=self.held if hold else None)

    async def wait_held(self, timeout: float = 10.0) -> None:
        """Let the event loop run until a slow connection's flight is held (bounded)."""
        end = time.monotonic() + timeout
        while not self.held.is_set():
            assert time.monotonic() < end, "the client never got to its TLS handshake"
            await asyncio.sleep(0.005)
