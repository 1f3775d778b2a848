"""One ``ssl.SSLContext`` per provider, built once at construction.

Building a context per connection (what aiosmtplib does with ``cert_bundle=``) re-reads
the CA bundle every time and makes each connection several times slower; a bad
``ca_file`` would also surface mid-send instead of at build time, as a ConfigError.
"""

from __future__ import annotations

import ssl

from ..._errors import ConfigError
from .config import TLSOptions

__all__ = ["build_context"]


def build_context(options: TLSOptions) -> ssl.SSLContext:
    """The client context for both STARTTLS and implicit TLS."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if options.min_version == "TLSv1.3" else ssl.TLSVersion.TLSv1_2
    )
    if options.ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(options.ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls.ca_file {str(options.ca_file)!r} is not a readable PEM CA bundle: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None
    if options.cert_file is not None:
        try:
            context.load_cert_chain(
                str(options.cert_file),
                str(options.key_file) if options.key_file is not None else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"tls.cert_file/key_file cannot be loaded: {getattr(exc, 'strerror', None) or exc}"
            ) from None
    if not options.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
