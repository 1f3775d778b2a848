"""Azure Communication Services Email: ``POST {endpoint}/emails:send?api-version=...``.

The endpoint is the resource's own (``https://<resource>.communication.azure.com``): from
``endpoint`` or a ``connection_string`` (``endpoint=https://...;accesskey=...``, as the
portal shows it). Every request is signed as the official SDK signs it
(:class:`HMACAuth`): HMAC-SHA256 with the base64-decoded access key over the method, the
path and query, ``x-ms-date``, the host and ``x-ms-content-sha256``. The key itself never
leaves the process, so a request captured on the way proves nothing to a replayer after
the date window.

A send is a long-running operation: 202 with ``{"id", "status": "Running"}``. We set its
``Operation-Id`` from the Message-ID (a UUID-5), so every attempt at one message names the
same operation: Azure answers 409 to a second operation with an id it knows, which
means an earlier attempt reached it (:class:`DeliveryUncertain`, never a failover that
could deliver twice). The operation id is the result's ``provider_message_id``.

Azure takes the sender address only (its display name is the one configured for that
address in the resource, so a From name is refused), To/Cc/Bcc and Reply-To objects,
custom headers, attachments and inline ones (``contentId``); no tags or metadata. It sets
its own Message-ID. Errors are ``{"error": {"code", "message"}}``: the table is in
docs/providers.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import uuid
from collections.abc import Generator
from email.utils import formatdate
from typing import Any, ClassVar
from urllib.parse import SplitResult, urlsplit

import httpx
from pydantic import SecretStr, field_validator, model_validator

from .._errors import AuthError, DeliveryError, DeliveryUncertain
from .._message import Address, Attachment, Message
from .._redact import register_secret
from ._azure_webhook import AzureWebhook, AzureWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload, require
from .http.config import url_credentials
from .http.lookup import ABSENT_AFTER, Lookup

__all__ = [
    "OPERATION_KEPT",
    "AzureConfig",
    "AzureProvider",
    "HMACAuth",
    "operation_id",
    "operation_id_of",
    "signature",
]

DEFAULT_API_VERSION = "2025-09-01"
#: the headers the signature covers, in the SDK's order
SIGNED = "x-ms-date;host;x-ms-content-sha256"
#: our Operation-Ids: UUID-5s in this namespace, so they say nothing of the Message-ID
_NAMESPACE = uuid.UUID("6f1c2b1e-3a0a-5f6e-9a53-7d1c0e5b8a21")
#: how long a 404 for an operation is taken to prove it never arrived (seconds). Azure
#: does not document how long it answers for an operation; past this a 404 may be a
#: forgotten operation, so the lookup says unknown
OPERATION_KEPT = 24 * 3600.0
#: operation statuses that mean Azure has the message and is sending or has sent it
_TAKEN = ("NotStarted", "Running", "Succeeded")
#: error codes (``error.code``) about the resource, its domain or sender, not the message
_ACCOUNT_CODES = (
    "Denied",
    "Unauthorized",
    "Forbidden",
    "DomainNotLinked",
    "InvalidSender",
    "SenderNotFound",
    "DomainNotFound",
    "EmailServiceNotProvisioned",
)


def signature(
    key: bytes, method: str, path_and_query: str, date: str, host: str, content_hash: str
) -> str:
    """The SDK's ``HMAC-SHA256`` signature (``HMACCredentialsPolicy``), base64."""
    text = f"{method.upper()}\n{path_and_query}\n{date};{host};{content_hash}"
    return base64.b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).decode()


