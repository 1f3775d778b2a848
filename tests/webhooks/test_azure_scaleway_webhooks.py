"""Azure (Event Grid) and Scaleway (Topics and Events, SNS-like) receivers through uvicorn
and wsgiref on 127.0.0.1.

Azure: the subscription validation handshake answered with ``{"validationResponse"}``
only when the URL carries the secret; delivery reports found by the operation id a real
send (to a local stand-in for Azure) recorded; a repeat stored once. Scaleway: messages
signed by a leaf certificate that a test CA issued (the CA pinned as the trust chain, or
downloaded from the documented URL through the injected fetch), the subscription
confirmed after it verifies, forged/unsigned/replayed/foreign-CA posts refused with
nothing stored."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from mailer import ConfigError, Mailer, Message, SyncMailer
from mailer.providers._azure import AzureProvider, operation_id
from mailer.providers._scaleway import ScalewayProvider
from mailer.providers._scaleway_webhook import trust_chain_url
from mailer.testing import HTTPRequest, Reply, serve
from mailer.webhooks import WebhookHandler, asgi_app, wsgi_app

from .conftest import asgi_server, wsgi_server

pytestmark = pytest.mark.anyio

KEY = base64.b64encode(b"azure-unit-test-secret-key-32byt").decode()
SECRET = "eg-query-secret-0123456789"
CODE = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"
MESSAGE = Message(
    sender="app@example.com", to=["bob@example.org"], subject="s", text="t",
    message_id="<az1@app.example.com>",
)  # fmt: skip


def azure(endpoint: str = "https://res.communication.azure.com") -> AzureProvider:
    return AzureProvider.from_config("azure", {
        "endpoint": endpoint, "access_key": KEY, "webhook": {"secret": SECRET}})  # fmt: skip


def validation(code: str = CODE) -> list[dict[str, Any]]:
    """Event Grid's documented subscription validation post."""
    return [{
        "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
        "topic": "/subscriptions/xx/resourceGroups/rg/providers/"
                 "Microsoft.Communication/CommunicationServices/acs",
        "subject": "", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "eventTime": "2026-01-01T00:00:00Z", "metadataVersion": "1", "dataVersion": "1",
        "data": {"validationCode": code,
                 "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/x"},
    }]  # fmt: skip


def report(status: str, event_id: str, op: str) -> dict[str, Any]:
    """Azure's documented EmailDeliveryReportReceived event."""
    return {
        "id": event_id,
        "topic": "/subscriptions/xx/resourceGroups/rg/providers/"
                 "microsoft.communication/communicationservices/acs",
        "subject": f"sender/app@example.com/message/{op}",
        "eventType": "Microsoft.Communication.EmailDeliveryReportReceived",
        "dataVersion": "1.0", "metadataVersion": "1", "eventTime": "2026-01-01T00:00:03Z",
        "data": {"sender": "app@example.com", "recipient": "bob@example.org",
                 "messageId": op, "status": status,
                 "deliveryStatusDetails": {"statusMessage": "550 5.1.1 mailbox unknown"},
                 "deliveryAttemptTimeStamp": "2026-01-01T00:00:02.2855749+00:00"},
    }  # fmt: skip


async def post(url: str, body: Any, **headers: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(url, content=json.dumps(body), headers=headers)


async def test_event_grid_validation_needs_the_secret(tmp_path: Path) -> None:
    mailer = Mailer([azure()], suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})
    async with mailer, asgi_server(asgi_app(mailer)) as url:
        headers = {"aeg-event-type": "SubscriptionValidation"}
        ok = await post(f"{url}/azure?code={SECRET}", validation(), **headers)
        assert ok.status_code == 200
        assert ok.json() == {"validationResponse": CODE}
        for query in ("", "?code=wrong-secret-0123456789", f"?key={SECRET}"):
            refused = await post(f"{url}/azure{query}", validation(), **headers)
            assert refused.status_code == 401, query
            assert SECRET not in refused.text and CODE not in refused.text
        assert (await post(f"{url}/azure?code={SECRET}", [{"eventType": VALIDATION}])
                ).status_code == 400  # fmt: skip
        assert await mailer.suppression.list() == []


VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"


def test_event_grid_validation_through_wsgi(tmp_path: Path) -> None:
    store = {"store": f"sqlite:///{tmp_path / 'm.db'}"}
    sync = SyncMailer(lambda: Mailer([azure()], suppression=store))
    with sync as mailer, wsgi_server(wsgi_app(mailer)) as url:
        answer = httpx.post(f"{url}/azure?code={SECRET}", content=json.dumps(validation("c-2")))
        assert (answer.status_code, answer.json()) == (200, {"validationResponse": "c-2"})
        assert httpx.post(f"{url}/azure", content=json.dumps(validation())).status_code == 401


