"""The unsubscribe token: who, which list, until when, signed with the config's key.

``v1.<payload>.<mac>``: the payload is base64url JSON ``{"r": recipient, "l": list,
"e": expiry (Unix seconds)}``, the MAC HMAC-SHA256 over ``v1.<payload>`` with the config's
``key``, base64url. Why this shape:

* Stateless: the endpoint needs no table of issued tokens, so any process holding the key
  can honour a click, years of mail later within ``max_age``.
* The MAC is compared in constant time, and a token is read only after it verifies, so a
  forged payload is never parsed as anything but bytes.
* The version prefix lets a later format (an encrypted payload, say) live beside this one.
* It names the recipient in the clear (base64 is not encryption): the URL only ever goes
  to that recipient, in their own mail. Rotating ``key`` invalidates every token out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .._errors import MailerError
from .._redact import register_secret

__all__ = ["Claim", "InvalidToken", "UnsubscribeConfig", "make_token", "read_token"]

_VERSION = "v1"
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


class InvalidToken(MailerError):
    """A token that is malformed, forged, tampered with or expired: nothing may change."""


class UnsubscribeConfig(BaseModel):
    """The Mailer's ``unsubscribe`` section (see docs/deliverability.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: where the endpoint is served: ``https://example.com/mail`` makes
    #: ``https://example.com/mail/u/{token}`` (https: RFC 8058 requires it; plain http is
    #: accepted for a loopback host only, for tests)
    base_url: str
    #: the HMAC key, at least 32 characters; a secret (never in repr, logs or errors)
    key: SecretStr = Field(repr=False)
    #: an address for the ``mailto:`` alternative (mail clients without one-click use it);
    #: None: the https URL only
    mailto: str | None = None
    #: how long a token is honoured, in seconds (default 90 days)
    max_age: float = Field(default=90 * 86400.0, gt=0)
    #: the list a message with ``unsubscribe=True`` names (``unsubscribe="news"`` names one)
    default_list: str = "default"

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        loopback = parts.scheme == "http" and parts.hostname in _LOOPBACK
        if parts.scheme != "https" and not loopback:
            raise ValueError("unsubscribe.base_url must be https:// (RFC 8058)")
        if not parts.hostname or parts.query or parts.fragment or parts.username:
            raise ValueError("unsubscribe.base_url is scheme://host[:port][/path], nothing else")
        return value.rstrip("/")

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 32:
            raise ValueError("unsubscribe.key must be at least 32 characters")
        register_secret(value)
        return value

    @field_validator("mailto")
    @classmethod
    def _mailto(cls, value: str | None) -> str | None:
        if value is not None and (value.count("@") != 1 or any(c in value for c in "<>, \r\n")):
            raise ValueError("unsubscribe.mailto must be one plain address")
        return value

    def url(self, token: str) -> str:
        return f"{self.base_url}/u/{token}"


@dataclass(frozen=True)
class Claim:
    """What a valid token says: this recipient leaves this list."""

    recipient: str
    list: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(config: UnsubscribeConfig, signed: str) -> str:
    key = config.key.get_secret_value().encode()
    return _b64(hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest())


def make_token(
    config: UnsubscribeConfig, recipient: str, list_name: str, now: float | None = None
) -> str:
    """A token for ``recipient`` leaving ``list_name``, valid for ``config.max_age``."""
    expires = int((time.time() if now is None else now) + config.max_age)
    body = {"r": recipient.lower(), "l": list_name, "e": expires}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    signed = f"{_VERSION}.{payload}"
    return f"{signed}.{_mac(config, signed)}"


def read_token(config: UnsubscribeConfig, token: str, now: float | None = None) -> Claim:
    """The claim of a valid token; InvalidToken (saying why, never echoing it) otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION or len(token) > 2048:
        raise InvalidToken("not an unsubscribe token")
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_mac(config, signed), parts[2]):
        raise InvalidToken("the token's signature does not match (tampered, or another key)")
    try:
        body = json.loads(_unb64(parts[1]))
        claim = Claim(str(body["r"]), str(body["l"]), int(body["e"]))
    except (ValueError, KeyError, TypeError):  # signed by us, so only a key shared
        raise InvalidToken("the token's payload is malformed") from None
    if claim.expires < (time.time() if now is None else now):
        raise InvalidToken("the token has expired")
    return claim
