"""The DNS half of ``mailer doctor --domain``: ask, record, and leave the judging to
:mod:`.rules`.

dnspython's async resolver (the ``dns`` extra), pointed at ``nameserver`` when given (a
local server in tests, or a resolver you trust), else the system's. Every name is asked
once; SPF includes are followed to count their lookups, at most :data:`MAX_NAMES` names in
all, so a loop or a sprawling include tree cannot keep the doctor busy.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from .._errors import ConfigError
from .rules import Finding, Records, judge, parse_spf, spf_records

__all__ = ["MAX_NAMES", "check_domain", "gather", "public_key_id"]

#: SPF allows 10 lookups; following a few more shows by how much a record is over
MAX_NAMES = 40


def public_key_id(options: Any) -> str | None:
    """``rsa:<modulus hex>`` or ``ed25519:<base64>`` for a DKIMOptions' private key."""
    key: bytes = options._key
    try:
        if options.algorithm == "rsa-sha256":
            from dkim.crypto import parse_pem_private_key

            return f"rsa:{parse_pem_private_key(key)['modulus']:x}"
        import nacl.encoding
        import nacl.signing

        seed = nacl.signing.SigningKey(key.strip(), encoder=nacl.encoding.Base64Encoder)
        return "ed25519:" + base64.b64encode(bytes(seed.verify_key)).decode()
    except Exception:  # the key was checked when the config loaded; say nothing rather than guess
        return None


def _resolver(nameserver: str | None, timeout: float) -> Any:
    try:
        import dns.asyncresolver
    except ImportError:
        raise ConfigError(
            "mailer doctor --domain needs dnspython: pip install 'mailer-failover[dns]'"
        ) from None
    resolver = dns.asyncresolver.Resolver(configure=nameserver is None)
    if nameserver is not None:
        host, port = nameserver, 53
        if nameserver.count(":") == 1:  # host:port (an IPv6 address alone has several)
            host, _, text = nameserver.partition(":")
            port = int(text)
        elif nameserver.startswith("[") and "]:" in nameserver:
            host, _, text = nameserver[1:].partition("]:")
            port = int(text)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


async def _ask(resolver: Any, name: str, kind: str) -> tuple[list[Any] | None, str | None]:
    """The answer's records, [] for "no such record", or None and why the lookup failed."""
    import dns.exception
    import dns.resolver

    try:
        answer = await resolver.resolve(name, kind)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return [], None
    except dns.exception.Timeout:
        return None, "timed out"
    except dns.resolver.NoNameservers as exc:
        return None, f"no server answered ({exc.msg if hasattr(exc, 'msg') else 'SERVFAIL'})"
    except dns.exception.DNSException as exc:
        return None, f"{type(exc).__name__}: {exc}"
    return list(answer), None


async def _txt(resolver: Any, rec: Records, name: str) -> None:
    if name in rec.txt or name in rec.errors:
        return
    answers, error = await _ask(resolver, name, "TXT")
    if answers is None:
        rec.errors[name] = error or "failed"
        return
    rec.txt[name] = [b"".join(r.strings).decode("utf-8", "replace") for r in answers]


async def gather(
    domain: str,
    *,
    nameserver: str | None = None,
    selectors: dict[str, str | None] | None = None,
    from_domain: str | None = None,
    timeout: float = 5.0,
) -> Records:
    """Every DNS record the checks read, for ``domain``."""
    domain = domain.strip().rstrip(".").lower()
    resolver = _resolver(nameserver, timeout)
    rec = Records(domain, from_domain=from_domain, selectors=dict(selectors or {}))
    names = [domain, f"_dmarc.{domain}", f"_mta-sts.{domain}", f"_smtp._tls.{domain}"]
    names += [f"{s}._domainkey.{domain}" for s in rec.selectors]
    mx, error = await _ask(resolver, domain, "MX")
    if mx is None:
        rec.errors[domain] = error or "failed"
    else:
        rec.mx = [(r.preference, r.exchange.to_text().rstrip(".") or ".") for r in mx]
    await asyncio.gather(*(_txt(resolver, rec, n) for n in names))
    # follow SPF includes and redirects, breadth first, within MAX_NAMES
    todo = [domain]
    asked = 0
    while todo and asked < MAX_NAMES:
        name = todo.pop(0)
        await _txt(resolver, rec, name)
        asked += 1
        records = spf_records(rec.txt.get(name, []))
        if len(records) == 1:
            spf = parse_spf(records[0])
            todo += [t for t in [*spf.includes, spf.redirect] if t and t not in rec.txt]
    return rec


async def check_domain(domain: str, **options: Any) -> tuple[Records, list[Finding]]:
    """:func:`gather` then :func:`~.rules.judge`."""
    rec = await gather(domain, **options)
    return rec, judge(rec)
