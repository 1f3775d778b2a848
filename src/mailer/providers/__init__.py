"""The built-in providers, for building one in Python rather than from a config file::

    from mailer.providers import SMTPProvider
    primary = SMTPProvider.from_config("primary", {"host": "smtp.example.com"})

This is their one public home (their modules are private). Each is imported on first use
(a module ``__getattr__``, PEP 562), so ``import mailer`` still imports neither aiosmtplib
nor httpx. A config file names the same classes by type (``type = "smtp"``), through the
``mailer.providers`` entry-point group, which plugins join.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._azure import AzureConfig, AzureProvider
    from ._file import FileProvider
    from ._mailersend import MailerSendConfig, MailerSendProvider
    from ._mailgun import MailgunConfig, MailgunProvider
    from ._mailtrap import MailtrapConfig, MailtrapProvider
    from ._mandrill import MandrillConfig, MandrillProvider
    from ._memory import MemoryProvider
    from ._postal import PostalConfig, PostalProvider
    from ._postmark import PostmarkConfig, PostmarkProvider
    from ._resend import ResendConfig, ResendProvider
    from ._scaleway import ScalewayConfig, ScalewayProvider
    from ._sendgrid import SendGridConfig, SendGridProvider
    from ._ses import SESConfig, SESProvider
    from ._smtp import SMTPConfig, SMTPProvider
    from ._sparkpost import SparkPostConfig, SparkPostProvider
    from ._unisender_go import UnisenderGoConfig, UnisenderGoProvider

# name -> the private module it lives in
_HOMES = {
    "AzureConfig": "._azure",
    "AzureProvider": "._azure",
    "FileProvider": "._file",
    "MailgunConfig": "._mailgun",
    "MailgunProvider": "._mailgun",
    "MailerSendConfig": "._mailersend",
    "MailerSendProvider": "._mailersend",
    "MailtrapConfig": "._mailtrap",
    "MailtrapProvider": "._mailtrap",
    "MandrillConfig": "._mandrill",
    "MandrillProvider": "._mandrill",
    "SparkPostConfig": "._sparkpost",
    "SparkPostProvider": "._sparkpost",
    "MemoryProvider": "._memory",
    "PostalConfig": "._postal",
    "PostalProvider": "._postal",
    "PostmarkConfig": "._postmark",
    "PostmarkProvider": "._postmark",
    "ResendConfig": "._resend",
    "ResendProvider": "._resend",
    "SESConfig": "._ses",
    "SESProvider": "._ses",
    "SMTPConfig": "._smtp",
    "SMTPProvider": "._smtp",
    "ScalewayConfig": "._scaleway",
    "ScalewayProvider": "._scaleway",
    "SendGridConfig": "._sendgrid",
    "SendGridProvider": "._sendgrid",
    "UnisenderGoConfig": "._unisender_go",
    "UnisenderGoProvider": "._unisender_go",
}

__all__ = [
    "AzureConfig",
    "AzureProvider",
    "FileProvider",
    "MailerSendConfig",
    "MailerSendProvider",
    "MailgunConfig",
    "MailgunProvider",
    "MailtrapConfig",
    "MailtrapProvider",
    "MandrillConfig",
    "MandrillProvider",
    "MemoryProvider",
    "PostalConfig",
    "PostalProvider",
    "PostmarkConfig",
    "PostmarkProvider",
    "ResendConfig",
    "ResendProvider",
    "SESConfig",
    "SESProvider",
    "SMTPConfig",
    "SMTPProvider",
    "ScalewayConfig",
    "ScalewayProvider",
    "SendGridConfig",
    "SendGridProvider",
    "SparkPostConfig",
    "SparkPostProvider",
    "UnisenderGoConfig",
    "UnisenderGoProvider",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value  # the next look-up is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
