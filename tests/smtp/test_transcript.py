"""``debug: true``: the SMTP transcript at DEBUG, with AUTH data and the body kept out."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from mailer import Message
from mailer._errors import AuthError
from mailer.providers._smtp import SMTPProvider
from mailer.testing import USERS, SMTPTestServer, TokenEndpoint

pytestmark = pytest.mark.anyio

LOGGER = "mailer.providers.smtp.transcript"
BODY = "the body: quarterly figures, not for any log"


def message() -> Message:
    return Message(sender="app@example.com", to=["u@example.org"], subject="s", text=BODY)


def transcript(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage().split("] ", 1)[1] for r in caplog.records if r.name == LOGGER]


def secrets_absent(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    """No secret in any record: in clear, or base64-encoded as AUTH sends it."""
    everything = caplog.text
    for secret in secrets:
        assert secret not in everything
        for encoded in (
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"\0alice\0{secret}".encode()).decode(),
            base64.b64encode(f"user=alice\1auth=Bearer {secret}\1\1".encode()).decode(),
        ):
            assert encoded not in everything
    assert BODY not in everything


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN"])
async def test_full_transcript_with_password_auth(
    starttls_server: SMTPTestServer, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    auth = {"user": "alice", "password": USERS["alice"], "method": method}
    config = starttls_server.config(auth=auth, debug=True)
    await SMTPProvider.from_config("p", config).send(message())
    lines = transcript(caplog)
    assert lines[0].startswith("-- connected to 127.0.0.1:")
    assert lines[1].startswith("S: 220 ")
    assert "C: EHLO client.test" in lines
    assert "C: STARTTLS" in lines
    assert any(line.startswith("-- TLS started: TLSv1.") for line in lines)
    # the user name goes as the initial response, for both mechanisms
    auth_at = lines.index(f"C: AUTH {method} <redacted>")
    if method == "LOGIN":  # the password answers a 334 "Password:" challenge
        assert lines[auth_at + 1 : auth_at + 3] == [
            "S: 334 UGFzc3dvcmQA",  # aiosmtpd's "Password" challenge
            "C: <redacted>",
        ]
    assert any(line.startswith("S: 235 ") for line in lines[auth_at:])
    assert any(line.startswith("C: MAIL FROM:<app@example.com>") for line in lines)
    assert "C: RCPT TO:<u@example.org>" in lines
    assert "C: DATA" in lines
    assert any(line.startswith("S: 354") for line in lines)
    payload = next(line for line in lines if line.startswith("C: <message, "))
    assert payload.endswith(" bytes, not logged>")
    assert lines.index(payload) > lines.index("C: DATA")
    assert any(line.startswith("S: 250 ") for line in lines[lines.index(payload) :])
    secrets_absent(caplog, USERS["alice"])


async def test_xoauth2_tokens_are_redacted_through_a_refresh(
    starttls_server: SMTPTestServer,
    token_endpoint: TokenEndpoint,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The refused token, the 334 error challenge, the empty answer, the fresh token."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    starttls_server.state.valid_tokens.add("fresh-token")
    oauth2 = {
        "access_token": "stale-tok-SECRET",
        "token_url": token_endpoint.url,
        "client_id": "cid",
        "client_secret": "cs-SECRET",
        "refresh_token": "rt-SECRET",
    }
    config = starttls_server.config(auth={"user": "alice", "oauth2": oauth2}, debug=True)
    await SMTPProvider.from_config("p", config).send(message())
    lines = transcript(caplog)
    first = lines.index("C: AUTH XOAUTH2 <redacted>")
    assert lines[first + 1].startswith("S: 334 ")  # the error challenge (no secret in it)
    assert lines[first + 2] == "C: <redacted>"  # the empty answer to it
    assert lines[first + 3].startswith("S: 535 ")
    second = lines.index("C: AUTH XOAUTH2 <redacted>", first + 1)
    assert lines[second + 1].startswith("S: 235 ")
    assert any(line.startswith("C: MAIL FROM:<app@example.com>") for line in lines)
    secrets_absent(caplog, "stale-tok-SECRET", "fresh-token", "cs-SECRET", "rt-SECRET")


async def test_a_refused_password_is_not_logged_either(
    starttls_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    config = starttls_server.config(auth={"user": "alice", "password": "n0pe-SECRET"}, debug=True)
    with pytest.raises(AuthError):
        await SMTPProvider.from_config("p", config).send(message())
    lines = transcript(caplog)
    assert "C: AUTH PLAIN <redacted>" in lines
    assert any(line.startswith("S: 535 ") for line in lines)
    secrets_absent(caplog, "n0pe-SECRET")


async def test_pipelined_groups_and_pooled_connections(
    smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Each command of a pipelined group is its own line; connections are numbered."""
    server = smtp_server(tls="starttls", pipelining=True)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    config = server.config(debug=True, pool=True, max_connections=2)
    async with SMTPProvider.from_config("p", config) as provider:
        for _ in range(2):
            await provider.send(message())
    lines = transcript(caplog)
    assert sum(line.startswith("C: MAIL FROM:<app@example.com>") for line in lines) == 2
    assert lines.count("C: DATA") == 2
    prefixes = {r.getMessage().split("] ", 1)[0] for r in caplog.records if r.name == LOGGER}
    assert all(p.startswith(f"[127.0.0.1:{server.port} #") for p in prefixes)
    assert BODY not in caplog.text


async def test_no_transcript_without_debug(
    starttls_server: SMTPTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="mailer")
    await SMTPProvider.from_config("p", starttls_server.config()).send(message())
    assert transcript(caplog) == []


def test_nodemailer_debug_and_logger_options() -> None:
    config = SMTPProvider.from_config("p", {"debug": True, "logger": True}).config
    assert config.debug is True
    from mailer import ConfigError

    with pytest.raises(ConfigError) as info:
        SMTPProvider.from_config("p", {"logger": {"info": "x"}})
    assert "logger takes true or false here" in str(info.value)


async def test_a_pipelined_groups_replies_are_all_in_the_transcript(
    smtp_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """MAIL, RCPT and DATA leave in one write and their replies come back together: the
    ones already read when the transaction asks (taken without a wait) are logged too."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    server = smtp_server(pipelining=True)
    to = ["u@example.org", "v@example.org"]
    msg = Message(sender="app@example.com", to=to, subject="s", text=BODY)
    await SMTPProvider.from_config("p", server.config(debug=True)).send(msg)
    lines = transcript(caplog)
    data_at = lines.index("C: DATA")
    replies = [line[3:6] for line in lines[data_at:] if line.startswith("S: ")]
    assert replies[:4] == ["250", "250", "250", "354"]  # MAIL, RCPT x2, DATA
    assert replies[4] == "250"  # the message's verdict
    assert len(server.state.messages) == 1
