"""Amazon SES v2: ``POST /v2/email/outbound-emails``, signed with SigV4 by httpx-auth.

A message with attachments or custom headers goes as ``Content.Raw``: the MIME bytes the
Message rendered, so SES sends exactly what SMTP would (and Bcc recipients, who are not
in the bytes, go in ``Destination``); so does a large message (a body or attachment of
1 MiB or more), whose base64 is streamed inside the JSON with its length known
(providers/http/body.py) and its SigV4 hash made before the request, chunk by chunk.
Otherwise ``Content.Simple``. Metadata becomes SES
``EmailTags`` (name/value pairs SES publishes with its events); plain tags have no SES
equivalent. SES replaces the Message-ID with its own; its id is returned as
``provider_message_id``.

Credentials come from the config, else from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), read once when
the provider is built.
"""

from __future__ import annotations

import datetime
import hmac
import json
import os
import re
from collections.abc import AsyncIterator, Generator, Iterator
from email.utils import formataddr
from typing import Any, ClassVar
from urllib.parse import SplitResult

import httpx
from httpx_auth import AWS4Auth
from httpx_auth._aws import _signing_key, _string_to_sign, canonical_and_signed_headers
from pydantic import Field, SecretStr, field_validator, model_validator

from .._errors import AuthError, DeliveryError, RateLimited
from .._message import Address, Attachment, Message
from .._message.dkim import DKIMOptions, signature
from .._message.mime import Rendering
from . import _ses_records as ses_records
from ._ses_webhook import SESWebhook, SESWebhookConfig
from .http import Answer, HTTPConfig, HTTPProvider, HTTPRequest, Payload, b64
from .http.body import StreamedBody, around, base64_chunks, base64_size, placeholder
from .http.correlation import tag_safe
from .http.suppressions import Listed

__all__ = ["SESConfig", "SESProvider"]

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")

#: SES error types that mean the account cannot send now: another provider can
_ACCOUNT_ERRORS = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # the configuration set does not exist
        "AccessDeniedException",
    }
)
_NOT_VERIFIED = re.compile(r"not verified", re.I)
_DAILY_QUOTA = re.compile(r"daily message quota exceeded", re.I)
#: seconds a daily-quota refusal rests SES: the quota is a rolling 24 hours, so capacity
#: comes back gradually; one probe an hour finds it
QUOTA_REST = 3600.0
_THROTTLED = frozenset(
    {"TooManyRequestsException", "LimitExceededException", "Throttling", "ThrottlingException"}
)


class SESConfig(HTTPConfig):
    region: str
    #: DKIM-sign every message (sent as Content.Raw; a message's own ``dkim`` wins)
    dkim: DKIMOptions | None = Field(default=None, repr=False)
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    configuration_set: str | None = None
    #: the SNS topics SES publishes events to (docs/events.md)
    webhook: SESWebhookConfig | None = None

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.match(value):
            raise ValueError("region must be an AWS region name such as eu-west-1")
        return value

    @model_validator(mode="before")
    @classmethod
    def _from_environment(cls, data: Any) -> Any:
        """Fill missing keys from the AWS environment, as every AWS SDK does."""
        if isinstance(data, dict):
            data = dict(data)
            for key, env in (
                ("access_key_id", "AWS_ACCESS_KEY_ID"),
                ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                ("session_token", "AWS_SESSION_TOKEN"),
            ):
                if data.get(key) is None and os.environ.get(env):
                    data[key] = os.environ[env]
        return data

    @model_validator(mode="after")
    def _need_keys(self) -> SESConfig:
        if self.access_key_id is None or self.secret_access_key is None:
            raise ValueError(
                "access_key_id and secret_access_key are required "
                "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the environment)"
            )
        return self


def _addr(address: Address) -> str:
    """SES wants RFC 2047 encoded-words for non-ASCII display names."""
    return formataddr((address.name or "", address.email), charset="utf-8")


def _text(data: str) -> dict[str, str]:
    return {"Data": data, "Charset": "UTF-8"}


