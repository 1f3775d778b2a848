"""The built-in HTTP adapters pass the same conformance case offered to plugin authors."""

from __future__ import annotations

from typing import Any, ClassVar

import httpx

from mailer import Attachment, Message
from mailer.providers.mailgun import MailgunProvider
from mailer.providers.postmark import PostmarkProvider
from mailer.providers.resend import ResendProvider
from mailer.providers.sendgrid import SendGridProvider
from mailer.providers.ses import SESProvider
from mailer.testing import ProviderConformance


def _tagged(*tags: str) -> Message:
    return Message(sender="s@example.com", to=["to@example.org"], subject="x", text="t",
                   tags=list(tags))  # fmt: skip


class TestSendGridConformance(ProviderConformance):
    provider_class = SendGridProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "SG.conformance-secret"}
    secrets = ("SG.conformance-secret",)
    endpoint = ("POST", "https://api.sendgrid.com/v3/mail/send")
    entry_point = "sendgrid"
    expected_provider_message_id = "sg-id-1"

    def success_response(self) -> httpx.Response:
        return httpx.Response(202, headers={"X-Message-Id": "sg-id-1"})

    def unsupported_message(self) -> Message:
        return _tagged(*(f"t{i}" for i in range(11)))


class TestMailgunConformance(ProviderConformance):
    provider_class = MailgunProvider
    config: ClassVar[dict[str, Any]] = {
        "api_key": "key-conformance-secret",
        "domain": "mg.example.com",
    }
    secrets = ("key-conformance-secret",)
    endpoint = ("POST", "https://api.mailgun.net/v3/mg.example.com/messages")
    entry_point = "mailgun"
    expected_provider_message_id = "<20240101.1@mg.example.com>"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"id": "<20240101.1@mg.example.com>",
                                         "message": "Queued. Thank you."})  # fmt: skip

    def unsupported_message(self) -> Message:
        return _tagged("a", "b", "c", "d")


class TestPostmarkConformance(ProviderConformance):
    provider_class = PostmarkProvider
    config: ClassVar[dict[str, Any]] = {"server_token": "pm-conformance-secret"}
    secrets = ("pm-conformance-secret",)
    endpoint = ("POST", "https://api.postmarkapp.com/email")
    entry_point = "postmark"
    expected_provider_message_id = "b7bc2f4a-e38e-4336-af7d-e6c392c2f817"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={
            "To": "to@example.org", "SubmittedAt": "2024-01-01T00:00:00Z",
            "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817", "ErrorCode": 0,
            "Message": "OK"})  # fmt: skip

    def unsupported_message(self) -> Message:
        return _tagged("one", "two")


class TestSESConformance(ProviderConformance):
    provider_class = SESProvider
    config: ClassVar[dict[str, Any]] = {"region": "eu-west-1", "access_key_id": "AKIDCONFORMANCE",
              "secret_access_key": "ses-conformance-secret"}  # fmt: skip
    secrets = ("ses-conformance-secret",)
    endpoint = ("POST", "https://email.eu-west-1.amazonaws.com/v2/email/outbound-emails")
    entry_point = "ses"
    expected_provider_message_id = "0102018c-ses-id"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"MessageId": "0102018c-ses-id"})

    def unsupported_message(self) -> Message:
        return _tagged("plain-tag")


class TestResendConformance(ProviderConformance):
    provider_class = ResendProvider
    config: ClassVar[dict[str, Any]] = {"api_key": "re_conformance_secret"}
    secrets = ("re_conformance_secret",)
    endpoint = ("POST", "https://api.resend.com/emails")
    entry_point = "resend"
    expected_provider_message_id = "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"

    def success_response(self) -> httpx.Response:
        return httpx.Response(200, json={"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"})

    def unsupported_message(self) -> Message:
        return Message(
            sender="s@example.com", to=["to@example.org"], subject="x", text="t",
            metadata={"has space": "v"}, attachments=[Attachment(content=b"x", filename="a.txt")],
        )  # fmt: skip
