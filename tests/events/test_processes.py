"""An entry added in one process stops sends in another within 2 s, on SQLite, Postgres
and Redis (issue 22): the other process reads only its local copy, refreshed from the
store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailer import Mailer
from mailer.testing import MemoryProvider

from .conftest import event

pytestmark = pytest.mark.anyio

PEER = Path(__file__).with_name("peer.py")


async def test_second_process_sees_an_entry_within_2s(shared_url: str) -> None:
    address = "leaver@example.org"
    peer = subprocess.Popen(
        [sys.executable, str(PEER), shared_url, address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert peer.stdout is not None
        first = peer.stdout.readline()  # blocks until the peer's first send (bounded below)
        assert first.strip() == "ready", peer.stderr.read() if peer.stderr else first
        async with Mailer([MemoryProvider("here")], suppression=shared_url) as mailer:
            await mailer.ingest_events(
                [event("complained", provider="here", recipient=address, event_id="c1")]
            )
            added = time.time()
        out, err = peer.communicate(timeout=15)
    finally:
        if peer.poll() is None:
            peer.kill()
            peer.wait(timeout=5)
    assert out.startswith("suppressed"), (out, err)
    seen = float(out.split()[1])
    assert seen - added < 2.0, f"seen {seen - added:.3f} s after it was added"
