"""Config blocks pasted alone, and settings-table spellings (issue 21, items 4-8).

A Nodemailer transport object or NexoMailer's ``config`` block given as the whole config
sends as one SMTP provider; MailHog's empty credentials send without AUTH; a TLS mode, a
login at the wrong level, and a millisecond timeout that was meant in seconds are refused
with our spelling. Sends go to a real aiosmtpd server on 127.0.0.1 (the kit's).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer import ConfigError, Message, SyncMailer
from mailer.testing import SMTPTestServer

PASSWORD = "S3cret-pasted-71c0"


@pytest.fixture
def server() -> Iterator[SMTPTestServer]:
    """Plaintext, AUTH offered (any login), as a loopback relay or MailHog."""
    with SMTPTestServer(None, users=None) as started:
        yield started


def _send(config: Any) -> str:
    with SyncMailer(config) as mailer:
        result = mailer.send(
            Message(sender="app@example.com", to=["ann@example.org"], subject="s", text="t")
        )
    return result.provider


def _loopback(server: SMTPTestServer) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "secure": False}


def test_a_nodemailer_transport_object_alone_is_one_smtp_provider(
    server: SMTPTestServer, tmp_path: Path
) -> None:
    transport = {**_loopback(server), "allow_plaintext_auth": True,
                 "auth": {"user": "ann", "pass": PASSWORD}}  # fmt: skip
    assert _send(transport) == "smtp"
    # the Mailer's own keys stay the Mailer's, the rest is the provider's, in a file too
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps({**transport, "retry": {"attempts": 1}}))
    assert _send(path) == "smtp"
    assert server.state.verbs().count("AUTH") == 2
    assert len(server.state.messages) == 2


def test_nexomailer_config_block_alone(server: SMTPTestServer) -> None:
    block = {
        **_loopback(server), "pool": True, "maxConnections": 10, "connectionTimeout": 5000,
        "socketTimeout": 10000, "name": "my-custom-app",
    }  # fmt: skip
    assert _send({"config": block}) == "smtp"  # as it sits on the page: `config: {...}`
    assert _send({"type": "smtp", "priority": 2, "config": block}) == "smtp"  # one entry
    assert server.state.verbs().count("MAIL") == 2
    assert "EHLO my-custom-app" in server.state.commands


def test_mailhog_empty_credentials_mean_no_auth(server: SMTPTestServer) -> None:
    assert _send({**_loopback(server), "auth": {"user": "", "pass": ""}}) == "smtp"
    assert "AUTH" not in server.state.verbs() and len(server.state.messages) == 1
    with pytest.raises(ConfigError, match="user must be non-empty"):
        SyncMailer({**_loopback(server), "auth": {"user": "", "pass": PASSWORD}})


@pytest.mark.parametrize(
    ("key", "where"),
    [("Username", "auth.user"), ("Password", "auth.password"), ("username", "auth.user"),
     ("password", "auth.password"), ("from_email", "defaults.from"),
     ("from_name", "defaults.from, as 'Name <address>'")],
)  # fmt: skip
def test_settings_table_keys_say_where_they_belong(key: str, where: str) -> None:
    for config in (
        {"host": "127.0.0.1", key: PASSWORD},
        {"providers": [{"type": "smtp", "config": {"host": "127.0.0.1", key: PASSWORD}}]},
    ):
        with pytest.raises(ConfigError) as info:
            SyncMailer(config)
        assert f"{key}: unknown option; it belongs at {where}" in str(info.value)
        assert PASSWORD not in str(info.value)
    with pytest.raises(ConfigError, match=f"{key}: unknown option; it belongs at"):
        SyncMailer({"providers": ["memory://"], key: "x"})


@pytest.mark.parametrize(
    ("mode", "ours"),
    [("SSL", "secure: true"), ("ssl/tls", "secure: true"), ("TLS", "secure: false"),
     ("STARTTLS", "secure: false"), ("none", "ignore_tls: true")],
)  # fmt: skip
def test_a_tls_mode_gets_our_spelling(mode: str, ours: str) -> None:
    with pytest.raises(ConfigError) as info:
        SyncMailer({"host": "127.0.0.1", "tls": mode})
    assert "tls takes certificate options" in str(info.value) and ours in str(info.value)
    assert "Input should be" not in str(info.value)


@pytest.mark.parametrize("key", ["connectionTimeout", "greetingTimeout", "socketTimeout"])
def test_a_camelcase_timeout_under_100_ms_is_refused_naming_the_unit(
    key: str, server: SMTPTestServer
) -> None:
    with pytest.raises(ConfigError) as info:
        SyncMailer({"host": "127.0.0.1", key: 5})
    assert f"{key} = 5 is in milliseconds (0.005 s)" in str(info.value)
    assert f"write {key} = 5000 for 5 seconds" in str(info.value)
    # 100 ms and up are taken as written (a fast loopback relay)
    assert _send({**_loopback(server), key: 2000}) == "smtp"