async def test_delivery_reports_find_the_sent_message(tmp_path: Path) -> None:
    def respond(request: HTTPRequest) -> Reply:  # Azure's send: 202 and the operation
        return Reply(202, {"id": request.headers["operation-id"], "status": "Running"})

    async with serve(respond=respond) as api:
        mailer = Mailer([azure(api.base_url)],
                        suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})  # fmt: skip
        async with mailer, asgi_server(asgi_app(mailer)) as url:
            result = await mailer.send(MESSAGE)
            op = operation_id(MESSAGE)
            assert result.provider_message_id == op
            events = [report("Delivered", "ev-1", op), report("Bounced", "ev-2", op)]
            first = await post(f"{url}/azure?code={SECRET}", events)
            assert first.json() == {"stored": 2, "duplicates": 0}, first.text
            again = await post(f"{url}/azure?code={SECRET}", events)  # Event Grid's retry
            assert again.json() == {"stored": 0, "duplicates": 2}
            stored = await mailer.delivery_events(MESSAGE.message_id or "")
            assert sorted((e.type, e.bounce or "") for e in stored) == [
                ("bounced", "hard"), ("delivered", "")]  # fmt: skip
            bounce = next(e for e in stored if e.type == "bounced")
            assert bounce.reason == "550 5.1.1 mailbox unknown"
            assert bounce.provider_message_id == op
            assert {e.address for e in await mailer.suppression.list()} == {"bob@example.org"}


async def test_azure_statuses_and_engagement() -> None:
    parser = azure().webhook()
    assert parser is not None
    from mailer.providers.http.webhook import WebhookRequest

    op = str(uuid.uuid4())
    items = [
        report(s, f"e-{s}", op)
        for s in ("Delivered", "Failed", "Suppressed", "Quarantined", "FilteredSpam", "Expanded")
    ]
    items.append(
        {
            "id": "e-click",
            "eventType": "Microsoft.Communication.EmailEngagementTrackingReportReceived",
            "eventTime": "2026-01-01T00:00:09Z",
            "data": {
                "sender": "app@example.com",
                "recipient": "bob@example.org",
                "messageId": op,
                "userActionTimeStamp": "2026-01-01T00:00:08Z",
                "engagementContext": "https://x.example/",
                "userAgent": "UA",
                "engagementType": "click",
            },
        }
    )
    items.append({"id": "e-del", "eventType": "Microsoft.EventGrid.SubscriptionDeletedEvent",
                  "eventTime": "2026-01-01T00:00:09Z", "data": {}})  # fmt: skip
    request = WebhookRequest("azure", {}, json.dumps(items).encode(), {"code": SECRET})
    await parser.verify(request)
    assert await parser.handshake(request) is None
    got = [(e.type, e.bounce) for e in await parser.parse(request)]
    assert got == [("delivered", None), ("bounced", "soft"), ("rejected", None),
                   ("rejected", None), ("rejected", None), ("unknown", None),
                   ("clicked", None)]  # fmt: skip


def test_azure_webhook_config_is_checked() -> None:
    with pytest.raises(ConfigError, match="secret"):
        AzureProvider.from_config("a", {"endpoint": "https://r.example", "access_key": KEY,
                                        "webhook": {"secret": "short"}})  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        AzureProvider.from_config(
            "a",
            {
                "endpoint": "https://r.example",
                "access_key": KEY,
                "webhook": {"secret": SECRET, "parameter": "a b"},
            },
        )
    assert SECRET not in str(caught.value)


# -- Scaleway ----------------------------------------------------------------------------

TOPIC = "arn:scw:sns:fr-par:project-0a1b2c3d-0000-4000-8000-000000000001:tem-events"
PROJECT = "0a1b2c3d-0000-4000-8000-000000000001"
CERT_URL = "https://messaging.s3.fr-par.scw.cloud/fr-par/sns/cert-0001.pem"
CONFIRM = "https://sns.mnq.fr-par.scaleway.com/?Action=ConfirmSubscription&Token=t0k"


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


class Authority:
    """A CA standing in for Scaleway's, and a signing certificate it issues."""

    def __init__(self, name: str = "Test Scaleway SNS CA") -> None:
        now = dt.datetime.now(dt.UTC)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(self.key, hashes.SHA256())
        )  # fmt: skip
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def signer(self, days: int = 30) -> Signer:
        return Signer(self, days)


