"""Addresses: a strict parser of our own, and the Address model.

Not ``email.utils.parseaddr`` (CVE-2023-27043). Forms whose routing is ambiguous between
parsers are refused: a quoted local part holding ``@`` (``"a@evil.example x"@internal.
example``, which Nodemailer routed to evil.example, GHSA-mm7p-fcc7-pg87), comments and
specials glued to addresses, several addresses in one item. Domains go through IDNA 2008
/ UTS 46, not Python's IDNA 2003 codec (``faß.de`` is not ``fass.de``).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import unicodedata
from collections.abc import Mapping
from email.header import decode_header, make_header
from email.headerregistry import Address as _StdAddress
from typing import Any

import idna
from pydantic import (
    ValidationError,
    field_validator,
    model_validator,
)

from .._errors import MessageError
from .._options import validation_text
from ._checks import (
    ENCODED_WORD,
    Strict,
    check_length,
    check_text,
    describe,
)

_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$")
# RFC 6531 3.3: atext extended with any non-ASCII character (UTF8-non-ascii); the
# characters that could hide or reorder text are refused by _check_utf8_local
_ATEXT_UTF8 = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+$")
_LDH_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_SPACE_OR_ANGLE = re.compile(r"[\s<>]")
_DISPLAY_SPECIALS = set('<>@,;:"()[]\\')
# Something a mail client would read as an address inside a display name (after NFKC,
# which maps look-alikes such as U+FF20 FULLWIDTH COMMERCIAL AT to "@").
_ADDRESS_IN_TEXT = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+")
_AT_LIKE = re.compile("[@\uff20\ufe6b]")


def check_display_name(name: str, email: str) -> None:
    """Refuse a display name that holds an address other than the mailbox's own.

    ``"ceo@bank.example" <x@evil.example>``: most clients show only the display name, so
    the reader sees ceo@bank.example as the sender. Quoting does not help (the quotes are
    not shown), so it is refused. The mailbox's own address in its name is harmless and
    common (``"alice@example.org" <alice@example.org>``). Look-alike at signs (U+FF20,
    U+FE6B) and encoded-words are seen through.
    """
    if name.isascii() and "@" not in name and "=?" not in name:
        return  # the common case, on every named address: one scan
    _check_visible(name)
    candidates = [unicodedata.normalize("NFKC", name)]
    for word in ENCODED_WORD.findall(name):
        with contextlib.suppress(Exception):
            candidates.append(str(make_header(decode_header(word))))
    own = email.casefold()
    for text in candidates:
        if not _AT_LIKE.search(text):
            continue
        for found in _ADDRESS_IN_TEXT.findall(unicodedata.normalize("NFKC", text)):
            if found.casefold() != own:
                raise MessageError(
                    f"display name {describe(name)} contains an address ({describe(found)}) "
                    f"that is not the mailbox's own ({email}): mail clients would show it as "
                    "the sender; leave the address out of the name"
                )


#: bidirectional controls (embeddings, overrides, isolates, marks): they reorder what a
#: reader sees, so "moc.knab" can show as "bank.com" (Trojan Source, CVE-2021-42574)
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
#: letters that render as nothing (Hangul fillers, the braille blank), beyond format
#: characters (Cf), marks alone (Mn, Me) and spaces (Z*)
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Mn", "Me", "Zs", "Zl", "Zp", "Cc"})


def _check_visible(name: str) -> None:
    """Refuse a display name that shows nothing, or that holds a bidi control.

    A name of one zero-width space makes clients show no name, or the address in a way
    the sender chose; a bidi override reorders the name as displayed. Both are spoofing
    aids and no real name needs them (right-to-left names display right without them).
    """
    for ch in name:
        if ch in _BIDI_CONTROLS:
            raise MessageError(
                f"display name {describe(name)} holds a bidirectional control character "
                f"(U+{ord(ch):04X}), which reorders what readers see; remove it"
            )
    if all(
        ch in _BLANK_LETTERS or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in name
    ):
        raise MessageError(
            f"display name {describe(name)} has no visible character (only zero-width, "
            "blank or combining characters); give a real name or none"
        )


def _parse_domain(domain: str, original: str) -> str:
    """Return the ASCII (IDNA) form of a domain, or raise."""
    if not domain:
        raise MessageError(f"address has an empty domain: {describe(original)}")
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            raise MessageError(f"bad address literal in {describe(original)}") from None
        return domain
    if domain.endswith("."):
        domain = domain[:-1]
    # IDNA 2008 with UTS 46 mapping (non-transitional), as browsers and current mail
    # software do. Python's "idna" codec is IDNA 2003, which maps "faß.de" to "fass.de":
    # someone else's domain. A-labels given as such ("xn--...") are checked too.
    try:
        if not domain.isascii():
            ascii_domain = idna.encode(domain, uts46=True).decode("ascii")
        else:
            ascii_domain = domain
            if "xn--" in domain.lower():
                idna.decode(domain)
    except (idna.IDNAError, UnicodeError) as exc:
        raise MessageError(
            f"domain is not a valid internationalized domain name (IDNA 2008: {exc}): "
            f"{describe(original)}"
        ) from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LDH_LABEL.match(label) for label in labels):
        raise MessageError(f"domain is not a valid host name: {describe(original)}")
    return ascii_domain.lower()


def _check_utf8_local(local: str, original: str) -> None:
    """An internationalized (EAI, RFC 6531) local part: printable letters, not tricks.

    Spaces, format characters (zero-width joiners, bidi overrides that reorder what a
    reader sees) and unassigned or private-use code points are refused.
    """
    for ch in local:
        if not ch.isascii() and unicodedata.category(ch) in ("Zs", "Cf", "Cn", "Co", "Cs"):
            raise MessageError(
                f"non-ASCII local part holds an invisible or unassigned character "
                f"(U+{ord(ch):04X}): {describe(original)}"
            )


def _parse_addr_spec(spec: str, original: str) -> str:
    """Parse ``local@domain`` strictly; return it with the domain in ASCII form."""
    if not spec:
        raise MessageError(f"empty address in {describe(original)}")
    if spec.startswith('"'):
        # quoted local part: find the closing quote, honouring backslash escapes
        i, n, chars = 1, len(spec), []
        while i < n and spec[i] != '"':
            if spec[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(spec[i])
            i += 1
        if i >= n:
            raise MessageError(f"unterminated quoted local part: {describe(original)}")
        local_content = "".join(chars)
        if "@" in local_content or not local_content:
            # "a@evil.example x"@internal.example: RFC 5321 routes to internal.example,
            # some parsers to evil.example. Refuse rather than guess.
            raise MessageError(
                f"ambiguous address (quoted local part holding '@'): {describe(original)}"
            )
        rest = spec[i + 1 :]
        if not rest.startswith("@"):
            raise MessageError(f"missing '@' after quoted local part: {describe(original)}")
        local, domain = spec[: i + 1], rest[1:]
        if not local_content.isascii():
            raise MessageError(
                f"a quoted non-ASCII local part is not supported: {describe(original)}"
            )
    else:
        if spec.count("@") != 1:
            raise MessageError(
                f"an address needs exactly one '@' (one address per item): {describe(original)}"
            )
        local, domain = spec.split("@")
        atoms = local.split(".")
        atext = _ATEXT if local.isascii() else _ATEXT_UTF8
        if not local or not all(atoms) or not all(atext.match(a) for a in atoms):
            raise MessageError(f"invalid local part in address: {describe(original)}")
        if not local.isascii():
            _check_utf8_local(local, original)
    if len(local.encode("utf-8")) > 64:
        raise MessageError(f"local part longer than 64 octets: {describe(original)}")
    return f"{local}@{_parse_domain(domain, original)}"


def _parse_display_name(raw: str, original: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        inner, out, i = raw[1:-1], [], 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner):
                i += 1
                ch = inner[i]
            elif ch == '"':
                raise MessageError(f"unescaped quote in display name: {describe(original)}")
            out.append(ch)
            i += 1
        return "".join(out)
    if any(ch in _DISPLAY_SPECIALS for ch in raw):
        raise MessageError(
            'display name has special characters (<>@,;:"()[]\\) outside quotes, which '
            f"parsers disagree on; quote it or use Address(name=..., email=...): "
            f"{describe(original)}"
        )
    return " ".join(raw.split())


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> tuple[str | None, str]:
    """Parse one mailbox (``addr`` or ``Name <addr>``) into (name, ASCII address).

    Cached: it is pure, and the same sender (and often the same recipients) recur on
    every message; parsing was most of the cost of building a Message. Refusals are not
    cached (they raise), so they cost the same each time.
    """
    check_text(text, "address")
    text = text.strip()
    if text.count("@") > 1 and ("," in text or ";" in text) and not text.startswith('"'):
        raise MessageError(f"several addresses in one item; give a list: {describe(text)}")
    if text.endswith(">"):
        start = text.rfind("<")
        if start < 0:
            raise MessageError(f"unbalanced '>' in address: {describe(text)}")
        spec = text[start + 1 : -1].strip()
        if "<" in spec or ">" in spec:
            raise MessageError(f"nested angle brackets in address: {describe(text)}")
        name, addr = _parse_display_name(text[:start], text), _parse_addr_spec(spec, text)
        if name:
            check_display_name(name, addr)
        return name, addr
    if text.startswith('"'):
        return None, _parse_addr_spec(text, text)
    if _SPACE_OR_ANGLE.search(text):
        raise MessageError(f"invalid address: {describe(text)}")
    return None, _parse_addr_spec(text, text)


class Address(Strict):
    """A mailbox: an optional display name and an address (domain kept in ASCII form)."""

    name: str | None = None
    email: str

    @model_validator(mode="before")
    @classmethod
    def _coerce(cls, value: Any) -> Any:
        if isinstance(value, str):
            name, email = parse_address(value)
            return {"name": name, "email": email}
        if isinstance(value, tuple) and len(value) == 2:
            value = {"name": value[0], "email": value[1]}  # checked like a mapping
        if isinstance(value, Mapping) and "email" in value:
            data = dict(value)
            name = data.get("name")
            if name is not None:
                check_text(str(name), "display name")
            _, data["email"] = parse_address(str(data["email"]))
            if name:
                check_display_name(str(name), data["email"])
            return data
        return value

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None:
            check_text(value, "display name")
            check_length(value, "display name")
            value = value.strip() or None
        return value

    @classmethod
    def parse(cls, value: str | Address | Mapping[str, Any] | tuple[str | None, str]) -> Address:
        """Parse one mailbox, raising MessageError."""
        if isinstance(value, Address):
            return value
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise MessageError(validation_text("message", exc)) from None

    @property
    def domain(self) -> str:
        return self.email.rpartition("@")[2]

    def header_value(self) -> _StdAddress:
        """The stdlib object that encodes the display name safely when folded."""
        local, _, domain = self.email.rpartition("@")
        if local.startswith('"'):
            return _StdAddress(display_name=self.name or "", addr_spec=self.email)
        return _StdAddress(display_name=self.name or "", username=local, domain=domain)

    def __str__(self) -> str:
        return str(self.header_value())
