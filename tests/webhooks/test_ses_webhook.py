"""Amazon SES through SNS under uvicorn: SignatureVersion 1 and 2 against the signing
certificate (served by an injected fetch, which only ever sees SNS URLs), the topic
checked, the subscription confirmed, SES's documented sample events stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer import ConfigError, Mailer
from mailer.providers._ses import SESProvider
from mailer.providers.http.correlation import tag_safe
from mailer.webhooks import WebhookHandler, asgi_app

from .conftest import asgi_server, sample
from .sign import SNSSigner

pytestmark = pytest.mark.anyio

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-events"
SIGNER = SNSSigner()
MID = "<m7@app.example.com>"
SNS_HOST = "sns.eu-west-1.amazonaws.com"
SES_ID = "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"


def provider(**webhook: Any) -> SESProvider:
    return SESProvider.from_config("ses", {
        "region": "eu-west-1", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "s3cr3t",
        "webhook": {"topic_arns": [TOPIC], **webhook}})  # fmt: skip


class Served:
    def __init__(self, mailer: Mailer, url: str, fetched: list[str]) -> None:
        self.mailer, self.url, self.fetched = mailer, url, fetched

    async def post(self, message: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient() as client:
            headers = {"x-amz-sns-message-type": message["Type"]}
            return await client.post(f"{self.url}/ses", content=json.dumps(message),
                                     headers=headers)  # fmt: skip


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:  # stands in for the download from SNS
        fetched.append(url)
        return SIGNER.pem if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"

    mailer = Mailer([provider()], suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})
    handler = WebhookHandler(mailer)
    handler.parsers["ses"].fetch = fetch  # type: ignore[attr-defined]
    async with mailer, asgi_server(asgi_app(mailer, handler=handler)) as url:
        yield Served(mailer, url, fetched)


def notification(event: dict[str, Any], at: datetime | None = None) -> dict[str, str]:
    text = json.dumps(event).replace(f"TAG:{MID}", tag_safe(MID))
    stamp = (at or datetime.now(UTC)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
            "Message": text, "Timestamp": stamp,
            "UnsubscribeURL": f"https://{SNS_HOST}/?Action=Unsubscribe"}  # fmt: skip


@pytest.mark.parametrize("version", ["1", "2"])
async def test_documented_samples_signed_v1_and_v2(served: Served, version: str) -> None:
    for event in sample("ses"):
        response = await served.post(SIGNER.sign(notification(event), version))
        assert response.status_code == 200, response.text
    events = await served.mailer.delivery_events(MID)
    assert sorted((e.type, e.bounce or "") for e in events) == [
        ("accepted", ""),
        ("bounced", "hard"),
        ("complained", ""),
        ("delivered", ""),
    ]
    bounce = next(e for e in events if e.type == "bounced")
    assert bounce.reason == "smtp; 550 5.1.1 user unknown"
    assert (
        bounce.provider_message_id == "EXAMPLE7c191be45-e9aedb9a-02f9-4d12-a87d-dd0099a07f8a-000000"
    )
    listed = {e.address for e in await served.mailer.suppression.list()}
    assert listed == {"recipient@example.com", "other@example.com"}
    assert served.fetched == [SNSSigner.CERT_URL]  # fetched once, then cached


async def test_subscription_is_confirmed_after_it_verifies(served: Served) -> None:
    confirm = "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=t0k"
    message = {"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()),
               "Token": "t0k", "TopicArn": TOPIC, "Message": "You have chosen to subscribe",
               "SubscribeURL": confirm,
               "Timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z")}  # fmt: skip
    forged = {**SIGNER.sign(message), "SubscribeURL": confirm + "&x=1"}
    assert (await served.post(forged)).status_code == 401
    assert confirm not in served.fetched
    assert (await served.post(SIGNER.sign(message))).status_code == 200
    assert served.fetched[-1] == confirm


@pytest.mark.parametrize("attack", ["tampered", "other topic", "foreign cert URL",
                                    "unsigned", "replayed", "other key"])  # fmt: skip
async def test_refused_and_nothing_stored(served: Served, attack: str) -> None:
    event = sample("ses")[2]
    message = SIGNER.sign(notification(event))
    if attack == "tampered":
        message["Message"] = message["Message"].replace("recipient@", "victim@")
    elif attack == "other topic":
        message = SIGNER.sign({**notification(event), "TopicArn": TOPIC + "-x"})
    elif attack == "foreign cert URL":
        message["SigningCertURL"] = "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem"
    elif attack == "unsigned":
        del message["Signature"]
    elif attack == "replayed":
        message = SIGNER.sign(notification(event, datetime.now(UTC) - timedelta(minutes=6)))
    else:
        message = SNSSigner().sign(notification(event))
    assert (await served.post(message)).status_code == 401
    assert all(".evil." not in url for url in served.fetched)
    assert await served.mailer.delivery_events(MID) == []
    assert await served.mailer.suppression.list() == []


def test_topic_arns_are_required() -> None:
    with pytest.raises(ConfigError, match="topic_arns"):
        SESProvider.from_config("ses", {"region": "eu-west-1", "access_key_id": "a",
                                        "secret_access_key": "b", "webhook": {}})  # fmt: skip