class Signer:
    def __init__(self, authority: Authority, days: int) -> None:
        now = dt.datetime.now(dt.UTC)
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder().subject_name(_name("sns.mnq.fr-par.scaleway.com"))
            .issuer_name(authority.cert.subject).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=2))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(authority.key, hashes.SHA256())
        )  # fmt: skip
        self.pem = cert.public_bytes(serialization.Encoding.PEM)

    def sign(self, message: dict[str, str], version: str = "2") -> dict[str, str]:
        message = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
        if message["Type"] == "Notification":
            keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                    "Type"]  # fmt: skip
        text = "".join(f"{k}\n{message[k]}\n" for k in keys if k in message)
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303
        signature = self.key.sign(text.encode(), padding.PKCS1v15(), digest)
        return {**message, "Signature": base64.b64encode(signature).decode()}


AUTHORITY = Authority()
SIGNER = AUTHORITY.signer()


def tem_event(kind: str, event_id: str, to: str = "bob@example.org") -> dict[str, Any]:
    """Scaleway's documented webhook event payload."""
    return {
        "id": event_id, "type": kind, "organization_id": PROJECT, "project_id": PROJECT,
        "domain_id": "d0", "domain_name": "example.com", "created_at": "2026-01-01T00:00:05Z",
        "email_queued_at": "2026-01-01T00:00:01Z", "email_sent_at": "2026-01-01T00:00:04Z",
        "email_id": "e-0001", "email_from": "app@example.com", "email_to": to,
        "email_headers": [{"key": "Subject", "value": "s"},
                          {"key": "Message-Id", "value": "<scw-mid-1@example.com>"}],
        "email_response_code": 550, "email_response_message": "550 5.1.1 no such user",
        "email_try_count": 1,
    }  # fmt: skip


def notification(event: dict[str, Any], at: dt.datetime | None = None) -> dict[str, str]:
    stamp = (at or dt.datetime.now(dt.UTC)).isoformat(timespec="milliseconds")
    return {"Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": TOPIC,
            "Message": json.dumps(event), "Timestamp": stamp.replace("+00:00", "Z")}  # fmt: skip


SCW_MESSAGE = Message(
    sender="app@example.com", to=["bob@example.org"], subject="s", text="t",
    message_id="<scw1@app.example.com>",
)  # fmt: skip


def scaleway(base_url: str | None = None, **webhook: Any) -> ScalewayProvider:
    api = {"base_url": base_url} if base_url else {}
    return ScalewayProvider.from_config("scw", {
        "secret_key": "scw-secret-key", "project_id": PROJECT, **api,
        "webhook": {"topic_arns": [TOPIC], **webhook}})  # fmt: skip


def scaleway_api(request: HTTPRequest) -> Reply:
    """Scaleway's send: one ``emails`` item per recipient, Scaleway's own Message-ID."""
    return Reply(
        200,
        {
            "emails": [
                {
                    "id": "e-0001",
                    "message_id": "<scw-mid-1@example.com>",
                    "rcpt_to": "bob@example.org",
                    "status": "new",
                }
            ]
        },
    )


class Served:
    def __init__(self, mailer: Mailer, url: str, fetched: list[str]) -> None:
        self.mailer, self.url, self.fetched = mailer, url, fetched

    async def post(self, message: dict[str, str]) -> httpx.Response:
        return await post(f"{self.url}/scw", message)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:  # stands in for the downloads from Scaleway
        fetched.append(url)
        if url == trust_chain_url("fr-par"):
            return AUTHORITY.pem
        return SIGNER.pem if url.endswith(".pem") else b"<ConfirmSubscriptionResponse/>"

    async with serve(respond=scaleway_api) as api:
        store = {"store": f"sqlite:///{tmp_path / 'm.db'}"}
        mailer = Mailer([scaleway(api.base_url)], suppression=store)
        handler = WebhookHandler(mailer)
        handler.parsers["scw"].fetch = fetch  # type: ignore[attr-defined]
        async with mailer, asgi_server(asgi_app(mailer, handler=handler)) as url:
            sent = await mailer.send(SCW_MESSAGE)
            assert sent.provider_message_id == "<scw-mid-1@example.com>"
            yield Served(mailer, url, fetched)


@pytest.mark.parametrize("version", ["1", "2"])
async def test_scaleway_events_are_stored(served: Served, version: str) -> None:
    kinds = ["email_queued", "email_delivered", "email_deferred", "email_dropped",
             "email_spam", "blocklist_created"]  # fmt: skip
    for n, kind in enumerate(kinds):
        answer = await served.post(SIGNER.sign(notification(tem_event(kind, f"ev-{n}")), version))
        assert answer.status_code == 200, answer.text
    again = await served.post(SIGNER.sign(notification(tem_event("email_dropped", "ev-3"))))
    assert again.json() == {"stored": 0, "duplicates": 1}
    rows = await served.mailer.delivery_events(SCW_MESSAGE.message_id or "")
    assert sorted((e.type, e.bounce or "") for e in rows) == [
        ("accepted", ""), ("bounced", "hard"), ("deferred", ""), ("delivered", ""),
        ("rejected", "")]  # fmt: skip
    assert {e.provider_message_id for e in rows} == {"<scw-mid-1@example.com>"}
    assert {e.address for e in await served.mailer.suppression.list()} == {"bob@example.org"}
    # the CA downloaded once from the documented URL, the certificate once
    assert served.fetched == [CERT_URL, trust_chain_url("fr-par")]


