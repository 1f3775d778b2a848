"""The webhook receivers in Django (``include("mailer.django.urls")``) and Flask (the
``Mail`` extension's blueprint), through each framework's test client: a Postmark post
with its Basic credentials stored once, wrong ones 401, GET 405, unknown provider 404."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from mailer import Mailer

PASSWORD = "hook-pa55"
EVENT = json.dumps({"RecordType": "Bounce", "ID": 7, "Type": "HardBounce",
                    "MessageID": "pm-7", "Email": "gone@example.org",
                    "BouncedAt": "2021-02-21T16:34:52Z", "Description": "unknown user",
                    "Metadata": {"mailer_message_id": "<w1@app.example.com>"}})  # fmt: skip


def config(tmp_path: Path) -> dict[str, Any]:
    return {
        "providers": [{"type": "postmark", "name": "pm", "config": {
            "server_token": "pm-token", "webhook": {"basic_auth": f"hook:{PASSWORD}"}}}],
        "suppression": {"store": f"sqlite:///{tmp_path / 'mail.db'}"},
    }  # fmt: skip


def auth(password: str = PASSWORD) -> str:
    return "Basic " + base64.b64encode(f"hook:{password}".encode()).decode()


def stored(tmp_path: Path) -> list[str]:
    import asyncio

    async def read() -> list[str]:
        async with Mailer.from_config(config(tmp_path)) as mailer:
            return [entry.address for entry in await mailer.suppression.list()]

    return asyncio.run(read())


def test_django_urls(tmp_path: Path, use_mailer: Any) -> None:
    from django.test import Client

    use_mailer(config(tmp_path))
    client = Client()
    url = "/mail/events/pm"
    post = lambda password: client.post(url, EVENT, content_type="application/json",  # noqa: E731
                                        HTTP_AUTHORIZATION=auth(password))  # fmt: skip
    assert post("wrong").status_code == 401
    assert stored(tmp_path) == []
    first = post(PASSWORD)
    assert (first.status_code, first.json()) == (200, {"stored": 1, "duplicates": 0})
    assert post(PASSWORD).json() == {"stored": 0, "duplicates": 1}
    assert client.get(url).status_code == 405
    assert client.post("/mail/events/nobody", EVENT, content_type="application/json",
                       HTTP_AUTHORIZATION=auth()).status_code == 404  # fmt: skip
    assert stored(tmp_path) == ["gone@example.org"]


def test_flask_blueprint(tmp_path: Path) -> None:
    from flask import Flask

    from mailer.flask import Mail

    app = Flask(__name__)
    app.config["MAILER"] = config(tmp_path)
    mail = Mail(app)
    app.register_blueprint(mail.webhooks_blueprint(), url_prefix="/mail/events")
    try:
        client = app.test_client()
        headers = {"Authorization": auth(), "Content-Type": "application/json"}
        wrong = client.post("/mail/events/pm", data=EVENT,
                            headers={**headers, "Authorization": auth("x")})  # fmt: skip
        assert wrong.status_code == 401
        first = client.post("/mail/events/pm", data=EVENT, headers=headers)
        assert (first.status_code, first.get_json()) == (200, {"stored": 1, "duplicates": 0})
        assert client.post("/mail/events/pm", data=EVENT, headers=headers).get_json() == {
            "stored": 0, "duplicates": 1}  # fmt: skip
        assert client.get("/mail/events/pm").status_code == 405
        assert client.post("/mail/events/x", data=EVENT, headers=headers).status_code == 404
    finally:
        mail.close(app)
    assert stored(tmp_path) == ["gone@example.org"]