class SESPayload(Payload["SESProvider"]):
    signs_dkim = True  # Raw carries the signature made over these very bytes
    #: headers, attachments or a DKIM signature: the message goes as Raw MIME, which carries
    #: them all (RFC 2047-encoded by the renderer); Bcc recipients stay in Destination only
    raw = False
    #: a stored template (``Content.Template``), and the headers it carries itself
    template: dict[str, Any] | None = None
    template_headers: list[dict[str, str]] | None = None
    #: SES v2 Template.TemplateData: "Maximum length of 262144"
    max_template_data_chars: ClassVar[int] = 262_144

    def set_from(self, sender: Address) -> None:
        self.data["FromEmailAddress"] = _addr(sender)

    def set_subject(self, subject: str) -> None:
        self.data["Content"] = {"Simple": {"Subject": _text(subject), "Body": {}}}

    def add_recipients(self, kind: str, addresses: list[Address]) -> None:
        key = f"{kind.capitalize()}Addresses"  # ToAddresses, CcAddresses, BccAddresses
        self.data.setdefault("Destination", {})[key] = [_addr(a) for a in addresses]

    def set_reply_to(self, reply_to: list[Address]) -> None:
        self.data["ReplyToAddresses"] = [_addr(a) for a in reply_to]

    def body_in_mime(self) -> bool:
        return isinstance(self.message.render(), Rendering)

    def set_body(self, text: str | None, html: str | None) -> None:
        if isinstance(self.message.render(), Rendering):
            # a large text or HTML part: as Raw, streamed, rather than a JSON string
            # (which httpx would encode whole, then hold beside the message)
            self.raw = True
            return
        body = self.data["Content"]["Simple"]["Body"]
        if text is not None:
            body["Text"] = _text(text)
        if html is not None:
            body["Html"] = _text(html)

    def check_template_data(self, template_id: str, data: dict[str, Any]) -> None:
        size = len(json.dumps(data))
        if size > self.max_template_data_chars:
            self.refuse(
                f"takes TemplateData up to {self.max_template_data_chars} characters, and "
                f"this message's is {size}"
            )

    def set_template(self, template_id: str, data: dict[str, Any]) -> None:
        self.template = {"TemplateName": template_id, "TemplateData": json.dumps(data)}

    def set_headers(self, headers: dict[str, str]) -> None:
        if self.template is not None:  # Template carries headers itself: no Raw needed
            self.template_headers = [{"Name": k, "Value": v} for k, v in headers.items()]
            return
        self.raw = True

    def add_attachment(self, attachment: Attachment) -> None:
        if self.template is not None:
            self.unsupported("attachments with a stored SES template")
        self.raw = True

    add_inline = add_attachment

    def set_dkim(self, options: DKIMOptions) -> None:
        if self.template is not None:
            self.unsupported(
                "our own DKIM signature with a stored SES template (SES signs with Easy DKIM)"
            )
            return
        self.raw = True
        self.dkim = options

    def set_tags(self, tags: list[str]) -> None:
        self.unsupported("tags (SES has only name/value EmailTags: use metadata)")

    def set_metadata(self, metadata: dict[str, str]) -> None:
        for key, value in metadata.items():
            if _TAG.match(key) and _TAG.match(value):
                self.data.setdefault("EmailTags", []).append({"Name": key, "Value": value})
            else:
                self.unsupported(f"metadata {key!r} (SES EmailTags allow only A-Z a-z 0-9 _ -)")

    def correlation_value(self, message_id: str) -> str:
        return tag_safe(message_id)  # tag values allow only A-Z a-z 0-9 _ -

    def request(self) -> HTTPRequest:
        self.data.setdefault("Destination", {})
        streamed: tuple[str, Rendering, bytes] | None = None
        if self.template is not None:
            if self.template_headers:
                self.template["Headers"] = self.template_headers
            self.data["Content"] = {"Template": self.template}
        elif self.raw:
            # made off the loop by presign: read back here
            signed = signature(self.message, self.dkim) if self.dkim is not None else b""
            rendered = self.message.render()
            if isinstance(rendered, Rendering):  # a large body: streamed, never joined
                mark = placeholder()
                streamed = mark, rendered, signed
                self.data["Content"] = {"Raw": {"Data": mark}}
            else:
                self.data["Content"] = {"Raw": {"Data": b64(signed + rendered)}}
        if self.provider.config.configuration_set:
            self.data["ConfigurationSetName"] = self.provider.config.configuration_set
        request = super().request()
        if streamed is not None:
            request.body = _raw_body(request, *streamed)
            request.json = None
            request.digest_header = "x-amz-content-sha256"  # SigV4 signs the body's hash
        return request


def _raw_body(request: HTTPRequest, mark: str, rendered: Rendering, signed: bytes) -> StreamedBody:
    """The JSON body with ``Content.Raw.Data`` streamed: httpx's JSON for the request,
    split where the data goes, around the base64 of the signature and the rendering."""
    head, tail = around(httpx.Request("POST", "https://ses.invalid", json=request.json), mark)

    def raw() -> Iterator[bytes]:
        if signed:
            yield signed
        yield from rendered.chunks()

    size = base64_size(len(signed) + rendered.size)
    return StreamedBody(head, lambda: base64_chunks(raw()), size, tail, "application/json")


