"""A send whose reply is lost after Postmark took it: the outbox row is ``unknown``, no
provider message id was ever seen, and the delivery webhook still finds the message by
the correlation key in its Metadata and settles the row to ``sent``."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mailer import Mailer, Message
from mailer.testing import HTTPTestServer

from .conftest import asgi_server
from .sign import basic

pytestmark = pytest.mark.anyio


async def test_lost_reply_settled_by_the_delivery_webhook(tmp_path: Path) -> None:
    api = HTTPTestServer("accept-drop")  # takes the request, then hangs up: no reply
    async with api:
        config = {
            "providers": [{"type": "postmark", "name": "pm", "config": {
                "server_token": "pm-token", "base_url": api.base_url, "timeout": 5,
                "webhook": {"basic_auth": "hook:pw-1"}}}],
            "retry": {"attempts": 1},
            "outbox": {"url": f"sqlite:///{tmp_path / 'outbox.db'}", "lease": 5.0,
                       "poll_interval": 0.05,
                       "backoff": {"initial": 0.05, "max": 0.05, "jitter": 0.0}},
        }  # fmt: skip
        message = Message(sender="app@example.com", to=["ann@example.org"], subject="s",
                          text="t")  # fmt: skip
        async with Mailer.from_config(config) as mailer:
            message_id = await mailer.enqueue(message)
            await mailer.drain(timeout=10.0)
            assert (await mailer.outbox.stats())["unknown"] == 1
            sent = api.log[0].json()
            assert sent["Metadata"] == {"mailer_message_id": message_id}

            # Postmark's Delivery event for it: only its own MessageID and our Metadata
            event = {"RecordType": "Delivery", "MessageID": "pm-never-seen-by-us",
                     "Recipient": "ann@example.org", "DeliveredAt": "2026-01-02T03:04:05Z",
                     "Metadata": sent["Metadata"]}  # fmt: skip
            from mailer.webhooks import asgi_app

            async with asgi_server(asgi_app(mailer)) as url, httpx.AsyncClient() as client:
                answer = await client.post(f"{url}/pm", content=json.dumps(event),
                                           headers=basic("hook", "pw-1"))  # fmt: skip
            assert answer.status_code == 200
            events = await mailer.delivery_events(message_id)
            assert [(e.type, e.provider_message_id) for e in events] == [
                ("delivered", "pm-never-seen-by-us")]  # fmt: skip
            stats = await mailer.outbox.stats()
            assert (stats["unknown"], stats["sent"]) == (0, 1)