async def test_scaleway_subscription_confirmed_after_it_verifies(served: Served) -> None:
    message = {"Type": "SubscriptionConfirmation", "MessageId": str(uuid.uuid4()),
               "Token": "t0k", "TopicArn": TOPIC, "Message": "You have chosen to subscribe",
               "SubscribeURL": CONFIRM,
               "Timestamp": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")}  # fmt: skip
    forged = {**SIGNER.sign(message), "SubscribeURL": CONFIRM + "&x=1"}
    assert (await served.post(forged)).status_code == 401
    assert CONFIRM not in served.fetched
    elsewhere = SIGNER.sign({**message, "SubscribeURL": "https://evil.example/?Token=t0k"})
    assert (await served.post(elsewhere)).status_code == 400
    assert all("evil" not in url for url in served.fetched)
    assert (await served.post(SIGNER.sign(message))).status_code == 200
    assert served.fetched[-1] == CONFIRM


@pytest.mark.parametrize("attack", ["tampered", "other topic", "foreign cert URL", "unsigned",
                                    "replayed", "other CA", "expired cert"])  # fmt: skip
async def test_scaleway_refused_and_nothing_stored(
    tmp_path: Path, served: Served, attack: str
) -> None:
    event = tem_event("email_dropped", "ev-x")
    message = SIGNER.sign(notification(event))
    if attack == "tampered":
        message["Message"] = message["Message"].replace("bob@", "victim@")
    elif attack == "other topic":
        message = SIGNER.sign({**notification(event), "TopicArn": TOPIC + "-x"})
    elif attack == "foreign cert URL":
        message["SigningCertURL"] = "https://messaging.s3.fr-par.scw.cloud.evil.example/c.pem"
    elif attack == "unsigned":
        del message["Signature"]
    elif attack == "replayed":
        old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=6)
        message = SIGNER.sign(notification(event, old))
    elif attack == "other CA":  # self-consistent, but not issued by Scaleway's CA
        rogue = Authority("Rogue CA").signer()
        handler = WebhookHandler(served.mailer)

        async def fetch(url: str) -> bytes:
            return AUTHORITY.pem if url == trust_chain_url("fr-par") else rogue.pem

        handler.parsers["scw"].fetch = fetch  # type: ignore[attr-defined]
        async with asgi_server(asgi_app(served.mailer, handler=handler)) as url:
            answer = await post(f"{url}/scw", rogue.sign(notification(event)))
        assert answer.status_code == 401 and "CA" in answer.text
        message = {}
    else:
        stale = AUTHORITY.signer(days=-1)
        handler = WebhookHandler(served.mailer)

        async def fetch(url: str) -> bytes:
            return AUTHORITY.pem if url == trust_chain_url("fr-par") else stale.pem

        handler.parsers["scw"].fetch = fetch  # type: ignore[attr-defined]
        async with asgi_server(asgi_app(served.mailer, handler=handler)) as url:
            answer = await post(f"{url}/scw", stale.sign(notification(event)))
        assert answer.status_code == 401 and "expired" in answer.text
        message = {}
    if message:
        assert (await served.post(message)).status_code == 401
    assert all(".evil." not in url for url in served.fetched)
    assert await served.mailer.suppression.list() == []
    assert await served.mailer.delivery_events(SCW_MESSAGE.message_id or "") == []


async def test_scaleway_trust_chain_pinned_from_a_file(tmp_path: Path) -> None:
    pinned = tmp_path / "sns-trust-chain.pem"
    pinned.write_bytes(AUTHORITY.pem)
    parser = scaleway(trust_chain=str(pinned)).webhook()
    assert parser is not None
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        return SIGNER.pem

    parser.fetch = fetch
    from mailer.providers.http.webhook import WebhookRequest

    body = json.dumps(SIGNER.sign(notification(tem_event("email_delivered", "p1")))).encode()
    request = WebhookRequest("scw", {}, body)
    await parser.verify(request)
    assert [e.type for e in await parser.parse(request)] == ["delivered"]
    assert fetched == [CERT_URL]  # the CA came from the file


def test_scaleway_webhook_config_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="topic_arns"):
        scaleway(topic_arns=["arn:aws:sns:eu-west-1:123456789012:x"])
    with pytest.raises(ConfigError, match="trust_chain"):
        scaleway(trust_chain=str(tmp_path / "missing.pem"))
