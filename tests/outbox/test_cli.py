"""``mailer outbox status|list|retry|purge`` as a person runs them (subprocesses)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import anyio

from mailer import Mailer
from mailer.testing import ScriptedProvider

from .conftest import fast_outbox, make_message


def mailer_cmd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args], capture_output=True, text=True, timeout=60
    )


def test_status_list_retry_purge(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    config = tmp_path / "mailer.json"
    config.write_text(json.dumps({"providers": ["memory://"], "outbox": fast_outbox(url)}))

    async def fill() -> list[str]:
        # one message refused for good, two left queued
        failing = Mailer([ScriptedProvider("p", ["permanent"])], outbox=fast_outbox(url))
        async with failing:
            first = await failing.enqueue(make_message(0))
            await failing.drain(timeout=5)
            return [first] + [await failing.enqueue(make_message(i)) for i in (1, 2)]

    failed, *queued = anyio.run(fill, backend="asyncio")

    status = mailer_cmd("outbox", "status", "--config", str(config))
    assert status.returncode == 0, status.stderr
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in status.stdout.splitlines()
        if line.count("│") == 3
    }
    assert lines["queued"] == "2" and lines["failed"] == "1" and lines["sent"] == "0"

    listed = mailer_cmd("outbox", "list", "--state", "failed", "--config", str(config))
    assert listed.returncode == 0 and failed in listed.stdout and queued[0] not in listed.stdout
    assert "PermanentError" in listed.stdout
    bad = mailer_cmd("outbox", "list", "--state", "lost", "--config", str(config))
    assert bad.returncode == 2 and "unknown state" in bad.stderr

    retried = mailer_cmd("outbox", "retry", failed, "--config", str(config))
    assert retried.returncode == 0 and "1 of 1" in retried.stdout
    missing = mailer_cmd("outbox", "retry", "<nope@example.com>", "--config", str(config))
    assert missing.returncode == 1 and "not in the outbox" in missing.stderr

    with sqlite3.connect(tmp_path / "outbox.db") as conn:
        conn.execute(
            "UPDATE outbox SET state = 'sent', updated = 0 WHERE message_id = ?", (queued[0],)
        )
    purged = mailer_cmd(
        "outbox", "purge", "--state", "sent", "--older-than", "7d", "--config", str(config)
    )
    assert purged.returncode == 0 and "purged 1 sent" in purged.stdout
    nope = mailer_cmd(
        "outbox", "purge", "--state", "sent", "--older-than", "soon", "--config", str(config)
    )
    assert nope.returncode == 2

    no_outbox = tmp_path / "plain.json"
    no_outbox.write_text(json.dumps({"providers": ["memory://"]}))
    plain = mailer_cmd("outbox", "status", "--config", str(no_outbox))
    assert plain.returncode == 2 and "no outbox" in plain.stderr
