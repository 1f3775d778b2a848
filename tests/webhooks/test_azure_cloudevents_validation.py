"""Event Grid's validation of a subscription with the CloudEvents 1.0 schema.

Azure's documentation ("Endpoint validation with CloudEvents schema", Event Grid):
with the CloudEvents schema Event Grid does not post a SubscriptionValidationEvent; it
uses CloudEvents 1.0's abuse protection (the CloudEvents HTTP webhook spec, section 4):
an HTTP OPTIONS to the exact registered URL with ``WebHook-Request-Origin:
eventgrid.azure.net``, which the receiver consents to by answering 200 with
``WebHook-Allowed-Origin`` (and ``WebHook-Allowed-Rate``). Our receiver answered every
OPTIONS 405, so such a subscription could never be created, although the parser reads
CloudEvents posts.

Real parts: the ASGI receiver under uvicorn, the WSGI one under wsgiref, Flask's
blueprint through its test client; the Azure provider with its URL secret, and a
Postmark one (no CloudEvents sender) beside it.
"""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from mailer import Mailer, SyncMailer
from mailer.providers._azure import AzureProvider
from mailer.providers._postmark import PostmarkProvider
from mailer.webhooks import asgi_app, wsgi_app

from .conftest import asgi_server, wsgi_server

pytestmark = pytest.mark.anyio

KEY = base64.b64encode(b"azure-unit-test-secret-key-32byt").decode()
SECRET = "eg-query-secret-0123456789"
ORIGIN = {"WebHook-Request-Origin": "eventgrid.azure.net"}


def providers() -> list[object]:
    azure = AzureProvider.from_config("azure", {
        "endpoint": "https://res.communication.azure.com", "access_key": KEY,
        "webhook": {"secret": SECRET}})  # fmt: skip
    postmark = PostmarkProvider.from_config("pm", {
        "server_token": "pm-token", "webhook": {"basic_auth": "hook:pa55-w0rd"}})  # fmt: skip
    return [azure, postmark]


def consented(answer: httpx.Response, rate: str = "*") -> bool:
    return (
        answer.status_code == 200
        and answer.headers.get("webhook-allowed-origin") == "eventgrid.azure.net"
        and answer.headers.get("webhook-allowed-rate") == rate
    )


async def test_event_grids_validation_request_is_answered_with_consent(tmp_path: Path) -> None:
    mailer = Mailer(providers(), suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})
    async with mailer, asgi_server(asgi_app(mailer)) as url, httpx.AsyncClient() as client:
        ok = await client.options(f"{url}/azure?code={SECRET}", headers=ORIGIN)
        assert consented(ok), (ok.status_code, dict(ok.headers))
        asked = await client.options(
            f"{url}/azure?code={SECRET}", headers={**ORIGIN, "WebHook-Request-Rate": "120"}
        )
        assert consented(asked, rate="120")
        # the URL's secret is checked as for a post: no secret, no subscription
        refused = await client.options(f"{url}/azure?code=wrong-secret-0123456789", headers=ORIGIN)
        assert refused.status_code == 401 and "webhook-allowed-origin" not in refused.headers
        assert SECRET not in refused.text
        other = await client.options(
            f"{url}/azure?code={SECRET}", headers={"WebHook-Request-Origin": "evil.example"}
        )
        assert other.status_code == 403 and "webhook-allowed-origin" not in other.headers
        bare = await client.options(f"{url}/azure?code={SECRET}")
        assert bare.status_code == 403
        # a receiver whose ESP sends no CloudEvents validation: 405, as before
        assert (await client.options(f"{url}/pm", headers=ORIGIN)).status_code == 405
        assert (await client.options(f"{url}/nobody", headers=ORIGIN)).status_code == 405
        assert await mailer.suppression.list() == []


def test_event_grids_validation_request_through_wsgi_and_flask(tmp_path: Path) -> None:
    from flask import Flask

    from mailer.flask import Mail

    store = {"store": f"sqlite:///{tmp_path / 'm.db'}"}
    sync = SyncMailer(lambda: Mailer(providers(), suppression=store))
    with sync as mailer, wsgi_server(wsgi_app(mailer)) as url:
        assert consented(httpx.options(f"{url}/azure?code={SECRET}", headers=ORIGIN))
        assert httpx.options(f"{url}/azure", headers=ORIGIN).status_code == 401

    app = Flask(__name__)
    app.config["MAILER"] = {
        "providers": [{"type": "azure", "name": "azure", "config": {
            "endpoint": "https://res.communication.azure.com", "access_key": KEY,
            "webhook": {"secret": SECRET}}}],
        "suppression": store,
    }  # fmt: skip
    mail = Mail(app)
    app.register_blueprint(mail.webhooks_blueprint(), url_prefix="/mail/events")
    try:
        client = app.test_client()
        answer = client.options(f"/mail/events/azure?code={SECRET}", headers=ORIGIN)
        assert answer.status_code == 200
        assert answer.headers.get("WebHook-Allowed-Origin") == "eventgrid.azure.net"
        assert client.options("/mail/events/azure", headers=ORIGIN).status_code == 401
    finally:
        mail.close(app)
