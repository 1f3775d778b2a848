"""mailer-failover: send email through several providers, failing over between them.

The public API is what ``__all__`` lists, and the public modules are the ones
``PUBLIC_MODULES`` names, here and nowhere else:

* ``mailer``: this API;
* ``mailer.providers``: the built-in provider classes, to build one in Python;
* ``mailer.providers.http``: ``HTTPProvider``, ``HTTPConfig``, ``HTTPRequest``, the base
  every HTTP API adapter (a plugin) builds on;
* ``mailer.testing``: the test kit (``ProviderConformance``, ``ScriptedProvider``, the
  ``outbox`` fixture, local SMTP and HTTP servers with faults);
* ``mailer.bounces``: ``parse``, SMTP bounces (RFC 3464) and complaints (RFC 5965) as events;
* ``mailer.django``, ``mailer.flask``, ``mailer.otel``: the integrations.

Every other module is private (its name, or a package above it, starts with ``_``), and
the documentation imports only public ones (tests/docs checks both).
"""

from ._attempt import commit_hooks
from ._errors import (
    AllProvidersFailed,
    AuthError,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MailerError,
    MessageError,
    PermanentError,
    RateLimited,
    RecipientsDeferred,
    RecipientsRefused,
    RecipientsSuppressed,
    TransientError,
    UnsupportedFeature,
)
from ._events import DeliveryEvent, IngestReport, SuppressionEntry
from ._mailer import Event, Mailer, Route
from ._message import Address, Attachment, Envelope, Message
from ._provider import Provider, ProviderConfig
from ._result import Attempt, SendResult
from ._routing.group import Failover, Group, RoundRobin, Weighted
from ._routing.health import BreakerState, HealthConfig
from ._sync import SyncMailer

__version__ = "0.1.0"

#: every module a user may import; anything else is private and may change in any release
PUBLIC_MODULES = (
    "mailer",
    "mailer.providers",
    "mailer.providers.http",
    "mailer.testing",
    "mailer.bounces",
    "mailer.django",
    "mailer.flask",
    "mailer.otel",
)

__all__ = [
    "PUBLIC_MODULES",
    "Address",
    "AllProvidersFailed",
    "Attachment",
    "Attempt",
    "AuthError",
    "BreakerState",
    "ConfigError",
    "DeliveryError",
    "DeliveryEvent",
    "DeliveryUncertain",
    "Envelope",
    "Event",
    "Failover",
    "Group",
    "HealthConfig",
    "IngestReport",
    "Mailer",
    "MailerError",
    "Message",
    "MessageError",
    "PermanentError",
    "Provider",
    "ProviderConfig",
    "RateLimited",
    "RecipientsDeferred",
    "RecipientsRefused",
    "RecipientsSuppressed",
    "RoundRobin",
    "Route",
    "SendResult",
    "SuppressionEntry",
    "SyncMailer",
    "TransientError",
    "UnsupportedFeature",
    "Weighted",
    "__version__",
    "commit_hooks",
]
