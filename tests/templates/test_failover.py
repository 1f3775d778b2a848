"""Failover from a provider with a stored template to SMTP keeps the content.

A local fake of SendGrid's API (the kit's scripted HTTP server) first refuses with a 503
(the Mailer fails over), then the SMTP fault server receives the message: its subject,
text and HTML are the same template rendered locally with the same data. The request
SendGrid got names the dynamic template and carries the data, with no body.
"""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest

from mailer import Mailer, Message
from mailer._errors import MessageError
from mailer.providers import SendGridProvider, SMTPProvider
from mailer.testing import HTTPRequest, HTTPTestServer, Reply, SMTPTestServer

pytestmark = pytest.mark.anyio

DATA = {"name": "Ada <Lovelace>", "plan": "Pro & more"}


def _message(**extra: object) -> Message:
    return Message(**{
        "from": "app@example.com", "to": "ada@example.org", "template": "welcome",
        "template_data": DATA, **extra,
    })  # fmt: skip


def _parts(raw: bytes) -> dict[str, str]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    out = {"subject": str(parsed["Subject"])}
    for part in parsed.walk():
        if part.get_content_type() in ("text/plain", "text/html"):
            # line ends as written (CRLF on the wire, LF in the template)
            out[part.get_content_type()] = part.get_content().replace("\r\n", "\n").rstrip("\n")
    return out


async def test_failover_from_sendgrid_template_to_smtp_renders_the_same_template(
    template_dir: Path,
) -> None:
    def sendgrid(request: HTTPRequest) -> Reply:
        return Reply(503, {"errors": [{"message": "down"}]})

    with SMTPTestServer(auth=False) as smtp_server:
        async with HTTPTestServer(respond=sendgrid) as api:
            primary = SendGridProvider.from_config("sg", {
                "api_key": "SG.key", "base_url": api.base_url,
                "templates": {"welcome": "d-0123456789abcdef"},
            })  # fmt: skip
            backup = SMTPProvider.from_config("smtp", smtp_server.config())
            async with Mailer([primary, backup], templates={"dir": template_dir}) as mailer:
                result = await mailer.send(_message())
            assert result.provider == "smtp"
            assert api.log and {r.path for r in api.log} == {"/v3/mail/send"}  # (+ a retry)
            body = api.log[0].json()
            assert body["template_id"] == "d-0123456789abcdef"
            assert body["personalizations"][0]["dynamic_template_data"] == DATA
            assert "content" not in body and "subject" not in body
        [envelope] = smtp_server.state.messages
    parts = _parts(envelope.original_content)
    assert parts["subject"] == "Welcome, Ada <Lovelace>!"
    assert parts["text/plain"] == "Hi Ada <Lovelace>,\nyour plan is Pro & more."
    # HTML autoescaped: the data cannot inject markup
    assert parts["text/html"] == (
        "<p>Hi Ada &lt;Lovelace&gt;, your plan is <b>Pro &amp; more</b>.</p>"
    )
    # the same Message-ID on the attempt SendGrid saw and the mail SMTP delivered
    assert email.message_from_bytes(envelope.original_content)["Message-ID"] == (result.message_id)
    assert body["headers"]["Message-ID"] == result.message_id


async def test_a_missing_variable_fails_before_any_io(template_dir: Path) -> None:
    with SMTPTestServer(auth=False) as smtp_server:
        async with HTTPTestServer() as api:
            primary = SendGridProvider.from_config("sg", {
                "api_key": "SG.key", "base_url": api.base_url,
                "templates": {"welcome": "d-0123456789abcdef"},
            })  # fmt: skip
            backup = SMTPProvider.from_config("smtp", smtp_server.config())
            async with Mailer([primary, backup], templates={"dir": template_dir}) as mailer:
                with pytest.raises(MessageError, match=r"'plan' is undefined"):
                    await mailer.send(_message(template_data={"name": "Ada"}))
            assert api.connections == 0 and api.log == []
        assert smtp_server.state.connections == 0 and smtp_server.state.messages == []


async def test_without_local_templates_every_provider_needs_a_mapping() -> None:
    with SMTPTestServer(auth=False) as smtp_server:
        async with HTTPTestServer() as api:
            primary = SendGridProvider.from_config("sg", {
                "api_key": "SG.key", "base_url": api.base_url,
                "templates": {"welcome": "d-0123456789abcdef"},
            })  # fmt: skip
            backup = SMTPProvider.from_config("smtp", smtp_server.config())
            async with Mailer([primary, backup]) as mailer:
                with pytest.raises(MessageError, match=r"provider\(s\) 'smtp' have no stored"):
                    await mailer.send(_message())
            assert api.connections == 0
        assert smtp_server.state.connections == 0


async def test_enqueue_checks_the_template_before_storing(
    template_dir: Path, tmp_path: Path
) -> None:
    with SMTPTestServer(auth=False) as smtp_server:
        smtp = SMTPProvider.from_config("smtp", smtp_server.config())
        outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
        async with Mailer([smtp], templates={"dir": template_dir}, outbox=outbox) as mailer:
            with pytest.raises(MessageError, match=r"'plan' is undefined"):
                await mailer.enqueue(_message(template_data={"name": "Ada"}))
            message_id = await mailer.enqueue(_message())
            assert await mailer.drain(timeout=10) == {"sent": 1}
        [envelope] = smtp_server.state.messages
    parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
    assert parsed["Message-ID"] == message_id
    assert parsed["Subject"] == "Welcome, Ada <Lovelace>!"