def content_sha256(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode()


class HMACAuth(httpx.Auth):
    """Signs each request with the resource's access key, as the Azure SDK does."""

    requires_request_body = True

    def __init__(self, access_key: str) -> None:
        self._key = base64.b64decode(access_key)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        date = formatdate(usegmt=True)
        digest = content_sha256(request.content)
        path = request.url.raw_path.decode("ascii")
        host = request.headers["Host"]
        sign = signature(self._key, request.method, path, date, host, digest)
        request.headers["x-ms-date"] = date
        request.headers["x-ms-content-sha256"] = digest
        request.headers["x-ms-return-client-request-id"] = "true"
        request.headers["Authorization"] = f"HMAC-SHA256 SignedHeaders={SIGNED}&Signature={sign}"
        yield request


def operation_id(message: Message) -> str:
    """The same Operation-Id for every attempt at ``message``."""
    assert message.message_id is not None
    return operation_id_of(message.message_id)


def operation_id_of(message_id: str) -> str:
    """The Operation-Id of the message with this Message-ID (what reconcile asks about)."""
    return str(uuid.uuid5(_NAMESPACE, message_id))


def parse_connection_string(text: str) -> tuple[str, str]:
    """``endpoint=https://...;accesskey=...`` -> (endpoint, access key)."""
    parts: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name.strip().lower()] = value.strip()
    endpoint, key = parts.get("endpoint"), parts.get("accesskey")
    if not endpoint or not key:
        raise ValueError("connection_string must be endpoint=https://...;accesskey=...")
    return endpoint, key


