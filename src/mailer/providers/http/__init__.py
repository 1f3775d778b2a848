"""The shared base of the HTTP API providers (public: plugins build on it).

An adapter subclasses :class:`HTTPProvider` (its endpoint, credential, limits and error
classification) and :class:`Payload` (how a Message maps to its request), as
django-anymail's backends and payloads do. The package is split by concept:

* :mod:`.config`: :class:`HTTPConfig` and the DSN helpers;
* :mod:`.payload`: the walk over a Message and its ``set_*`` hooks, one payload a message;
* :mod:`.transport`: the httpx client and the one place httpx errors become ours;
* :mod:`.responses`: :class:`Answer`, the status mapping, ``Retry-After``;
* :mod:`.batch`: many messages in one request;
* :mod:`.provider`: :class:`HTTPProvider`, which ties them together.

The next wave's event (webhook) parser of each ESP lives beside its sender and reads the
same :class:`Answer`-style plain data; nothing here needs to change for it.
"""

from ..._message.mime import encode_header_value
from ..._redact import redact
from .batch import BatchOutcome
from .config import HTTPConfig, require
from .correlation import CORRELATION_KEY
from .payload import Payload, address_dict, addresses_text, b64, unique_recipients
from .provider import HTTPProvider
from .responses import MAX_BODY, Answer, parse_retry_after
from .transport import HTTPRequest
from .webhook import (
    BasicAuthWebhookConfig,
    BasicAuthWebhookParser,
    HmacBodyWebhookParser,
    SigningSecretWebhookConfig,
    WebhookConfig,
    WebhookMalformed,
    WebhookParser,
    WebhookRefused,
    WebhookRequest,
    check_basic_auth,
    check_hmac_sha256_hex,
    check_skew,
    event_time,
    json_body,
    nonempty_text,
    stable_event_id,
)

__all__ = [
    "CORRELATION_KEY",
    "MAX_BODY",
    "Answer",
    "BasicAuthWebhookConfig",
    "BasicAuthWebhookParser",
    "BatchOutcome",
    "HTTPConfig",
    "HTTPProvider",
    "HTTPRequest",
    "HmacBodyWebhookParser",
    "Payload",
    "SigningSecretWebhookConfig",
    "WebhookConfig",
    "WebhookMalformed",
    "WebhookParser",
    "WebhookRefused",
    "WebhookRequest",
    "address_dict",
    "addresses_text",
    "b64",
    "check_basic_auth",
    "check_hmac_sha256_hex",
    "check_skew",
    "encode_header_value",
    "event_time",
    "json_body",
    "nonempty_text",
    "parse_retry_after",
    "redact",
    "require",
    "stable_event_id",
    "unique_recipients",
]
