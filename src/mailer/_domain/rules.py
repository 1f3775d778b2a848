"""The decisions of ``mailer doctor --domain``, pure: DNS answers in, findings out.

Each finding says what the check saw, what Gmail's and Yahoo's 2024 rules for bulk senders
need (over 5,000 messages a day: SPF and DKIM, DMARC of at least ``p=none`` aligned with
the From domain, one-click unsubscribe) and what to change. The SPF lookup count follows
RFC 7208 4.6.4: ``include``, ``a``, ``mx``, ``ptr``, ``exists`` and ``redirect`` each cost
one DNS lookup, included records' too, and more than 10 is a permanent error: receivers
then treat SPF as failed.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Finding",
    "Records",
    "SPFRecord",
    "aligned",
    "dkim_key_matches",
    "judge",
    "parse_spf",
    "parse_tags",
    "spf_lookups",
]

Status = Literal["ok", "warn", "fail", "info"]

#: the mechanisms and modifier that cost a DNS lookup (RFC 7208 4.6.4)
_LOOKUP_TERMS = ("include", "a", "mx", "ptr", "exists", "redirect")
_MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
SPF_LIMIT = 10


@dataclass
class Finding:
    """One check's result."""

    check: str
    status: Status
    summary: str
    need: str = ""
    change: str = ""


@dataclass
class Records:
    """What the DNS said, by name: TXT strings (each record joined) and MX hosts.

    A name missing from ``txt`` was not looked up; an empty list is "no record".
    ``errors`` holds the names whose lookup failed (timeout, SERVFAIL).
    """

    domain: str
    mx: list[tuple[int, str]] = field(default_factory=list)
    txt: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    #: the From domain mail is sent with (alignment); None: ``domain``
    from_domain: str | None = None
    #: selector -> the public key our config's private key makes (base64 of what ``p=``
    #: should hold), or None when only the selector name is known
    selectors: dict[str, str | None] = field(default_factory=dict)


@dataclass
class SPFRecord:
    terms: list[str]
    problems: list[str]
    all_qualifier: str | None  # "-", "~", "?", "+" or None without an "all"
    includes: list[str]
    redirect: str | None


def parse_tags(record: str) -> dict[str, str]:
    """``k=v; k2=v2`` (DMARC, DKIM, MTA-STS, TLS-RPT) as a dict, keys lower-cased."""
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    return tags


def spf_records(txts: list[str]) -> list[str]:
    return [t for t in txts if t.lower() == "v=spf1" or t.lower().startswith("v=spf1 ")]


def parse_spf(record: str) -> SPFRecord:
    """The terms of one SPF record, and its syntax problems."""
    terms = record.split()[1:]
    problems: list[str] = []
    includes: list[str] = []
    redirect = None
    qualifier = None
    for term in terms:
        lower = term.lower()
        if "=" in lower.split(":", 1)[0]:  # a modifier
            name, _, value = lower.partition("=")
            if name == "redirect":
                redirect = value
            elif name != "exp":
                problems.append(f"unknown modifier {term!r}")
            continue
        body = lower.lstrip("+-~?")
        name = body.split(":", 1)[0].split("/", 1)[0]
        if name not in _MECHANISMS:
            problems.append(f"unknown mechanism {term!r}")
            continue
        if name == "all":
            qualifier = lower[0] if lower[0] in "+-~?" else "+"
        elif name == "include":
            target = body.partition(":")[2]
            if not target:
                problems.append(f"{term!r} names no domain")
            else:
                includes.append(target)
        elif name in ("ip4", "ip6") and ":" not in body:
            problems.append(f"{term!r} names no address")
    return SPFRecord(terms, problems, qualifier, includes, redirect)


def spf_lookups(domain: str, txt: dict[str, list[str]], seen: set[str] | None = None) -> int:
    """DNS lookups an evaluation of ``domain``'s SPF costs, includes followed (a loop or
    a missing record counts what it reached)."""
    seen = set() if seen is None else seen
    if domain in seen:
        return 0
    seen.add(domain)
    records = spf_records(txt.get(domain, []))
    if len(records) != 1:
        return 0
    spf = parse_spf(records[0])
    count = 0
    for term in spf.terms:
        name = term.lower().lstrip("+-~?").split(":", 1)[0].split("/", 1)[0].split("=", 1)[0]
        if name in _LOOKUP_TERMS:
            count += 1
    for target in [*spf.includes, *([spf.redirect] if spf.redirect else [])]:
        count += spf_lookups(target, txt, seen)
    return count


