"""The first send of a process imports nothing (issue 21, item 20): what a send needs is
loaded when the Mailer is built, never inside the event loop, where a 100-500 ms import
stalled every task. And the CLI's click, rich and pygments (which httpx's own command
line pulls in) are not loaded for an SMTP config at all. Each case in a fresh
interpreter, against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from mailer import Mailer, Message
    from mailer.testing import FakeResend, SMTPSink

    async def main(kind):
        sink, api = SMTPSink(), FakeResend()
        await sink.start()
        await api.start()
        if kind == "smtp":
            config = {"providers": [f"smtp://127.0.0.1:{sink.port}"]}
        else:
            config = {"providers": [{"type": kind, "config": api.config()}]}
        mailer = Mailer.from_config(config)
        async with mailer:
            before = set(sys.modules)
            result = await mailer.send(Message(sender="a@example.com", to=["b@example.org"],
                                               subject="s", text="t"))
            new = sorted(set(sys.modules) - before)
        await api.stop()
        await sink.stop()
        cli = sorted(m for m in ("click", "rich", "pygments", "typer") if m in sys.modules)
        print(json.dumps({"status": result.status, "imported": new, "cli": cli}))

    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.parametrize("kind", ["smtp", "resend"])
def test_the_first_send_imports_nothing(kind: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, kind], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    assert data["status"] == "sent"
    assert data["imported"] == []
    if kind == "smtp":
        assert data["cli"] == []  # no httpx, so none of its command line's imports
