"""The answers, the same from the ASGI app under uvicorn and the WSGI app under wsgiref
(a SyncMailer): 405, 404, 413 (declared or streamed), 401, 400 and 200 once stored; no
answer or log line carries a secret or the payload."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mailer import Mailer, SyncMailer
from mailer.providers._postmark import PostmarkProvider
from mailer.webhooks import MAX_BODY, asgi_app, wsgi_app

from .conftest import asgi_server, wsgi_server
from .sign import basic

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-hook-pass"
EVENT = (b'{"RecordType":"Delivery","MessageID":"pm-1","Recipient":"john@example.com",'
         b'"DeliveredAt":"2021-02-21T16:34:52Z","Metadata":{}}')  # fmt: skip


def mailer(tmp_path: Path) -> Mailer:
    provider = PostmarkProvider.from_config(
        "pm", {"server_token": "pm-token", "webhook": {"basic_auth": f"hook:{PASSWORD}"}}
    )
    return Mailer([provider], suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})


@asynccontextmanager
async def asgi(tmp_path: Path) -> AsyncIterator[str]:
    async with mailer(tmp_path) as m, asgi_server(asgi_app(m)) as url:
        yield url


@contextmanager
def wsgi(tmp_path: Path) -> Iterator[str]:
    with SyncMailer(lambda: mailer(tmp_path)) as sync, wsgi_server(wsgi_app(sync)) as url:
        yield url


def check_answers(url: str) -> str:
    """Every answer, in turn; returns what the refusals said (checked for secrets)."""
    good = basic("hook", PASSWORD)
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/pm").status_code == 405
        assert client.get("/pm").headers["allow"] == "POST"
        assert client.post("/nobody", content=EVENT, headers=good).status_code == 404
        wrong = client.post("/pm", content=EVENT, headers=basic("hook", "nope"))
        assert wrong.status_code == 401
        assert client.post("/pm", content=EVENT).status_code == 401
        bad = client.post("/pm", content=b"{not json", headers=good)
        assert bad.status_code == 400
        big = client.post("/pm", content=b"x" * (MAX_BODY + 1), headers=good)
        assert big.status_code == 413
        ok = client.post("/pm", content=EVENT, headers=good)
        assert (ok.status_code, ok.json()) == (200, {"stored": 1, "duplicates": 0})
        again = client.post("/pm", content=EVENT, headers=good)
        assert again.json() == {"stored": 0, "duplicates": 1}
    return wrong.text + bad.text + big.text


def no_secret(text: str) -> None:
    assert PASSWORD not in text and "john@example.com" not in text


async def test_answers_asgi(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with asgi(tmp_path) as url:
        said = await anyio.to_thread.run_sync(check_answers, url)
    no_secret(said + caplog.text)


def test_answers_wsgi(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with wsgi(tmp_path) as url:
        said = check_answers(url)
    no_secret(said + caplog.text)


async def test_a_streamed_body_over_the_limit_is_not_read_whole(tmp_path: Path) -> None:
    """No Content-Length (chunked): the app stops asking for the body at the limit."""
    chunk = b"x" * (1024 * 1024)
    asked = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": chunk, "more_body": asked < 8}

    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    auth = basic("hook", PASSWORD)["Authorization"].encode()
    scope = {"type": "http", "method": "POST", "path": "/pm", "query_string": b"",
             "headers": [(b"authorization", auth)]}  # fmt: skip
    async with mailer(tmp_path) as m:
        await asgi_app(m)(scope, receive, send)
    assert sent[0]["status"] == 413
    assert asked == 6  # 6 MiB read of 8 offered: it stopped past 5 MiB
