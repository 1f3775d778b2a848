"""mailer-failover: send email through several providers, failing over between them.

The public API is what ``__all__`` lists; every other module is private.
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
    RecipientsRefused,
    TransientError,
)
from .message import Address, Attachment, Message
from .provider import Provider, ProviderConfig
from .result import Attempt, SendResult

__version__ = "0.1.0"

__all__ = [
    "Address",
    "AllProvidersFailed",
    "Attachment",
    "Attempt",
    "AuthError",
    "ConfigError",
    "DeliveryError",
    "DeliveryUncertain",
    "MailerError",
    "MessageError",
    "PermanentError",
    "Provider",
    "ProviderConfig",
    "RateLimited",
    "RecipientsRefused",
    "SendResult",
    "TransientError",
    "__version__",
]
