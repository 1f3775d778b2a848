"""mailer-failover: send email through several providers, failing over between them.

The public API is what ``__all__`` lists. Two more modules are public, for plugin
authors: ``mailer.providers.http`` (``HTTPProvider``, ``HTTPConfig``, ``HTTPRequest``: the
base every HTTP API adapter builds on) and ``mailer.testing`` (``ProviderConformance``,
``ScriptedProvider``, the ``outbox`` fixture). Every other module is private.
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
    TransientError,
    UnsupportedFeature,
)
from ._mailer import Event, Mailer, Route
from ._message import Address, Attachment, Envelope, Message
from ._provider import Provider, ProviderConfig
from ._result import Attempt, SendResult
from ._routing.group import Failover, Group, RoundRobin, Weighted
from ._routing.health import BreakerState, HealthConfig
from ._sync import SyncMailer

__version__ = "0.1.0"

__all__ = [
    "Address",
    "AllProvidersFailed",
    "Attachment",
    "Attempt",
    "AuthError",
    "BreakerState",
    "ConfigError",
    "DeliveryError",
    "DeliveryUncertain",
    "Envelope",
    "Event",
    "Failover",
    "Group",
    "HealthConfig",
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
    "RoundRobin",
    "Route",
    "SendResult",
    "SyncMailer",
    "TransientError",
    "UnsupportedFeature",
    "Weighted",
    "__version__",
    "commit_hooks",
]