class AzureConfig(HTTPConfig):
    """``endpoint`` and ``access_key``, or a ``connection_string`` holding both."""

    endpoint: str | None = None
    access_key: SecretStr | None = None
    connection_string: SecretStr | None = None
    api_version: str = DEFAULT_API_VERSION
    #: Event Grid's delivery reports: the secret in the webhook URL (docs/events.md)
    webhook: AzureWebhookConfig | None = None

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _checked_endpoint(value)

    @model_validator(mode="before")
    @classmethod
    def _split_connection_string(cls, data: Any) -> Any:
        """A connection string becomes endpoint and access_key (the key registered as a
        secret first, so no later error can print it)."""
        if not isinstance(data, dict) or data.get("connection_string") is None:
            return data
        if data.get("endpoint") is not None or data.get("access_key") is not None:
            raise ValueError("give connection_string, or endpoint and access_key: not both")
        text = data["connection_string"]
        text = text.get_secret_value() if isinstance(text, SecretStr) else str(text)
        endpoint, key = parse_connection_string(text)
        register_secret(key)
        return {**data, "endpoint": endpoint, "access_key": key}

    @model_validator(mode="after")
    def _credentials(self) -> AzureConfig:
        if self.endpoint is None or self.access_key is None:
            raise ValueError("needs endpoint and access_key (or connection_string)")
        try:
            base64.b64decode(self.access_key.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("access_key must be the resource's base64 access key") from None
        return self


def _checked_endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be https://<resource>.communication.azure.com")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError("endpoint must be a plain https:// URL")
    return value.rstrip("/")


class AzurePayload(Payload["AzureProvider"]):
    address_fields = ("address", "displayName")
    json_fields: ClassVar[dict[str, str]] = {"headers": "headers"}
    attachment_fields: ClassVar[dict[str, str]] = {
        "list": "attachments", "filename": "name", "content": "contentInBase64",
        "type": "contentType", "content_id": "contentId",
    }  # fmt: skip

    def set_from(self, sender: Address) -> None:
        if sender.name:
            self.unsupported(
                "a From display name (Azure uses the display name configured for the "
                "sender address in the resource)"
            )
        self.data["senderAddress"] = sender.email

    def set_subject(self, subject: str) -> None:
        self.data.setdefault("content", {})["subject"] = subject

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        self.data.setdefault("recipients", {})[kind] = self.json_addresses(addresses)

    def set_reply_to(self, reply_to: list[Address]) -> None:
        self.data["replyTo"] = self.json_addresses(reply_to)

    def set_body(self, text: str | None, html: str | None) -> None:
        content = self.data.setdefault("content", {})
        if text is not None:
            content["plainText"] = text
        if html is not None:
            content["html"] = html

    def content_id(self, attachment: Attachment) -> str:
        return attachment.content_id or ""

    def request(self) -> HTTPRequest:
        request = super().request()
        request.headers["Operation-Id"] = operation_id(self.message)
        return request


class AzureProvider(HTTPProvider[AzureConfig]):
    """Azure Communication Services Email."""

    Config: ClassVar[type[AzureConfig]] = AzureConfig
    payload_class = AzurePayload
    sends_message_id = False  # Azure sets its own Message-ID
    max_message_bytes = 10_000_000  # "10 MB" per email, attachments included (default)
    response_id_field = "id"
    webhook_parser = AzureWebhook

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``azure://ACCESS_KEY@RESOURCE.communication.azure.com`` (the key percent-encoded:
        it is base64 and may hold ``/``, ``+`` and ``=``)."""
        user, password = url_credentials(url)
        key = password or user
        require(
            bool(key) and bool(url.hostname) and url.hostname != "default",
            "azure URL needs the access key and the resource host: "
            "azure://ACCESS_KEY@RESOURCE.communication.azure.com",
        )
        port = f":{url.port}" if url.port else ""
        return {**params, "endpoint": f"https://{url.hostname}{port}", "access_key": key}

    @property
    def base_url(self) -> str:
        assert self.config.endpoint is not None  # the config refused it otherwise
        return self.config.base_url or self.config.endpoint

    def send_target(self) -> str:
        return f"/emails:send?api-version={self.config.api_version}"

    def verify_request(self) -> HTTPRequest:
        """The status of an operation that does not exist: 404 with a valid signature,
        401 without; nothing is sent."""
        return HTTPRequest(
            "GET", f"/emails/operations/{uuid.UUID(int=0)}?api-version={self.config.api_version}"
        )

    def verify_accepts(self, answer: Answer) -> bool:
        return answer.is_success or (answer.status == 404 and isinstance(answer.get("error"), dict))

    def auth(self) -> httpx.Auth:
        assert self.config.access_key is not None
        return HMACAuth(self.config.access_key.get_secret_value())

    def error_text(self, answer: Answer) -> str:
        error = answer.get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"{error.get('code') or 'error'}: {error['message']}"
        return super().error_text(answer)

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        error = answer.get("error")
        code = str(error.get("code") or "") if isinstance(error, dict) else ""
        if answer.status == 409 and message is not None:
            return DeliveryUncertain(
                f"Azure HTTP 409 (an operation with this Operation-Id exists: an earlier "
                f"attempt reached Azure and may deliver): {text}"
            )
        if answer.status in (400, 403, 404) and any(
            c.lower() in code.lower() for c in _ACCOUNT_CODES
        ):
            return AuthError(f"Azure {code} (the resource, domain or sender): {text}")
        return None

    async def lookup(self, message_id: str, *, age: float) -> Lookup:
        """Azure answers exactly: the Operation-Id is the one every attempt at this
        Message-ID used, so ``GET /emails/operations/{id}`` finds the send if it arrived.
        NotStarted, Running or Succeeded: sent. Failed or Canceled: unknown (Azure will
        not send it, and refuses this Operation-Id again; a person decides). 404: absent,
        once the row is ABSENT_AFTER old (no answer in flight) and younger than
        OPERATION_KEPT. A wrong ``absent`` still cannot duplicate while Azure remembers
        the id: the re-send names the same operation and gets 409 (DeliveryUncertain)."""
        op = operation_id_of(message_id)
        target = f"/emails/operations/{op}?api-version={self.config.api_version}"
        answer = await self.request(HTTPRequest("GET", target), commit=False)
        status = answer.get("status")
        if answer.is_success and status in _TAKEN:
            return Lookup("sent", f"Azure's operation is {status}", op)
        if answer.is_success:
            return Lookup("unknown", f"Azure's operation is {status}: it will not be sent", op)
        if answer.status == 404 and isinstance(answer.get("error"), dict):
            if ABSENT_AFTER <= age < OPERATION_KEPT:
                return Lookup("absent", "Azure has no operation with this Operation-Id")
            return Lookup("unknown", "Azure has no such operation (too recent or too old to tell)")
        return Lookup("unknown", f"Azure's operation status answered HTTP {answer.status}")
