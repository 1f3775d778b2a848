"""An RSA key for DKIM signing in tests, with the DNS record that publishes it.

Tests, benchmarks and the SMTP peers' checks each sign with a 2048-bit RSA key and need
its public half as a ``k=rsa`` TXT record for a verifier's DNS look-up. Generating one
costs 50-300 ms of CPU (a prime search, so the time varies), which several test modules
paid per module or per test; no test needs a key nobody else has seen, only a valid one,
so ``dkim_key(n)`` makes the n-th key of the process once and hands out the same one
after that. Two keys that must differ (a zone that publishes the wrong one) are
``dkim_key(0)`` and ``dkim_key(1)``.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache
from typing import Any

from ._deps import require


@dataclass(frozen=True)
class DKIMKey:
    """One RSA private key in both PEM forms the ``dkim.private_key`` option takes, and
    the TXT record that publishes its public half (``selector._domainkey.domain``)."""

    pem: str  #: PKCS#1 ("BEGIN RSA PRIVATE KEY"), what most DKIM set-ups paste
    pkcs8: str  #: the same key as PKCS#8 ("BEGIN PRIVATE KEY")
    record: str  #: ``v=DKIM1; k=rsa; p=<base64 SubjectPublicKeyInfo>``

    def options(
        self, domain: str = "example.com", selector: str = "rsa", **more: Any
    ) -> dict[str, Any]:
        """The Message's ``dkim`` option signing with this key."""
        return {"domain": domain, "selector": selector, "private_key": self.pem, **more}

    def __repr__(self) -> str:  # the PEM is a secret even in tests: keep it out of logs
        return f"<DKIMKey {self.record[-12:]}>"


def dkim_key(index: int = 0) -> DKIMKey:
    """The ``index``-th DKIM test key of this process: made on first use, then the same."""
    if index < 0:
        raise ValueError(f"dkim_key needs an index >= 0, not {index}")
    return _made(index)


@cache  # by position only, so that dkim_key() and dkim_key(0) are one key
def _made(index: int) -> DKIMKey:
    serialization = require("cryptography.hazmat.primitives.serialization")
    rsa = require("cryptography.hazmat.primitives.asymmetric.rsa")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    none = serialization.NoEncryption()
    pem = serialization.Encoding.PEM
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return DKIMKey(
        pem=key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL, none).decode(),
        pkcs8=key.private_bytes(pem, serialization.PrivateFormat.PKCS8, none).decode(),
        record="v=DKIM1; k=rsa; p=" + base64.b64encode(spki).decode(),
    )