def organizational(domain: str) -> str:
    """The last two labels: a stand-in for the Public Suffix List (``example.co.uk`` would
    need the list, and is reported as ``co.uk``-relaxed; see docs/deliverability.md)."""
    return ".".join(domain.lower().rstrip(".").split(".")[-2:])


def aligned(from_domain: str, domain: str, mode: str) -> bool:
    """DMARC identifier alignment: ``s`` exact, ``r`` same organizational domain."""
    a, b = from_domain.lower().rstrip("."), domain.lower().rstrip(".")
    return a == b if mode == "s" else organizational(a) == organizational(b)


def dkim_key_matches(record: str, expected: str) -> bool:
    """Whether a DKIM record's ``p=`` holds the public half of the configured key.

    ``expected`` is ``rsa:<modulus in hex>`` or ``ed25519:<base64 of the 32 bytes>`` (see
    :func:`mailer._domain.lookup.public_key_id`); an RSA ``p=`` is SubjectPublicKeyInfo
    DER, whose modulus is compared.
    """
    published = parse_tags(record).get("p", "").replace(" ", "")
    kind, _, value = expected.partition(":")
    try:
        theirs = base64.b64decode(published, validate=True)
    except ValueError:
        return False
    if kind == "ed25519":
        return published == value
    try:
        from dkim.crypto import parse_public_key

        return bool(parse_public_key(theirs)["modulus"] == int(value, 16))
    except Exception:  # not RSA DER (or dkimpy missing): it cannot be the configured key
        return False


# -- the checks ------------------------------------------------------------------------


def check_mx(rec: Records) -> Finding:
    name = rec.domain
    if name in rec.errors:
        return Finding("MX", "warn", f"lookup failed: {rec.errors[name]}")
    if not rec.mx:
        return Finding(
            "MX",
            "warn",
            "no MX record: mail to the domain (bounces, replies) cannot arrive",
            "receivers expect a sending domain to accept mail (replies, bounces)",
            f"publish an MX record for {name}, or send from a domain that has one",
        )
    if rec.mx == [(0, ".")] or [h for _, h in rec.mx] == ["."]:
        return Finding(
            "MX",
            "warn",
            "null MX (RFC 7505): the domain accepts no mail",
            "replies and bounces to the From domain have nowhere to go",
            "send from a domain that receives mail",
        )
    hosts = ", ".join(f"{h} ({p})" for p, h in sorted(rec.mx))
    return Finding("MX", "ok", hosts)


def check_spf(rec: Records) -> Finding:
    need = "SPF (or DKIM) for everyone; bulk senders need both, with DMARC aligned"
    records = spf_records(rec.txt.get(rec.domain, []))
    if not records:
        return Finding(
            "SPF",
            "fail",
            "no SPF record",
            need,
            f'publish TXT "v=spf1 include:<your providers> ~all" at {rec.domain}',
        )
    if len(records) > 1:
        return Finding(
            "SPF",
            "fail",
            f"{len(records)} SPF records: a permanent error (RFC 7208)",
            need,
            "merge them into one v=spf1 record",
        )
    spf = parse_spf(records[0])
    problems = list(spf.problems)
    for target in spf.includes + ([spf.redirect] if spf.redirect else []):
        if target in rec.txt and not spf_records(rec.txt[target]):
            problems.append(f"include:{target} has no SPF record (a permanent error)")
    count = spf_lookups(rec.domain, rec.txt)
    if count > SPF_LIMIT:
        problems.append(f"{count} DNS lookups, over the limit of {SPF_LIMIT} (a permanent error)")
    if spf.all_qualifier == "+":
        problems.append("+all lets any server on the internet pass as you")
    if problems:
        return Finding(
            "SPF",
            "fail",
            "broken: " + "; ".join(problems),
            need,
            "fix the record: drop unused includes, flatten nested ones into ip4:/"
            "ip6: ranges to stay within 10 lookups, end with ~all or -all",
        )
    summary = f"{records[0]} ({count} of {SPF_LIMIT} lookups)"
    if spf.all_qualifier is None and spf.redirect is None:
        return Finding(
            "SPF",
            "warn",
            summary + "; no 'all' at the end",
            need,
            "end the record with ~all or -all",
        )
    return Finding("SPF", "ok", summary)


