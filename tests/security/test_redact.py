"""One redactor (mailer._redact): every former home of secret scrubbing now redacts the
same way, and a connection URL given where a config file was expected does not leak."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from mailer import ConfigError, Mailer, Message
from mailer._log import get_logger
from mailer._outbox.config import OutboxConfig
from mailer._proxy_url import parse_proxy_url
from mailer._redact import (
    MASK,
    MIN_LENGTH,
    redact,
    redact_url,
    register_credentials,
    register_secret,
)
from mailer._routing.health import HealthConfig
from mailer.providers._sendgrid import SendGridProvider
from mailer.providers._smtp.config import OAuth2Options
from mailer.providers._smtp.oauth import TokenSource
from mailer.providers.http import Answer

SECRET = "S3cret-redact-canary-41d9"
B64 = base64.b64encode(SECRET.encode()).decode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# -- text: each home masks a registered secret and its base64 exactly as redact() does --


def _log_home(text: str) -> str:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    register_secret(SECRET)  # as the Mailer does for every provider's config
    logger = get_logger("mailer.test_redact")
    handler = Keep()
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("%s", text)
    finally:
        logger.removeHandler(handler)
    return records[0].getMessage()


def _http_home(text: str) -> str:
    provider = SendGridProvider.from_config("sg", {"api_key": SECRET})
    error = provider.error_for(Answer(400, {"message": text}, text))
    assert error.response is not None
    assert str(error) == f"[sg] HTTP 400: {error.response}"  # the error text and the body alike
    return error.response


def _oauth_home(text: str) -> str:
    source = TokenSource(OAuth2Options(access_token=SECRET))
    return source._scrub(text)


TEXT_HOMES: dict[str, Callable[[str], str]] = {
    "log filter": _log_home,
    "HTTP error text": _http_home,
    "OAuth token endpoint": _oauth_home,
}


@pytest.mark.parametrize("home", sorted(TEXT_HOMES))
def test_every_text_home_redacts_as_redact(home: str) -> None:
    text = f"echo: {SECRET} and Basic {B64} end"
    TEXT_HOMES[home]("register through the home first")  # each home registers its secrets
    shown = TEXT_HOMES[home](text)
    assert shown == redact(text) == f"echo: {MASK} and Basic {MASK} end"


# -- URLs: each home shows where a URL points, never who or with what -----------------


URL_HOMES: dict[str, Callable[[str], str]] = {
    "outbox config repr": lambda url: repr(OutboxConfig(url=url)).split("url='")[1].split("'")[0],
    "health config repr": lambda url: (
        repr(HealthConfig(store=url)).split("store='")[1].split("'")[0]
    ),
    "proxy shown": lambda url: parse_proxy_url(url, ("socks5",)).shown,
}

URLS = {
    "outbox config repr": "postgresql://app:Pg-pass-7731@db.internal:5432/mail",
    "health config repr": "redis://:Redis-pass-1f0c@cache.internal:6379/0",
    "proxy shown": "socks5://user:Proxy-pass-9e2a@proxy.example:1080",
}


@pytest.mark.parametrize("home", sorted(URL_HOMES))
def test_every_url_home_redacts_as_redact_url(home: str) -> None:
    url = URLS[home]
    shown = URL_HOMES[home](url)
    assert shown == redact_url(url)
    assert "***@" in shown
    assert "pass" not in shown and "user" not in shown and "app" not in shown


def test_redact_url_masks_secret_query_parameters_and_keeps_the_rest() -> None:
    url = "https://api.example.test/v1?api_key=k-123456&token=t-abcdef&password=pw&region=eu"
    shown = redact_url(url)
    assert "k-123456" not in shown and "t-abcdef" not in shown and "pw&" not in shown
    assert "region=eu" in shown and shown.startswith("https://api.example.test/v1?")
    assert redact_url("https://host.example/path") == "https://host.example/path"
    assert redact_url("http://h:notaport/") == "<invalid URL>"


def test_short_strings_are_never_registered() -> None:
    register_credentials("u", "a")
    assert len("a") < MIN_LENGTH
    assert redact("a banana at a party") == "a banana at a party"


def test_sasl_plain_and_basic_forms_of_a_pair_are_redacted() -> None:
    register_credentials("alice", "Pair-secret-55aa")
    plain = _b64("\0alice\0Pair-secret-55aa")
    basic = _b64("alice:Pair-secret-55aa")
    assert redact(f"AUTH PLAIN {plain}") == f"AUTH PLAIN {MASK}"
    assert redact(f"Authorization: Basic {basic}") == f"Authorization: Basic {MASK}"


def test_a_basic_auth_header_echoed_by_an_api_is_redacted() -> None:
    from mailer.providers._mailgun import MailgunProvider

    provider = MailgunProvider.from_config(
        "mg", {"api_key": "key-basic-echo-0b1c", "domain": "mg.example.com"}
    )
    header = httpx.BasicAuth("api", "key-basic-echo-0b1c")._auth_header
    error = provider.error_for(Answer(400, {"message": f"you sent {header}"}))
    assert "key-basic-echo" not in str(error)
    assert header.split(" ", 1)[1] not in str(error)


# -- a connection URL where a config file was expected: a one-provider config ----------


@pytest.mark.parametrize("source", ["smtp://user:S3cret-dsn-8c1d@127.0.0.1:587",
                                    Path("smtp://user:S3cret-dsn-8c1d@127.0.0.1:587")])  # fmt: skip
def test_a_provider_url_given_as_config_is_one_provider(source: str | Path) -> None:
    """Issue 21, item 1 (tests/integrations/test_config_url.py walks every entry point)."""
    mailer = Mailer.from_config(source)
    (provider,) = mailer.providers
    assert "S3cret-dsn-8c1d" not in repr(provider) and "127.0.0.1:587" in repr(provider)


def test_a_missing_config_file_is_still_named(tmp_path: Path) -> None:
    missing = tmp_path / "mailer.toml"
    with pytest.raises(ConfigError, match=r"cannot read config file .*mailer\.toml"):
        Mailer.from_config(missing)
    # a drive letter is not a URL scheme
    with pytest.raises(ConfigError, match=r"cannot read config file C:/nope/mailer\.toml"):
        Mailer.from_config("C:/nope/mailer.toml")


def test_redaction_reaches_a_sent_message_error() -> None:
    """A registered secret in a server's words never reaches the caller's error."""
    provider = SendGridProvider.from_config("sg", {"api_key": SECRET})
    message = Message(sender="a@example.com", to=["b@example.org"], subject="s", text="t")
    error = provider.error_for(Answer(401, {"message": f"bad key {SECRET}"}), message)
    assert SECRET not in str(error) and SECRET not in (error.response or "")