class _SigV4(AWS4Auth):
    """httpx-auth's SigV4, which also signs a streamed body without reading it.

    AWS4Auth reads the whole body to hash it (``requires_request_body``), which would
    hold a streamed 50 MiB message in memory. A streamed request arrives with its hash
    already in ``x-amz-content-sha256`` (made by the transport, chunk by chunk);
    it is signed with that hash by httpx-auth's own canonicalization and key
    derivation, the steps of ``AWS4Auth.auth_flow`` after its hashing line. Any other
    request (its body in memory) goes through ``AWS4Auth.auth_flow`` unchanged.
    """

    requires_request_body = False  # a body in memory is read in auth_flow; no await

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "x-amz-content-sha256" not in request.headers:
            yield from super().auth_flow(request)
            return
        date = datetime.datetime.now(datetime.UTC)
        request.headers["x-amz-date"] = date.strftime("%Y%m%dT%H%M%SZ")
        if self.security_token:
            request.headers["x-amz-security-token"] = self.security_token
        canonical_headers, signed_headers = canonical_and_signed_headers(
            request.headers, self.include_headers
        )
        canonical_request = self._canonical_request(request, canonical_headers, signed_headers)
        scope = f"{date.strftime('%Y%m%d')}/{self.region}/{self.service}/aws4_request"
        string_to_sign = _string_to_sign(request, canonical_request, scope)
        key = _signing_key(self.secret_key, self.region, self.service, date.strftime("%Y%m%d"))
        signed = hmac.new(key, string_to_sign.encode("utf-8"), "sha256").hexdigest()
        request.headers["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self.access_id}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signed}"
        )
        yield request


class SESProvider(HTTPProvider[SESConfig]):
    """Amazon SES's v2 API."""

    Config: ClassVar[type[SESConfig]] = SESConfig
    payload_class = SESPayload
    webhook_parser = SESWebhook
    verify_path = "/v2/email/account"
    send_path = "/v2/email/outbound-emails"
    max_message_bytes = 40_000_000  # SES v2: 40 MB a message, attachments encoded
    response_id_field = "MessageId"
    requires_to = False  # Destination may hold Bcc addresses only
    sends_message_id = False  # SES sets its own Message-ID
    smtputf8 = False  # SES documents 7-bit ASCII local parts only
    #: the SigV4 signer, made on first use
    _signer: _SigV4 | None = None

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``ses://ACCESS_KEY_ID:SECRET_ACCESS_KEY@default?region=eu-west-1``.

        Without user info the keys come from the AWS environment variables.
        """
        access, secret = cls.url_credentials(url)
        out: dict[str, Any] = {**params, **cls.url_base(url)}
        if access:
            out["access_key_id"] = access
        if secret:
            out["secret_access_key"] = secret
        return out

    @property
    def base_url(self) -> str:
        return self.config.base_url or f"https://email.{self.config.region}.amazonaws.com"

    def auth(self) -> httpx.Auth:
        if self._signer is None:
            cfg = self.config
            assert cfg.access_key_id is not None
            assert cfg.secret_access_key is not None
            token = cfg.session_token.get_secret_value() if cfg.session_token else None
            self._signer = _SigV4(
                access_id=cfg.access_key_id.get_secret_value(),
                secret_key=cfg.secret_access_key.get_secret_value(),
                region=cfg.region,
                service="ses",
                security_token=token,
            )
        return self._signer

    def classify_error(
        self, answer: Answer, text: str, message: Message | None
    ) -> DeliveryError | None:
        # "MessageRejected:http://internal.amazon.com/coral/..." -> "MessageRejected"
        kind = answer.headers.get("x-amzn-ErrorType", "").split(":", 1)[0]
        if not kind and isinstance(answer.data, dict):
            kind = str(answer.data.get("__type", "")).rpartition("#")[2]
        if not kind:
            return None
        where = f"SES {kind}"
        if _DAILY_QUOTA.search(text):
            rest = max(self.retry_after(answer) or 0.0, QUOTA_REST)
            return RateLimited(
                f"{where} (daily quota, resting {rest / 60:.0f} min): {text}", retry_after=rest
            )
        if kind in _THROTTLED:
            return RateLimited(f"{where}: {text}", retry_after=self.retry_after(answer))
        if kind in _ACCOUNT_ERRORS:
            return AuthError(f"{where}: {text}")
        if kind == "MessageRejected" and _NOT_VERIFIED.search(text):
            # the sender identity (or, in the sandbox, a recipient) is not verified in
            # this account and region: another provider can send the same message
            return AuthError(f"{where} (identity not verified): {text}")
        return None

    def suppressions(self) -> AsyncIterator[list[Listed]]:
        """SES's own suppression list (:mod:`mailer.providers._ses_records`)."""
        return ses_records.suppressions(self)
