"""The one-click endpoint: POST unsubscribes (stored before the 200, within 1 s), GET never
does, tampered and expired tokens get 400 and change nothing.

The app is driven through the ASGI protocol by httpx's ASGITransport, as a server would
drive it; the token in each request is the one a real send put in List-Unsubscribe (the
kit's SMTP server received it).
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from mailer import ConfigError, Mailer, Message
from mailer.providers import SMTPProvider
from mailer.testing import SMTPTestServer
from mailer.unsubscribe import Claim, UnsubscribeConfig, asgi_app, make_token

pytestmark = pytest.mark.anyio

KEY = "endpoint-test-key-0123456789-abcdefgh"
CONFIG = {"base_url": "https://example.com/mail", "key": KEY}
_URL = re.compile(r"<https://example\.com/mail(?P<path>/u/[^>]+)>")


class Recorder:
    """A suppress callable that keeps what it was asked to store."""

    def __init__(self) -> None:
        self.claims: list[Claim] = []

    async def __call__(self, claim: Claim) -> None:
        self.claims.append(claim)


@pytest.fixture
async def sent_path() -> str:
    """The unsubscribe path of a message really sent through SMTP."""
    with SMTPTestServer(auth=False) as server:
        smtp = SMTPProvider.from_config("smtp", server.config())
        async with Mailer([smtp], unsubscribe=CONFIG) as mailer:
            await mailer.send(Message(**{"from": "news@example.com", "to": "ada@example.org",
                                         "subject": "News", "text": "hi",
                                         "unsubscribe": "weekly"}))  # fmt: skip
        [envelope] = server.state.messages
    match = _URL.search(re.sub(r"\r\n\s+", " ", envelope.original_content.decode()))
    assert match is not None
    return "/mail" + match["path"]


def _client(recorder: Recorder) -> httpx.AsyncClient:
    mailer = Mailer([SMTPProvider.from_config("smtp", {"host": "127.0.0.1"})],
                    unsubscribe=CONFIG)  # fmt: skip
    app = asgi_app(mailer, suppress=recorder)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://example.com")


async def test_post_unsubscribes_within_a_second(sent_path: str) -> None:
    recorder = Recorder()
    async with _client(recorder) as client:
        started = time.monotonic()
        form = {"content-type": "application/x-www-form-urlencoded"}
        answer = await client.post(sent_path, content=b"List-Unsubscribe=One-Click", headers=form)
        elapsed = time.monotonic() - started
    assert answer.status_code == 200 and "Unsubscribed" in answer.text
    assert elapsed < 1.0
    assert [(c.recipient, c.list) for c in recorder.claims] == [("ada@example.org", "weekly")]


async def test_get_shows_a_page_and_never_unsubscribes(sent_path: str) -> None:
    recorder = Recorder()
    async with _client(recorder) as client:
        for _ in range(3):  # a scanner, a preview, the person
            answer = await client.get(sent_path)
            assert answer.status_code == 200
            assert '<form method="post">' in answer.text and "ada@example.org" in answer.text
    assert recorder.claims == []


async def test_tampered_and_expired_tokens_get_400_and_change_nothing(sent_path: str) -> None:
    recorder = Recorder()
    config = UnsubscribeConfig(**CONFIG)
    expired = make_token(config, "ada@example.org", "weekly", now=time.time() - config.max_age - 5)
    head, payload, mac = sent_path.rsplit("/", 1)[1].split(".")
    tampered = f"{head}.{payload[:-1]}{'A' if payload[-1] != 'A' else 'B'}.{mac}"
    async with _client(recorder) as client:
        for token, why in ((expired, "expired"), (tampered, "signature"), ("v1.x.y", "signature"),
                           ("garbage", "not an unsubscribe token")):  # fmt: skip
            for method in ("POST", "GET"):
                answer = await client.request(method, f"/mail/u/{token}")
                assert answer.status_code == 400, (token, method)
                assert why in answer.text
        assert (await client.post("/mail/x")).status_code == 404
        assert (await client.delete(sent_path)).status_code == 405
        assert (await client.post(sent_path, content=b"x" * 10_000)).status_code == 413
    assert recorder.claims == []


async def test_a_failed_store_is_503_not_200(sent_path: str) -> None:
    async def broken(claim: Claim) -> None:
        raise OSError("database is locked")

    mailer = Mailer([SMTPProvider.from_config("smtp", {"host": "127.0.0.1"})],
                    unsubscribe=CONFIG)  # fmt: skip
    transport = httpx.ASGITransport(app=asgi_app(mailer, suppress=broken))
    async with httpx.AsyncClient(transport=transport, base_url="https://example.com") as client:
        assert (await client.post(sent_path)).status_code == 503


def test_the_app_needs_the_unsubscribe_config_and_a_store() -> None:
    bare = Mailer([SMTPProvider.from_config("smtp", {"host": "127.0.0.1"})])
    with pytest.raises(ConfigError, match="no unsubscribe config"):
        asgi_app(bare, suppress=Recorder())
    configured = Mailer([SMTPProvider.from_config("smtp", {"host": "127.0.0.1"})],
                        unsubscribe=CONFIG)  # fmt: skip
    assert callable(asgi_app(configured))  # the Mailer's suppression list by default


async def test_post_suppresses_so_the_next_send_is_refused_before_any_io(
    sent_path: str,
) -> None:
    from mailer import RecipientsSuppressed

    with SMTPTestServer(auth=False) as server:
        smtp = SMTPProvider.from_config("smtp", server.config())
        async with Mailer([smtp], unsubscribe=CONFIG) as mailer:
            transport = httpx.ASGITransport(app=asgi_app(mailer))  # the default suppress
            async with httpx.AsyncClient(transport=transport, base_url="https://example.com") as c:
                started = time.monotonic()
                assert (await c.post(sent_path)).status_code == 200
                assert time.monotonic() - started < 1.0
            connections = server.state.connections
            with pytest.raises(RecipientsSuppressed):
                await mailer.send(Message(**{"from": "news@example.com", "to": "ada@example.org",
                                             "subject": "again", "text": "hi",
                                             "unsubscribe": "weekly"}))  # fmt: skip
            assert server.state.connections == connections and server.state.messages == []
            # the unsubscribe was from "weekly": a receipt and another list still go
            for extra in ({}, {"unsubscribe": "news"}):
                fields = {"from": "shop@example.com", "to": "ada@example.org",
                          "subject": "receipt", "text": "hi", **extra}  # fmt: skip
                await mailer.send(Message(**fields))
        assert len(server.state.messages) == 2
