"""Mailjet provider for mailer-failover: Send API v3.1, ``POST /v3.1/send``.

Installed on its own (``pip install mailer-mailjet``) and found by the Mailer through the
``mailer.providers`` entry point, the way any third-party provider is.

Mailjet answers per message (``Messages[].Status``) and per recipient (the ``To``, ``Cc``
and ``Bcc`` lists of a successful message). We send one Mailjet message per Message, so:

* status "success": sent; an envelope recipient Mailjet did not list is put in
  ``SendResult.rejected`` (a partial success: the others must not be sent again);
* status "error" whose errors all concern recipient fields (``ErrorRelatedTo``
  ``To[0].Email`` ...): :class:`~mailer.RecipientsRefused` naming them;
* any other error: the HTTP status mapping of the shared HTTP base.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from typing import Any, ClassVar
from urllib.parse import SplitResult

import httpx
from pydantic import SecretStr

from mailer.errors import DeliveryError, PermanentError, RecipientsRefused
from mailer.message import Address, Message
from mailer.providers.http import HTTPConfig, HTTPProvider, HTTPRequest, b64, unique_recipients
from mailer.result import SendResult

__all__ = ["MailjetConfig", "MailjetProvider"]
#: one version source: mailer-failover's (see this package's pyproject)
__version__ = importlib.metadata.version("mailer-mailjet")

_RELATED = re.compile(r"^(To|Cc|Bcc)\[(\d+)\]")


class MailjetConfig(HTTPConfig):
    api_key: SecretStr
    secret_key: SecretStr
    sandbox: bool = False


def _addr(address: Address) -> dict[str, str]:
    out = {"Email": address.email}
    if address.name:
        out["Name"] = address.name
    return out


class MailjetProvider(HTTPProvider):
    """Mailjet's Send API v3.1 (Basic auth with the API key and secret key)."""

    Config: ClassVar[type[MailjetConfig]] = MailjetConfig
    config: MailjetConfig
    default_base_url = "https://api.mailjet.com"
    verify_path = "/v3/REST/apikey"

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``mailjet://API_KEY:SECRET_KEY@default``."""
        key, secret = cls.url_credentials(url)
        out: dict[str, Any] = {**params, **cls.url_base(url)}
        if key:
            out["api_key"] = key
        if secret:
            out["secret_key"] = secret
        return out

    def auth(self) -> httpx.Auth:
        return httpx.BasicAuth(
            self.config.api_key.get_secret_value(), self.config.secret_key.get_secret_value()
        )

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        to, cc, bcc = unique_recipients(message)
        msg: dict[str, Any] = {"From": _addr(message.sender), "Subject": message.subject}
        for key, group in (("To", to), ("Cc", cc), ("Bcc", bcc)):
            if group:
                msg[key] = [_addr(a) for a in group]
        if message.reply_to:
            if len(message.reply_to) > 1:
                self.unsupported("more than one reply-to address")
            msg["ReplyTo"] = _addr(message.reply_to[0])
        if message.text is not None or message.html is None:
            msg["TextPart"] = message.text or ""
        if message.html is not None:
            msg["HTMLPart"] = message.html
        if message.headers:
            msg["Headers"] = dict(message.headers)
        attachments, inlined = [], []
        for att in message.attachments:
            item = {"ContentType": att.content_type, "Filename": att.filename,
                    "Base64Content": b64(att.data())}  # fmt: skip
            if att.inline:
                item["ContentID"] = att.content_id
                inlined.append(item)
            else:
                attachments.append(item)
        if attachments:
            msg["Attachments"] = attachments
        if inlined:
            msg["InlinedAttachments"] = inlined
        if message.tags:
            if len(message.tags) > 1:
                self.unsupported("more than one tag (Mailjet has one CustomCampaign)")
            msg["CustomCampaign"] = message.tags[0]
        if message.metadata:
            # returned verbatim in Mailjet's event webhooks
            msg["EventPayload"] = json.dumps(message.metadata, separators=(",", ":"))
        msg["CustomID"] = message.message_id
        body: dict[str, Any] = {"Messages": [msg]}
        if self.config.sandbox:
            body["SandboxMode"] = True
        return HTTPRequest("POST", "/v3.1/send", json=body)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        data = self.json_body(response)
        messages = data.get("Messages") if isinstance(data, dict) else None
        if not isinstance(messages, list) or not messages or not isinstance(messages[0], dict):
            # a 2xx is an acceptance even when its body cannot be read
            return self.result(message, response)
        first = messages[0]
        if first.get("Status") != "success":
            raise self.message_error(first, response, message)
        listed: dict[str, str | None] = {}
        for key in ("To", "Cc", "Bcc"):
            for item in first.get(key) or []:
                if isinstance(item, dict) and "Email" in item:
                    uuid = item.get("MessageUUID") or item.get("MessageID")
                    listed[str(item["Email"]).lower()] = str(uuid) if uuid else None
        rejected = {}
        if listed:
            rejected = {
                r: "not in Mailjet's list of accepted recipients"
                for r in message.envelope_recipients
                if r.lower() not in listed
            }
        first_id = next((v for v in listed.values() if v), None)
        return self.result(message, response, provider_message_id=first_id, rejected=rejected)

    def classify_error(
        self, response: httpx.Response, text: str, message: Message | None
    ) -> DeliveryError | None:
        data = self.json_body(response)
        messages = data.get("Messages") if isinstance(data, dict) else None
        if response.status_code in (400, 422) and isinstance(messages, list) and messages:
            first = messages[0]
            if isinstance(first, dict) and first.get("Status") == "error":
                return self.message_error(first, response, message)
        return None

    def error_text(self, response: httpx.Response) -> str:
        data = self.json_body(response)
        messages = data.get("Messages") if isinstance(data, dict) else None
        if isinstance(messages, list):
            texts = [
                str(err.get("ErrorMessage", ""))
                for m in messages
                if isinstance(m, dict)
                for err in m.get("Errors") or []
                if isinstance(err, dict)
            ]
            if any(texts):
                return "; ".join(t for t in texts if t)
        return super().error_text(response)

    def message_error(
        self, item: dict[str, Any], response: httpx.Response, message: Message | None
    ) -> DeliveryError:
        """A Mailjet per-message error: refused recipients, or a refused message."""
        errors = [e for e in item.get("Errors") or [] if isinstance(e, dict)]
        text = self.scrub("; ".join(str(e.get("ErrorMessage", "")) for e in errors)) or "error"
        refused: dict[str, str] = {}
        recipient_errors = 0
        for err in errors:
            related = [str(r) for r in err.get("ErrorRelatedTo") or []]
            hits = [m for m in (_RELATED.match(r) for r in related) if m]
            if hits and len(hits) == len(related):
                recipient_errors += 1
                for hit in hits:
                    addr = self._recipient_at(message, hit.group(1), int(hit.group(2)))
                    if addr is not None:
                        refused[addr] = self.scrub(str(err.get("ErrorMessage", "")))
        kw: dict[str, Any] = {"code": response.status_code, "response": self.body(response)}
        if errors and recipient_errors == len(errors) and refused:
            return RecipientsRefused(f"Mailjet refused recipients: {text}", refused=refused, **kw)
        return PermanentError(f"Mailjet refused the message: {text}", **kw)

    @staticmethod
    def _recipient_at(message: Message | None, field: str, index: int) -> str | None:
        if message is None:
            return None
        to, cc, bcc = unique_recipients(message)
        group = {"To": to, "Cc": cc, "Bcc": bcc}[field]
        return group[index].email if 0 <= index < len(group) else None
