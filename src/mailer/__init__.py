"""mailer-failover: send email through several providers, failing over between them.

The public API is what ``__all__`` lists. Two more modules are public, for plugin
authors: ``mailer.providers.http`` (``HTTPProvider``, ``HTTPConfig``, ``HTTPRequest``: the
base every HTTP API adapter builds on) and ``mailer.testing`` (``ProviderConformance``,
``ScriptedProvider``, the ``outbox`` fixture). Every other module is private.
"""

from .errors import (
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
from .health import BreakerState, HealthConfig
from .mailer import Event, Mailer, Route
from .message import Address, Attachment, Envelope, Message
from .provider import Provider, ProviderConfig
from .result import Attempt, SendResult
from .routing.attempt import commit_hooks
from .routing.group import Failover, Group, RoundRobin, Weighted
from .sync import SyncMailer

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
