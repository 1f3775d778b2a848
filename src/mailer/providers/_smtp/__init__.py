"""SMTP provider on aiosmtplib: TLS modes, SNI, PLAIN/LOGIN/XOAUTH2, a connection pool.

Registered as ``smtp`` and ``smtps`` in the ``mailer.providers`` entry-point group.
"""

from .config import AuthOptions, OAuth2Options, SMTPConfig, TLSOptions
from .provider import SMTPProvider

__all__ = ["AuthOptions", "OAuth2Options", "SMTPConfig", "SMTPProvider", "TLSOptions"]
