"""The webhook apps also serve the one-click unsubscribe route, ``/u/{token}`` (issue 26):
the ASGI app under uvicorn and the WSGI app under wsgiref, each beside a provider's
webhook route. The token is the one a real send put in List-Unsubscribe (the kit's SMTP
server received it); POST suppresses, so the next send to that list is refused before any
I/O; GET only shows the page; tampered and expired tokens get 400 and change nothing."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from mailer import ConfigError, Mailer, Message, RecipientsSuppressed, SyncMailer
from mailer.providers import SMTPProvider
from mailer.providers._postmark import PostmarkProvider
from mailer.testing import SMTPTestServer
from mailer.unsubscribe import UnsubscribeConfig, make_token
from mailer.webhooks import asgi_app, wsgi_app

from .conftest import asgi_server, wsgi_server
from .sign import basic

pytestmark = pytest.mark.anyio

KEY = "webhook-route-test-key-0123456789-abcd"
CONFIG = {"base_url": "https://example.com/mail", "key": KEY}
PASSWORD = "s3cret-hook-pass"
EVENT = (b'{"RecordType":"Delivery","MessageID":"pm-1","Recipient":"john@example.com",'
         b'"DeliveredAt":"2021-02-21T16:34:52Z","Metadata":{}}')  # fmt: skip
_URL = re.compile(r"<https://example\.com/mail(?P<path>/u/[^>]+)>")


def _postmark(name: str = "pm") -> PostmarkProvider:
    return PostmarkProvider.from_config(
        name, {"server_token": "pm-token", "webhook": {"basic_auth": f"hook:{PASSWORD}"}}
    )


def _mailer(tmp_path: Path, smtp: dict[str, Any]) -> Mailer:
    return Mailer([SMTPProvider.from_config("smtp", smtp), _postmark()],
                  suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"},
                  unsubscribe=CONFIG)  # fmt: skip


def _news() -> Message:
    return Message(**{"from": "news@example.com", "to": "ada@example.org", "subject": "News",
                      "text": "hi", "unsubscribe": "weekly"})  # fmt: skip


def _check(url: str, server: SMTPTestServer, send: Callable[[], object]) -> None:
    """The whole story against one served app; ``send`` sends ``_news()`` (blocking)."""
    send()
    sent = server.state.messages[-1].original_content.decode()
    match = _URL.search(re.sub(r"\r\n\s+", " ", sent))
    assert match is not None
    path = match["path"]  # /u/{token}: the app is served at the root
    config = UnsubscribeConfig(**CONFIG)
    expired = make_token(config, "ada@example.org", "weekly", now=time.time() - config.max_age - 5)
    head, payload, mac = path.rsplit("/", 1)[1].split(".")
    tampered = f"{head}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{mac}"
    with httpx.Client(base_url=url, timeout=30) as client:
        for token, why in ((expired, "expired"), (tampered, "signature"),
                           ("garbage", "not an unsubscribe token")):  # fmt: skip
            for method in ("POST", "GET"):
                answer = client.request(method, f"/u/{token}")
                assert answer.status_code == 400, (token, method)
                assert why in answer.text
        page = client.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert 'method="post"' in page.text and "ada@example.org" in page.text
        assert page.headers["cache-control"] == "no-store"
        send()  # neither the bad tokens nor the GET unsubscribed
        assert len(server.state.messages) == 2
        started = time.monotonic()
        form = {"content-type": "application/x-www-form-urlencoded"}
        done = client.post(path, content=b"List-Unsubscribe=One-Click", headers=form)
        assert done.status_code == 200 and "Unsubscribed" in done.text
        assert time.monotonic() - started < 1.0
        connections = server.state.connections
        with pytest.raises(RecipientsSuppressed):
            send()
        assert server.state.connections == connections and len(server.state.messages) == 2
        # the provider's webhook route on the same app answers as before
        assert client.get("/pm").status_code == 405
        ok = client.post("/pm", content=EVENT, headers=basic("hook", PASSWORD))
        assert (ok.status_code, ok.json()) == (200, {"stored": 1, "duplicates": 0})
        assert client.post("/pm", content=EVENT).status_code == 401


async def test_the_asgi_webhook_app_serves_the_unsubscribe_route(tmp_path: Path) -> None:
    with SMTPTestServer(auth=False) as server:
        mailer = _mailer(tmp_path, server.config())
        async with mailer, asgi_server(asgi_app(mailer)) as url:

            def send() -> object:
                return anyio.from_thread.run(mailer.send, _news())

            await anyio.to_thread.run_sync(_check, url, server, send)


def test_the_wsgi_webhook_app_serves_the_unsubscribe_route(tmp_path: Path) -> None:
    with SMTPTestServer(auth=False) as server:
        config = server.config()
        sync = SyncMailer(lambda: _mailer(tmp_path, config))
        with sync, wsgi_server(wsgi_app(sync)) as url:
            _check(url, server, lambda: sync.send(_news()))


def test_without_an_unsubscribe_config_the_route_is_not_served(tmp_path: Path) -> None:
    mailer = Mailer([_postmark()], suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})
    with SyncMailer(lambda: mailer) as sync, wsgi_server(wsgi_app(sync)) as url:
        assert httpx.post(f"{url}/u/v1.x.y", timeout=30).status_code == 404  # no provider "v1.x.y"


def test_a_provider_named_u_with_a_webhook_is_refused_beside_the_route() -> None:
    mailer = Mailer([_postmark("u")], unsubscribe=CONFIG)
    with pytest.raises(ConfigError, match="provider named 'u'"):
        asgi_app(mailer)
    assert callable(asgi_app(Mailer([_postmark("u")])))  # no unsubscribe config: no clash