def check_dkim(rec: Records) -> list[Finding]:
    need = "DKIM signatures for everyone; bulk senders sign with a key of the From domain"
    if not rec.selectors:
        return [
            Finding(
                "DKIM",
                "info",
                "no DKIM selector in the config (give --selector)",
                need,
                "sign with dkim = {...} on the provider, or the ESP's domain "
                "authentication, and check its selector here",
            )
        ]
    out = []
    for selector, expected in sorted(rec.selectors.items()):
        name = f"{selector}._domainkey.{rec.domain}"
        label = f"DKIM {selector}"
        if name in rec.errors:
            out.append(Finding(label, "warn", f"lookup failed: {rec.errors[name]}"))
            continue
        records = [t for t in rec.txt.get(name, []) if "p=" in t]
        if not records:
            out.append(
                Finding(
                    label,
                    "fail",
                    f"no key published at {name}",
                    need,
                    f"publish the public key of selector {selector!r} as TXT at {name}",
                )
            )
        elif not parse_tags(records[0]).get("p"):
            out.append(
                Finding(
                    label,
                    "fail",
                    f"the key at {name} is revoked (empty p=)",
                    need,
                    "publish the current key, or sign with another selector",
                )
            )
        elif expected is not None and not dkim_key_matches(records[0], expected):
            out.append(
                Finding(
                    label,
                    "fail",
                    f"the key at {name} does not match the configured private key: "
                    "receivers will fail every signature",
                    need,
                    "publish the public key of the configured private key (or "
                    "configure the private key whose public key is published)",
                )
            )
        else:
            match = "matches the configured key" if expected else "published"
            out.append(Finding(label, "ok", f"{name}: {match}"))
    return out


def check_dmarc(rec: Records) -> Finding:
    need = "bulk senders: a DMARC record (p=none at least) and From aligned with SPF or DKIM"
    name = f"_dmarc.{rec.domain}"
    records = [t for t in rec.txt.get(name, []) if t.lower().startswith("v=dmarc1")]
    if not records:
        return Finding(
            "DMARC",
            "fail",
            f"no DMARC record at {name}",
            need,
            f'publish TXT "v=DMARC1; p=none; rua=mailto:dmarc@{rec.domain}" at '
            f"{name}, then move to p=quarantine once the reports are clean",
        )
    if len(records) > 1:
        return Finding(
            "DMARC", "fail", f"{len(records)} DMARC records: receivers ignore all", need, "keep one"
        )
    tags = parse_tags(records[0])
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return Finding(
            "DMARC",
            "fail",
            f"policy p={policy or '(missing)'} is not valid",
            need,
            "set p=none, p=quarantine or p=reject",
        )
    from_domain = rec.from_domain or rec.domain
    problems = [
        f"From {from_domain} not aligned ({kind}={mode}) with {rec.domain}"
        for kind in ("adkim", "aspf")
        for mode in [tags.get(kind, "r").lower()]
        if not aligned(from_domain, rec.domain, mode)
    ]
    if problems:
        return Finding(
            "DMARC",
            "fail",
            "; ".join(problems),
            need,
            f"send From an address at {rec.domain} (or sign and envelope with the From domain)",
        )
    summary = f"p={policy}" + (f", reports to {tags['rua']}" if "rua" in tags else "")
    if policy == "none":
        return Finding(
            "DMARC",
            "warn",
            summary + " (monitoring only)",
            need,
            "enough for the rules; move to p=quarantine when the reports show "
            "only your own mail passing",
        )
    return Finding("DMARC", "ok", summary)


def check_tls_policies(rec: Records) -> list[Finding]:
    out = []
    sts = [t for t in rec.txt.get(f"_mta-sts.{rec.domain}", []) if t.startswith("v=STSv1")]
    if sts:
        policy_id = parse_tags(sts[0]).get("id")
        status: Status = "ok" if policy_id else "fail"
        out.append(
            Finding(
                "MTA-STS",
                status,
                f"{sts[0]}" + ("" if policy_id else ": no id="),
                "optional; protects mail *to* the domain from TLS downgrade",
                "" if policy_id else "add id=<version> to the record",
            )
        )
    else:
        out.append(Finding("MTA-STS", "info", "none published (optional)"))
    rpt = [t for t in rec.txt.get(f"_smtp._tls.{rec.domain}", []) if t.startswith("v=TLSRPTv1")]
    if rpt:
        ok = "rua" in parse_tags(rpt[0])
        out.append(
            Finding(
                "TLS-RPT",
                "ok" if ok else "fail",
                rpt[0],
                "optional",
                "" if ok else "add rua=mailto:... to receive the reports",
            )
        )
    else:
        out.append(Finding("TLS-RPT", "info", "none published (optional)"))
    return out


def judge(rec: Records) -> list[Finding]:
    """Every finding for ``rec``, in the order they are shown."""
    return [
        check_mx(rec),
        check_spf(rec),
        *check_dkim(rec),
        check_dmarc(rec),
        *check_tls_policies(rec),
    ]
