"""``mailer webhooks serve`` as a process: uvicorn on 127.0.0.1 answers a signed post
once the events are stored, and refuses a config without any webhook block."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from mailer import Mailer
from mailer.testing import free_port

from .sign import basic

EVENT = json.dumps({"RecordType": "Delivery", "MessageID": "pm-1", "Recipient": "john@example.com",
                    "DeliveredAt": "2021-02-21T16:34:52Z",
                    "Metadata": {"mailer_message_id": "<c1@x.example>"}}).encode()  # fmt: skip


def write_config(tmp_path: Path, webhook: bool = True) -> Path:
    path = tmp_path / "mailer.toml"
    block = '\n[providers.config.webhook]\nbasic_auth = "hook:pw-123"\n' if webhook else ""
    path.write_text(
        f'suppression = "sqlite:///{tmp_path / "mail.db"}"\n'
        '[[providers]]\ntype = "postmark"\nname = "pm"\n'
        f'[providers.config]\nserver_token = "pm-token"\n{block}'
    )
    return path


def test_serve_stores_and_answers(tmp_path: Path) -> None:
    config, port = write_config(tmp_path), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "mailer", "webhooks", "serve", "--config", str(config),
         "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/pm"
        deadline = time.monotonic() + 30
        response = None
        while time.monotonic() < deadline:  # bounded: until uvicorn listens
            try:
                response = httpx.post(url, content=EVENT, headers=basic("hook", "pw-123"))
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert response is not None, "the server did not listen within 30 s"
        assert (response.status_code, response.json()) == (200, {"stored": 1, "duplicates": 0})
        assert httpx.post(url, content=EVENT, headers=basic("hook", "no")).status_code == 401
    finally:
        process.terminate()
        process.wait(15)

    async def events() -> list[str]:
        async with Mailer.from_config(config) as mailer:
            return [e.type for e in await mailer.delivery_events("<c1@x.example>")]

    assert asyncio.run(events()) == ["delivered"]


def test_serve_refuses_a_config_without_webhooks(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailer", "webhooks", "serve", "--config",
         str(write_config(tmp_path, webhook=False)), "--port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode != 0
    assert "no provider in the config has a webhook block" in done.stderr + done.stdout
