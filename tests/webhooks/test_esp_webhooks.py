"""Every ESP's receiver through uvicorn on 127.0.0.1: its documented sample events, each
post signed (or authenticated) as that ESP does it, become the right DeliveryEvents with
our Message-ID from the correlation key (no send record exists: the send's reply was
lost); a forged, unsigned or replayed post is 401 and stores nothing; a repeat is
applied once. SendGrid has its own file (one post holds many events)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailer_brevo import BrevoProvider
from mailer_mailjet import MailjetProvider
from svix.webhooks import Webhook, WebhookVerificationError

from mailer import Mailer
from mailer.providers._mailgun import MailgunProvider
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._resend import ResendProvider
from mailer.providers.http.correlation import tag_safe

from .conftest import sample, served_mailer
from .sign import basic, mailgun_signature, svix_headers

pytestmark = pytest.mark.anyio

MAILGUN_KEY = "key-mailgun-signing-0123456789"
SVIX_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BASIC = ("esp", "pa55-w0rd")

Post = tuple[bytes, dict[str, str]]


@dataclass
class ESP:
    name: str
    make: Callable[[], Any]
    #: (event, now, n) -> a signed post of that one event; n makes ids unique
    sign: Callable[[Any, float, int], Post]
    message_id: str
    types: list[tuple[str, str | None]]  # (type, bounce) per sample, in order
    suppressed: set[str]
    signed: bool  # a timestamp is signed, so a replay is refused


def _mailgun(event: Any, now: float, n: int) -> Post:
    body = {"signature": mailgun_signature(MAILGUN_KEY, int(now)), "event-data": event}
    return json.dumps(body).encode(), {"Content-Type": "application/json"}


def _resend(event: Any, now: float, n: int) -> Post:
    text = json.dumps(event).replace("TAG:<m3@app.example.com>", tag_safe("<m3@app.example.com>"))
    body = text.encode()
    return body, svix_headers(SVIX_SECRET, f"msg_{n}", int(now), body)


def _basic(event: Any, now: float, n: int) -> Post:
    return json.dumps(event).encode(), basic(*BASIC)


AUTH = {"basic_auth": ":".join(BASIC)}
ESPS = [
    ESP("mailgun",
        lambda: MailgunProvider.from_config("mailgun", {
            "api_key": "k", "domain": "mg.example.com",
            "webhook": {"signing_key": MAILGUN_KEY}}),
        _mailgun, "<m2@app.example.com>",
        [("delivered", None), ("bounced", "hard"), ("deferred", None), ("complained", None)],
        {"alice@example.com"}, True),
    ESP("resend",
        lambda: ResendProvider.from_config("resend", {
            "api_key": "re_k", "webhook": {"secret": SVIX_SECRET}}),
        _resend, "<m3@app.example.com>",
        [("accepted", None), ("delivered", None), ("bounced", "hard"), ("complained", None)],
        {"delivered@resend.dev", "complained@resend.dev"}, True),
    ESP("postmark",
        lambda: PostmarkProvider.from_config("postmark", {"server_token": "t", "webhook": AUTH}),
        _basic, "<m4@app.example.com>",
        [("delivered", None), ("bounced", "hard"), ("complained", None), ("opened", None),
         ("unsubscribed", None)],
        {"john@example.com", "mary@example.com", "bounced-address@wildbit.com"}, False),
    ESP("mailjet",
        lambda: MailjetProvider.from_config("mailjet", {
            "api_key": "k", "secret_key": "s", "webhook": AUTH}),
        _basic, "<m5@app.example.com>",
        [("delivered", None), ("bounced", "hard"), ("complained", None)],
        {"bounce@mailjet.com", "spammed@mailjet.com"}, False),
    ESP("brevo",
        lambda: BrevoProvider.from_config("brevo", {"api_key": "k", "webhook": AUTH}),
        _basic, "<m6@app.example.com>",
        [("delivered", None), ("bounced", "hard"), ("bounced", "soft")],
        {"example@domain.com"}, False),
]  # fmt: skip
BY_NAME = {esp.name: esp for esp in ESPS}


async def post(url: str, name: str, signed: Post) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/{name}", content=signed[0], headers=signed[1])


async def post_samples(esp: ESP, url: str, first: int = 0) -> list[httpx.Response]:
    return [await post(url, esp.name, esp.sign(event, time.time(), first + n))
            for n, event in enumerate(sample(esp.name))]  # fmt: skip


async def nothing_stored(mailer: Mailer, esp: ESP) -> None:
    assert await mailer.delivery_events(esp.message_id) == []
    assert await mailer.suppression.list() == []


@pytest.mark.parametrize("name", list(BY_NAME))
async def test_documented_samples_become_events(name: str, tmp_path: Path) -> None:
    esp = BY_NAME[name]
    async with served_mailer(tmp_path, esp.make()) as (mailer, url):
        answers = await post_samples(esp, url)
        assert [a.status_code for a in answers] == [200] * len(answers)
        events = await mailer.delivery_events(esp.message_id)
        # oldest first: compare as multisets, the samples' times are not in post order
        assert sorted((e.type, e.bounce or "") for e in events) == sorted(
            (t, b or "") for t, b in esp.types
        )
        assert all(e.provider == name and e.event_id and e.raw for e in events)
        listed = {entry.address for entry in await mailer.suppression.list()}
        assert listed == esp.suppressed  # hard bounces and complaints; soft ones not


@pytest.mark.parametrize("name", list(BY_NAME))
async def test_a_repeated_post_is_applied_once(name: str, tmp_path: Path) -> None:
    esp = BY_NAME[name]
    async with served_mailer(tmp_path, esp.make()) as (mailer, url):
        seen: list[str] = []
        mailer.on_delivery(lambda event: seen.append(event.type))
        await post_samples(esp, url)
        again = await post_samples(esp, url)  # the ESP's retries (Svix keeps the id)
        assert [a.json()["duplicates"] for a in again] == [1] * len(again)
        assert len(seen) == len(esp.types)


# Basic auth signs no timestamp: there a replay is a duplicate, applied once (above)
ATTACKS = [(esp.name, attack) for esp in ESPS for attack in ("forged", "unsigned", "replayed")
           if attack != "replayed" or esp.signed]  # fmt: skip


@pytest.mark.parametrize(("name", "attack"), ATTACKS)
async def test_refused_posts_store_nothing(name: str, attack: str, tmp_path: Path) -> None:
    esp = BY_NAME[name]
    event = sample(name)[1]
    async with served_mailer(tmp_path, esp.make()) as (mailer, url):
        body, headers = esp.sign(event, time.time() - (360 if attack == "replayed" else 0), 7)
        if attack == "unsigned":
            headers = {"Content-Type": "application/json"}
            if name == "mailgun":
                body = json.dumps({"event-data": event}).encode()
        elif attack == "forged":
            if name == "mailgun":  # Mailgun signs timestamp + token: change the token
                data = json.loads(body)
                data["signature"]["token"] = "f" * 50
                body = json.dumps(data).encode()
            elif name == "resend":
                body = body.replace(b"resend.dev", b"victim.example")
            else:
                headers = basic("esp", "guessed")
        response = await post(url, name, (body, headers))
        assert response.status_code == 401, response.text
        assert BASIC[1] not in response.text and MAILGUN_KEY not in response.text
        await nothing_stored(mailer, esp)


def test_svixs_own_library_accepts_our_signatures() -> None:
    """An independent check of the Resend signing in these tests: Svix's verifier."""
    body, headers = _resend(sample("resend")[0], time.time(), 1)
    verifier = Webhook(SVIX_SECRET)
    verifier.verify(body, headers)  # raises WebhookVerificationError when it does not verify
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body.replace(b"resend.dev", b"victim.example"), headers)
