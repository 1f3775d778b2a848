"""Amazon SES v2: ``POST /v2/email/outbound-emails``, signed with SigV4 by httpx-auth.

A message with attachments or custom headers goes as ``Content.Raw``: the MIME bytes the
Message rendered, so SES sends exactly what SMTP would (and Bcc recipients, who are not
in the bytes, go in ``Destination``). Otherwise ``Content.Simple``. Metadata becomes SES
``EmailTags`` (name/value pairs SES publishes with its events); plain tags have no SES
equivalent. SES replaces the Message-ID with its own; its id is returned as
``provider_message_id``.

Credentials come from the config, else from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``), read once when
the provider is built.
"""

from __future__ import annotations

import os
import re
from email.utils import formataddr
from typing import Any, ClassVar
from urllib.parse import SplitResult

import httpx
from httpx_auth import AWS4Auth
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from .._dkim import DKIMOptions, signature
from ..errors import AuthError, DeliveryError, RateLimited
from ..message import Address, Message
from ..result import SendResult
from .http import HTTPConfig, HTTPProvider, HTTPRequest, b64, unique_recipients

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
_THROTTLED = frozenset({"TooManyRequestsException", "LimitExceededException", "Throttling",
                        "ThrottlingException"})  # fmt: skip


class SESConfig(HTTPConfig):
    region: str
    #: DKIM-sign every message (sent as Content.Raw; a message's own ``dkim`` wins)
    dkim: DKIMOptions | None = Field(default=None, repr=False)
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    configuration_set: str | None = None

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
            for key, env in (("access_key_id", "AWS_ACCESS_KEY_ID"),
                             ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
                             ("session_token", "AWS_SESSION_TOKEN")):  # fmt: skip
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


class SESProvider(HTTPProvider):
    """Amazon SES's v2 API."""

    Config: ClassVar[type[SESConfig]] = SESConfig
    config: SESConfig
    raw_mime_dkim = True
    verify_path = "/v2/email/account"

    def __init__(self, name: str, config: BaseModel | None = None) -> None:
        super().__init__(name, config)
        self._signer: AWS4Auth | None = None

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
            self._signer = AWS4Auth(
                access_id=cfg.access_key_id.get_secret_value(),
                secret_key=cfg.secret_access_key.get_secret_value(),
                region=cfg.region,
                service="ses",
                security_token=token,
            )
        return self._signer

    def build_request(self, message: Message) -> HTTPRequest:
        assert message.sender is not None
        if message.smtputf8:
            # SES documents 7-bit ASCII local parts only (no SMTPUTF8)
            self.unsupported("addresses with a non-ASCII local part (SMTPUTF8)")
        to, cc, bcc = unique_recipients(message)
        destination: dict[str, list[str]] = {}
        for key, group in (("ToAddresses", to), ("CcAddresses", cc), ("BccAddresses", bcc)):
            if group:
                destination[key] = [_addr(a) for a in group]
        body: dict[str, Any] = {
            "FromEmailAddress": _addr(message.sender),
            "Destination": destination,
        }
        if message.reply_to:
            body["ReplyToAddresses"] = [_addr(a) for a in message.reply_to]
        dkim = self.dkim_options(message)
        if dkim is not None:  # Raw, or the signature would not be sent: made in _send
            body["Content"] = {"Raw": {"Data": b64(signature(message, dkim) + message.as_bytes())}}
        elif message.attachments or message.headers:
            body["Content"] = {"Raw": {"Data": b64(message.as_bytes())}}
        else:
            simple_body: dict[str, Any] = {}
            if message.text is not None or message.html is None:
                simple_body["Text"] = _text(message.text or "")
            if message.html is not None:
                simple_body["Html"] = _text(message.html)
            body["Content"] = {"Simple": {"Subject": _text(message.subject),
                                          "Body": simple_body}}  # fmt: skip
        if message.tags:
            self.unsupported("tags (SES has only name/value EmailTags: use metadata)")
        email_tags = []
        for key, value in message.metadata.items():
            if _TAG.match(key) and _TAG.match(value):
                email_tags.append({"Name": key, "Value": value})
            else:
                self.unsupported(f"metadata {key!r} (SES EmailTags allow only A-Z a-z 0-9 _ -)")
        if email_tags:
            body["EmailTags"] = email_tags
        if self.config.configuration_set:
            body["ConfigurationSetName"] = self.config.configuration_set
        return HTTPRequest("POST", "/v2/email/outbound-emails", json=body)

    def parse_success(self, message: Message, response: httpx.Response) -> SendResult:
        data = self.json_body(response)
        msg_id = data.get("MessageId") if isinstance(data, dict) else None
        return self.result(message, response, provider_message_id=msg_id)

    def classify_error(
        self, response: httpx.Response, text: str, message: Message | None
    ) -> DeliveryError | None:
        # "MessageRejected:http://internal.amazon.com/coral/..." -> "MessageRejected"
        kind = response.headers.get("x-amzn-ErrorType", "").split(":", 1)[0]
        if not kind:
            data = self.json_body(response)
            if isinstance(data, dict):
                kind = str(data.get("__type", "")).rpartition("#")[2]
        if not kind:
            return None
        where = f"SES {kind}"
        if kind in _THROTTLED:
            return RateLimited(f"{where}: {text}", retry_after=self.retry_after(response))
        if kind in _ACCOUNT_ERRORS:
            return AuthError(f"{where}: {text}")
        return None
