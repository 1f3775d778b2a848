"""A private CA and a server certificate (trustme), for the kit's TLS servers.

A test that verifies TLS properly needs a CA the client trusts and a certificate for a
name it asks for; trustme makes both in memory. The CA is written to a file because that
is how a provider is configured (``tls.ca_file``), and a second CA that signed nothing
is at hand for the "unknown CA" case.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._deps import require

__all__ = ["TLS_NAME", "Certs", "make_certs"]

#: the only name in the default server certificate (so an IP host needs tls.servername)
TLS_NAME = "mail.test.example"

SNICallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]


@dataclass
class Certs:
    """A private CA and a server certificate for the names given to :func:`make_certs`."""

    ca: Any  # trustme.CA
    ca_file: Path
    server: Any  # trustme.LeafCert
    other_ca_file: Path  # a CA that signed nothing we serve: "unknown CA"

    def server_context(self, on_sni: SNICallback | None = None) -> ssl.SSLContext:
        """A server-side context with the certificate; ``on_sni`` sees each SNI name."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.server.configure_cert(ctx)
        if on_sni is not None:
            ctx.sni_callback = on_sni  # type: ignore[assignment]
        return ctx


def make_certs(directory: Path, names: tuple[str, ...] = (TLS_NAME,)) -> Certs:
    """A private CA in ``directory`` and a server certificate carrying ``names``."""
    trustme = require("trustme")
    ca = trustme.CA()
    ca_file = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other = directory / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    return Certs(ca=ca, ca_file=ca_file, server=ca.issue_cert(*names), other_ca_file=other)
