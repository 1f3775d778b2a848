"""Canary secrets never surface: repr, str, exception args and chains, DEBUG logs, the
SMTP transcript, httpx error text; for every provider type, through real failures.

Each secret is a unique canary. Every provider is made to fail in the way most likely to
leak it (a refused password, a token endpoint refusing the grant, an API that echoes the
credential it was sent back in its error body, an unreachable API), all in one Mailer, so
AllProvidersFailed holds every provider's error. Then everything a user could print or
log is searched for each canary, raw and base64-encoded (AUTH PLAIN and Basic carry it so).
"""

from __future__ import annotations

import base64
import logging
import pickle
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from mailer import AllProvidersFailed, Mailer, Message
from mailer._plugins import load_provider_class
from mailer.testing import SMTPTestServer, TokenEndpoint, closed_port

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]

CANARIES = {
    "smtp_password": "CANARY-smtp-pass-91f2",
    "oauth_access": "CANARY-oauth-access-5c1e",
    "oauth_refresh": "CANARY-oauth-refresh-77aa",
    "oauth_client_secret": "CANARY-oauth-client-3d0b",
    "sendgrid": "SG.CANARY-sendgrid-0e4f",
    "mailgun": "key-CANARY-mailgun-a8c3",
    "postmark": "CANARY-postmark-6b19",
    "ses_id": "AKIACANARYSES0001",
    "ses_secret": "CANARY-ses-secret-2f7d",
    "resend": "re_CANARY-resend-4e8a",
    "brevo": "xkeysib-CANARY-brevo-19d0",
    "mailjet_key": "CANARY-mailjet-key-c41e",
    "mailjet_secret": "CANARY-mailjet-secret-85b2",
    "sparkpost": "CANARY-sparkpost-7a21",
    "mailersend": "mlsn.CANARY-mailersend-3c90",
    "mailtrap": "CANARY-mailtrap-b5e4",
    "mandrill": "md-CANARY-mandrill-e612",
    "postal": "CANARY-postal-key-3a61",
    "scaleway": "CANARY-scaleway-secret-9d27",
    "unisendergo": "CANARY-unisendergo-key-50be",
    # Azure's access key is base64 (it is decoded to sign): the canary is one
    "azure": base64.b64encode(b"CANARY-azure-access-key-e2c4").decode(),
}


def forms(secret: str) -> list[str]:
    b64 = base64.b64encode
    return [secret, b64(secret.encode()).decode(), b64(f"\0alice\0{secret}".encode()).decode(),
            b64(f"api:{secret}".encode()).decode()]  # fmt: skip


def texts_of(obj: Any, seen: set[int] | None = None) -> Iterator[str]:
    """str and repr of an exception, its args, attributes and its whole chain."""
    seen = seen if seen is not None else set()
    if obj is None or id(obj) in seen:
        return
    seen.add(id(obj))
    yield str(obj)
    yield repr(obj)
    if isinstance(obj, BaseException):
        for arg in obj.args:
            yield from texts_of(arg, seen)
        for attr in ("response", "code", "provider", "refused"):
            value = getattr(obj, attr, None)
            if value is not None:
                yield repr(value)
        for child in (
            getattr(obj, "errors", {}).values() if isinstance(obj, AllProvidersFailed) else ()
        ):
            yield from texts_of(child, seen)
        for child in getattr(obj, "exceptions", ()):
            yield from texts_of(child, seen)
        for attempt in getattr(obj, "attempts", []):
            yield repr(attempt)
        yield from texts_of(obj.__cause__, seen)
        yield from texts_of(obj.__context__, seen)


def assert_clean(text: str, where: str) -> None:
    for name, secret in CANARIES.items():
        for form in forms(secret):
            assert form not in text, f"{name} leaked into {where}"


def echo_credentials(request: httpx.Request) -> httpx.Response:
    """An API that echoes the credential it got (some do, in 401 bodies)."""
    auth = request.headers.get("authorization", "")
    if auth.startswith("Basic "):
        auth += " " + base64.b64decode(auth[6:]).decode()
    for header in ("x-postmark-server-token", "api-key", "x-server-api-key", "x-auth-token",
                   "x-api-key"):  # fmt: skip
        auth += " " + request.headers.get(header, "")
    body = {"message": f"invalid credentials: {auth}", "errors": [{"message": auth}]}
    return httpx.Response(401, json=body, headers={"WWW-Authenticate": auth[:200]})


