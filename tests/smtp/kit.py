"""What several SMTP test modules (and the peer tests) share: DKIM keys with the DNS
records that publish them, a send that fails over between two servers, and the bytes
that try to smuggle a second message past the end of the data."""

from __future__ import annotations

import base64
from typing import Any

import dkim
import nacl.signing

from mailer import Mailer, Message
from mailer.providers._smtp import SMTPProvider
from mailer.testing import SMTPTestServer, dkim_key

__all__ = ["SMUGGLING", "Keys", "send_failing_over"]

#: a body's end-of-data look-alikes, each followed by a command: a server that takes any
#: of them for the end would run the command (SMTP smuggling)
SMUGGLING = [
    b"a\r\n\n.\r\nMAIL FROM:<evil@x>\r\n",  # <LF>.<CR><LF>
    b"a\r\n\r.\r\nMAIL FROM:<evil@x>\r\n",  # <CR>.<CR><LF>
    b"a\r\n.\rMAIL FROM:<evil@x>\r\n",  # <CR><LF>.<CR>
    b"a\r.\rMAIL FROM:<evil@x>\r\n",  # <CR>.<CR>
    b"a\r\r\n.\r\nMAIL FROM:<evil@x>\r\n",  # \r\r\n.
    b"a\n.\nMAIL FROM:<evil@x>\n",  # <LF>.<LF>
    b".\r\nMAIL FROM:<evil@x>\r\n",  # a dot at the very start
]


class Keys:
    """Signing keys and the DNS TXT records that publish them, by selector: the session's
    RSA key (``mailer.testing.dkim_key``) and a fresh ed25519 one (microseconds to make)."""

    def __init__(self) -> None:
        key = dkim_key()  # one RSA key per session: making one costs 50-300 ms
        self.rsa_pem = key.pem
        self.rsa_pkcs8 = key.pkcs8
        ed = nacl.signing.SigningKey.generate()
        self.ed_seed = base64.b64encode(bytes(ed)).decode()
        self.records: dict[bytes, bytes] = {}
        for domain in ("example.com", "other.example", "xn--fa-hia.de"):
            self.records[f"rsa._domainkey.{domain}".encode()] = key.record.encode()
            self.records[f"ed._domainkey.{domain}".encode()] = (
                b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(ed.verify_key))
            )
        self.lookups: list[bytes] = []

    def dns(self, name: bytes, timeout: int = 5) -> bytes:
        """dkimpy's ``dnsfunc``: the TXT record for ``selector._domainkey.domain``."""
        self.lookups.append(name)
        return self.records.get(name.rstrip(b"."), b"")

    def rsa(self, domain: str = "example.com", **kw: Any) -> dict[str, Any]:
        return {"domain": domain, "selector": "rsa", "private_key": self.rsa_pem, **kw}

    def ed(self, domain: str = "example.com", **kw: Any) -> dict[str, Any]:
        return {
            "domain": domain,
            "selector": "ed",
            "private_key": self.ed_seed,
            "algorithm": "ed25519-sha256",
            **kw,
        }

    def verify(self, data: bytes) -> dict[bytes, bytes]:
        """Verify with dkimpy; return the signature's tags."""
        assert dkim.verify(data, dnsfunc=self.dns), "dkimpy did not verify the signature"
        head = data.split(b"\r\n\r\n", 1)[0]
        assert head.count(b"DKIM-Signature:") == 1
        sig = head.split(b"DKIM-Signature:", 1)[1].split(b"\r\n")
        value = sig[0] + b"".join(line for line in sig[1:] if line[:1] in (b" ", b"\t"))
        tags = {}
        for part in value.replace(b" ", b"").replace(b"\t", b"").split(b";"):
            if b"=" in part:
                key, _, val = part.partition(b"=")
                tags[key] = val
        return tags


async def send_failing_over(failing: SMTPTestServer, good: SMTPTestServer, msg: Message) -> Any:
    """Send through a Mailer over two SMTP servers, ``failing`` first, no retries."""
    mailer = Mailer(
        [
            SMTPProvider.from_config("a", failing.config(auth=None)),
            SMTPProvider.from_config("b", good.config(auth=None)),
        ],
        retry={"attempts": 1, "backoff": 0},
    )
    async with mailer:
        return await mailer.send(msg)