def canary_entries(
    smtp_config: Callable[..., dict[str, Any]], token_url: str
) -> list[dict[str, Any]]:
    """One provider of every type with credentials, each configured with its canaries;
    the HTTP APIs at api.canary.test (stubbed), one of them unreachable."""
    oauth2 = {"token_url": token_url, "client_id": "cid",
              "client_secret": CANARIES["oauth_client_secret"],
              "refresh_token": CANARIES["oauth_refresh"],
              "access_token": CANARIES["oauth_access"]}  # fmt: skip
    api = "https://api.canary.test"
    entries: list[dict[str, Any]] = [
        {"type": "smtp", "name": "smtp-pass", "config": smtp_config(
            auth={"user": "alice", "password": CANARIES["smtp_password"]},
            allow_plaintext_auth=True)},
        {"type": "smtp", "name": "smtp-oauth", "config": smtp_config(
            auth={"user": "alice", "oauth2": oauth2}, allow_plaintext_auth=True)},
        {"type": "sendgrid", "config": {"api_key": CANARIES["sendgrid"], "base_url": api}},
        {"type": "mailgun", "config": {"api_key": CANARIES["mailgun"],
                                       "domain": "mg.example.com", "base_url": api}},
        {"type": "postmark", "config": {"server_token": CANARIES["postmark"],
                                        "base_url": api}},
        {"type": "ses", "config": {"region": "eu-west-1", "base_url": api,
                                   "access_key_id": CANARIES["ses_id"],
                                   "secret_access_key": CANARIES["ses_secret"]}},
        {"type": "resend", "config": {"api_key": CANARIES["resend"], "base_url": api}},
        {"type": "sparkpost", "config": {"api_key": CANARIES["sparkpost"], "base_url": api}},
        {"type": "mailersend", "config": {"api_key": CANARIES["mailersend"], "base_url": api}},
        {"type": "mailtrap", "config": {"api_token": CANARIES["mailtrap"], "base_url": api}},
        # Mandrill carries its key in the JSON body, not a header
        {"type": "mandrill", "config": {"api_key": CANARIES["mandrill"], "base_url": api}},
        {"type": "postal", "config": {"server_key": CANARIES["postal"], "base_url": api}},
        {"type": "scaleway", "config": {"secret_key": CANARIES["scaleway"], "base_url": api,
                                        "project_id": "6a7a4d0e-3c6a-4d39-8d57-2f0c4a7b9e11"}},
        {"type": "unisendergo", "config": {"api_key": CANARIES["unisendergo"],
                                           "base_url": api}},
        {"type": "azure", "config": {"connection_string":
                                     f"endpoint={api};accesskey={CANARIES['azure']}"}},
        # unreachable: httpx's own error text and chain
        {"type": "resend", "name": "resend-down", "config": {
            "api_key": CANARIES["resend"], "base_url": f"http://127.0.0.1:{closed_port()}"}},
    ]  # fmt: skip
    # the plugins of this repository, when installed (make install does)
    registered = {ep.name for ep in entry_points(group="mailer.providers")}
    if "brevo" in registered:
        entries.append({"type": "brevo", "config": {"api_key": CANARIES["brevo"],
                                                    "base_url": api}})  # fmt: skip
    if "mailjet" in registered:
        entries.append({"type": "mailjet", "config": {
            "api_key": CANARIES["mailjet_key"], "secret_key": CANARIES["mailjet_secret"],
            "base_url": api}})  # fmt: skip
    return entries


async def test_no_canary_anywhere(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="mailer")
    caplog.set_level(logging.DEBUG, logger="aiosmtplib")
    caplog.set_level(logging.DEBUG, logger="httpx")
    caplog.set_level(logging.DEBUG, logger="httpcore")
    smtp = SMTPTestServer(auth=True).start()
    token = TokenEndpoint().start()
    token.error = "invalid_grant"
    try:
        entries = canary_entries(smtp.config, token.url)
        mailer = Mailer.from_config({"providers": entries, "send_timeout": 10,
                                     "retry": {"attempts": 1}})  # fmt: skip
        for p in mailer.providers:
            assert_clean(repr(p) + str(p) + repr(p.config) + str(p.config), f"{p.name} repr")
            assert_clean(repr(p.config.model_dump()), f"{p.name} model_dump")
        assert_clean(repr(mailer), "Mailer repr")
        message = Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t")
        with respx.mock(assert_all_called=False) as router:
            router.route(host="api.canary.test").mock(side_effect=echo_credentials)
            router.route(host="127.0.0.1").pass_through()
            async with mailer:
                with pytest.raises(AllProvidersFailed) as info:
                    await mailer.send(message)
                verified = await mailer.verify()
        failure = info.value
        assert set(failure.errors) == {p.name for p in mailer.providers}
        for text in texts_of(failure):
            assert_clean(text, "AllProvidersFailed and its chain")
        # what a Celery or RQ result stores (pickle): the bytes, and the errors rebuilt
        pickled = pickle.dumps(failure)
        assert_clean(pickled.decode("latin-1"), "the pickled AllProvidersFailed")
        for text in texts_of(pickle.loads(pickled)):  # noqa: S301 (our own bytes)
            assert_clean(text, "AllProvidersFailed after pickling")
        for name, error in verified.items():
            for text in texts_of(error):
                assert_clean(text, f"verify() error of {name}")
        assert_clean("\n".join(smtp.state.commands), "the SMTP transcript (server side)")
        assert_clean(caplog.text, "logs at DEBUG")
        for record in caplog.records:
            assert_clean(str(record.args) + str(record.msg), "log record args")
            if record.exc_info and record.exc_info[1] is not None:
                for text in texts_of(record.exc_info[1]):
                    assert_clean(text, "a logged exception")
    finally:
        smtp.stop()
        token.stop()


#: provider types with no credential to leak (they never leave the process)
NO_CREDENTIALS = {"memory", "file"}
#: the test suite's own plugin (tests/fixtures): an echo and a type that fails to load
TEST_FIXTURES = "mailer-testplugin"


def test_every_provider_type_has_a_canary() -> None:
    """Every registered provider type (entry points, plugins included; not the suite's
    own fixture plugin) is either one of the canary test's providers (by class: ``smtps``
    is ``smtp``'s) or credential-free. A new type fails here until it gets a canary."""
    entries = canary_entries(lambda **options: options, "http://127.0.0.1:9/token")
    covered = {load_provider_class(entry["type"]) for entry in entries}
    types = {
        ep.name
        for ep in entry_points(group="mailer.providers")
        if ep.dist is None or ep.dist.name != TEST_FIXTURES
    }
    assert {"smtp", "resend", "memory"} <= types, types  # the entry points were read
    missing = sorted(
        name for name in types - NO_CREDENTIALS if load_provider_class(name) not in covered
    )
    assert not missing, f"provider types without a canary: {missing}"
