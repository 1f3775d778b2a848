"""Message, Address and Attachment: validated on construction, rendered to MIME once.

Everything a caller gives us is checked *before* any I/O, so that no provider ever sees
a message that could say something the caller did not ask for:

* CR, LF and every other control character are refused in header values, names,
  addresses, file names and tags (Unicode line separators too).
* Encoded-words in header values are decoded and checked as well: Python 3.11.7's
  email package (CVE-2024-6923) decodes ``=?utf-8?q?=0D=0A?=`` and writes the newline
  back out raw when it refolds a header.
* Addresses are parsed by a strict parser of our own, not ``email.utils.parseaddr``
  (CVE-2023-27043). Forms whose routing is ambiguous between parsers are refused: a
  quoted local part holding ``@`` (``"a@evil.example x"@internal.example``, which
  Nodemailer routed to evil.example, GHSA-mm7p-fcc7-pg87), comments and specials glued
  to addresses (``alice@example.org)<bob@evil.example>``), several addresses in one item.
* The rendered bytes are checked once more: CRLF-only line endings, no NUL, no line over
  998 octets, and exactly the header lines we meant to write (a belt to the braces above).

The Message-ID is made when the Message is made, and the rendered bytes are cached on the
(frozen) message: every attempt, on every provider, sends the same bytes and the same id.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import ipaddress
import mimetypes
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from email.header import decode_header, make_header
from email.headerregistry import Address as _StdAddress
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Self

import idna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from . import _mime
from ._dkim import DKIMOptions
from .errors import MessageError

__all__ = ["Address", "Attachment", "Envelope", "Message"]

# 7bit: non-ASCII bodies go out quoted-printable or base64, so no server needs 8BITMIME.
_POLICY = SMTP.clone(cte_type="7bit", max_line_length=78)
# RFC 6532: a message with an internationalized address carries it in UTF-8
_POLICY_UTF8 = _POLICY.clone(utf8=True)

# C0 controls (HTAB included: it has no business in a name or address), DEL, C1 controls
# and the Unicode line/paragraph separators that str.splitlines() treats as newlines.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Header values may carry HTAB (it is folding whitespace) but nothing else.
_CONTROL_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")
_ATEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+$")
# RFC 6531 3.3: atext extended with any non-ASCII character (UTF8-non-ascii); the
# characters that could hide or reorder text are refused by _check_utf8_local
_ATEXT_UTF8 = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+$")
_LDH_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)
_SPACE_OR_ANGLE = re.compile(r"[\s<>]")
_DISPLAY_SPECIALS = set('<>@,;:"()[]\\')
# Something a mail client would read as an address inside a display name (after NFKC,
# which maps look-alikes such as U+FF20 FULLWIDTH COMMERCIAL AT to "@").
_ADDRESS_IN_TEXT = re.compile(r"[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+")
_AT_LIKE = re.compile("[@\uff20\ufe6b]")

#: Longest subject, header value and display name, in characters. RFC 5322 2.1.1: a
#: line may hold 998 characters; a longer value is only possible folded, and a megabyte
#: subject is a way to make a message nobody can read (or a server refuses mid-DATA).
MAX_HEADER_CHARS = 998
#: Most custom ``headers`` one message may carry.
MAX_HEADERS = 100
#: Longest attachment file name, in characters (common file systems' limit).
MAX_FILENAME_CHARS = 255

# Headers the Message owns: set through its fields, never through ``headers``.
_RENDER_LOCK = threading.Lock()

_PATH_FROM_JSON = (
    "an attachment given by path cannot come from JSON (a stored or received message "
    "carries its content); read the file and give content= instead"
)

# Set while JSON is parsed. pydantic's mode flag cannot tell: the models' own __init__
# makes it validate the parsed JSON in Python mode.
_FROM_JSON: contextvars.ContextVar[bool] = contextvars.ContextVar("mailer_json", default=False)

_RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "message-id", "date",
        "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "sender",
    }
)  # fmt: skip

# Trace and authentication headers are written by the servers a message passes through
# (RFC 5321 4.4, RFC 8601, RFC 8617) or by the signer (DKIM-Signature, from ``dkim``).
# One set by the sender is a forgery that filters and people may trust.
_TRACE_HEADERS = frozenset(
    {
        "received", "return-path", "received-spf", "authentication-results",
        "dkim-signature", "domainkey-signature", "delivered-to", "x-original-to",
    }
)  # fmt: skip
_TRACE_PREFIXES = ("arc-", "resent-")


def _describe(text: str, limit: int = 80) -> str:
    """A printable, bounded rendering of untrusted input for error messages."""
    shown = repr(text[:limit])
    return shown + ("..." if len(text) > limit else "")


def check_length(value: str, what: str, limit: int = MAX_HEADER_CHARS) -> str:
    """Refuse a value longer than ``limit`` characters (before it is folded or encoded)."""
    if len(value) > limit:
        raise MessageError(f"{what} is {len(value)} characters long; the limit is {limit}")
    return value


def check_text(value: str, what: str, *, allow_tab: bool = False) -> str:
    """Refuse control characters, including those hidden in encoded-words."""
    pattern = _CONTROL_IN_VALUE if allow_tab else _CONTROL
    if pattern.search(value):
        raise MessageError(
            f"{what} contains a control character (CR, LF, NUL, ...): {_describe(value)}"
        )
    for word in _ENCODED_WORD.findall(value):
        try:
            parts = decode_header(word)
        except Exception as exc:
            raise MessageError(
                f"{what} contains a malformed encoded-word: {_describe(word)}"
            ) from exc
        for chunk, charset in parts:
            decoded = (
                chunk.decode(charset or "ascii", errors="replace")
                if isinstance(chunk, bytes)
                else chunk
            )
            if _CONTROL.search(decoded):
                raise MessageError(
                    f"{what} contains an encoded-word that decodes to a control character "
                    f"(CVE-2024-6923): {_describe(word)}"
                )
    return value


# --------------------------------------------------------------------------- addresses


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
    candidates = [unicodedata.normalize("NFKC", name)]
    for word in _ENCODED_WORD.findall(name):
        with contextlib.suppress(Exception):
            candidates.append(str(make_header(decode_header(word))))
    own = email.casefold()
    for text in candidates:
        if not _AT_LIKE.search(text):
            continue
        for found in _ADDRESS_IN_TEXT.findall(unicodedata.normalize("NFKC", text)):
            if found.casefold() != own:
                raise MessageError(
                    f"display name {_describe(name)} contains an address ({_describe(found)}) "
                    f"that is not the mailbox's own ({email}): mail clients would show it as "
                    "the sender; leave the address out of the name"
                )


def _parse_domain(domain: str, original: str) -> str:
    """Return the ASCII (IDNA) form of a domain, or raise."""
    if not domain:
        raise MessageError(f"address has an empty domain: {_describe(original)}")
    if domain.startswith("[") and domain.endswith("]"):
        literal = domain[1:-1]
        try:
            if literal.lower().startswith("ipv6:"):
                ipaddress.IPv6Address(literal[5:])
            else:
                ipaddress.IPv4Address(literal)
        except ValueError:
            raise MessageError(f"bad address literal in {_describe(original)}") from None
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
            f"{_describe(original)}"
        ) from None
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or not all(_LDH_LABEL.match(label) for label in labels):
        raise MessageError(f"domain is not a valid host name: {_describe(original)}")
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
                f"(U+{ord(ch):04X}): {_describe(original)}"
            )


def _parse_addr_spec(spec: str, original: str) -> str:
    """Parse ``local@domain`` strictly; return it with the domain in ASCII form."""
    if not spec:
        raise MessageError(f"empty address in {_describe(original)}")
    if spec.startswith('"'):
        # quoted local part: find the closing quote, honouring backslash escapes
        i, n, chars = 1, len(spec), []
        while i < n and spec[i] != '"':
            if spec[i] == "\\" and i + 1 < n:
                i += 1
            chars.append(spec[i])
            i += 1
        if i >= n:
            raise MessageError(f"unterminated quoted local part: {_describe(original)}")
        local_content = "".join(chars)
        if "@" in local_content or not local_content:
            # "a@evil.example x"@internal.example: RFC 5321 routes to internal.example,
            # some parsers to evil.example. Refuse rather than guess.
            raise MessageError(
                f"ambiguous address (quoted local part holding '@'): {_describe(original)}"
            )
        rest = spec[i + 1 :]
        if not rest.startswith("@"):
            raise MessageError(f"missing '@' after quoted local part: {_describe(original)}")
        local, domain = spec[: i + 1], rest[1:]
        if not local_content.isascii():
            raise MessageError(
                f"a quoted non-ASCII local part is not supported: {_describe(original)}"
            )
    else:
        if spec.count("@") != 1:
            raise MessageError(
                f"an address needs exactly one '@' (one address per item): {_describe(original)}"
            )
        local, domain = spec.split("@")
        atoms = local.split(".")
        atext = _ATEXT if local.isascii() else _ATEXT_UTF8
        if not local or not all(atoms) or not all(atext.match(a) for a in atoms):
            raise MessageError(f"invalid local part in address: {_describe(original)}")
        if not local.isascii():
            _check_utf8_local(local, original)
    if len(local.encode("utf-8")) > 64:
        raise MessageError(f"local part longer than 64 octets: {_describe(original)}")
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
                raise MessageError(f"unescaped quote in display name: {_describe(original)}")
            out.append(ch)
            i += 1
        return "".join(out)
    if any(ch in _DISPLAY_SPECIALS for ch in raw):
        raise MessageError(
            'display name has special characters (<>@,;:"()[]\\) outside quotes, which '
            f"parsers disagree on; quote it or use Address(name=..., email=...): "
            f"{_describe(original)}"
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
        raise MessageError(f"several addresses in one item; give a list: {_describe(text)}")
    if text.endswith(">"):
        start = text.rfind("<")
        if start < 0:
            raise MessageError(f"unbalanced '>' in address: {_describe(text)}")
        spec = text[start + 1 : -1].strip()
        if "<" in spec or ">" in spec:
            raise MessageError(f"nested angle brackets in address: {_describe(text)}")
        name, addr = _parse_display_name(text[:start], text), _parse_addr_spec(spec, text)
        if name:
            check_display_name(name, addr)
        return name, addr
    if text.startswith('"'):
        return None, _parse_addr_spec(text, text)
    if _SPACE_OR_ANGLE.search(text):
        raise MessageError(f"invalid address: {_describe(text)}")
    return None, _parse_addr_spec(text, text)


class _Strict(BaseModel):
    """Base for the message models: bad input raises MessageError, not ValidationError."""

    # base64 for bytes in JSON, so a message (attachments included) round-trips through
    # model_dump_json / model_validate_json: the outbox pattern stores messages that way.
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            error = MessageError(_validation_summary(exc))
        else:
            return
        raise error  # outside the except: the pydantic error holds every input value

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """Parse JSON (a stored or received message), raising MessageError on bad input.

        The error names each bad field and why, never the input itself: pydantic's own
        error would quote the whole body. Attachments given by ``path`` are refused here,
        since a path in stored or received JSON would read whatever file it names.
        """
        token = _FROM_JSON.set(True)
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            error = MessageError(_validation_summary(exc))
        finally:
            _FROM_JSON.reset(token)
        raise error  # outside the except, as above


class Address(_Strict):
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
            raise MessageError(_validation_summary(exc)) from None

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


# ------------------------------------------------------------------------- attachments


def safe_filename(name: str) -> str:
    """The base name of ``name``: no directories, no leading dots, within the length limit.

    A recipient's client that saves ``../../etc/passwd`` (or ``..\\..\\boot.ini``) under
    its download folder should find only ``passwd``; the reduced name is what is sent.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = base.strip().lstrip(".").rstrip(". ")  # Windows drops trailing dots/spaces
    if not base:
        raise MessageError(f"attachment filename has no usable base name: {_describe(name)}")
    return check_length(base, "attachment filename", MAX_FILENAME_CHARS)


class Attachment(_Strict):
    """A file to attach: bytes in memory or a path read once, at render time.

    ``inline=True`` with a ``content_id`` makes it a related part of the HTML body,
    referenced from the HTML as ``cid:<content_id>``.
    """

    content: bytes | None = Field(default=None, repr=False)
    path: Path | None = None
    filename: str | None = None
    content_type: str | None = None
    inline: bool = False
    content_id: str | None = None

    @field_validator("path")
    @classmethod
    def _no_path_from_json(cls, value: Path | None) -> Path | None:
        if value is not None and _FROM_JSON.get():
            raise MessageError(_PATH_FROM_JSON)
        return value

    @model_validator(mode="after")
    def _check(self) -> Attachment:
        if (self.content is None) == (self.path is None):
            raise MessageError("an attachment needs exactly one of content= or path=")
        if self.path is not None and not self.path.is_file():
            raise MessageError(f"attachment path is not a readable file: {self.path}")
        name = self.filename or (self.path.name if self.path is not None else None)
        if name is None:
            raise MessageError("an attachment given as bytes needs a filename")
        check_text(name, "attachment filename")
        name = safe_filename(name)
        object.__setattr__(self, "filename", name)
        ctype = self.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not _CONTENT_TYPE.match(ctype):
            raise MessageError(f"invalid attachment content type: {_describe(ctype)}")
        object.__setattr__(self, "content_type", ctype.lower())
        if self.content_id is not None:
            cid = self.content_id.strip("<>")
            check_text(cid, "content id")
            if not cid or any(c in cid for c in ' <>"\\') or not cid.isascii():
                raise MessageError(f"invalid content id: {_describe(self.content_id)}")
            object.__setattr__(self, "content_id", cid)
        elif self.inline:
            object.__setattr__(self, "content_id", f"{uuid.uuid4().hex}@mailer")
        return self

    def with_content(self) -> Attachment:
        """The same attachment with its bytes (a file given by path is read now)."""
        if self.path is None:
            return self
        return Attachment(
            content=self.data(), filename=self.filename, content_type=self.content_type,
            inline=self.inline, content_id=self.content_id,
        )  # fmt: skip

    def data(self) -> bytes:
        if self.content is not None:
            return self.content
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def maintype(self) -> str:
        return (self.content_type or "application/octet-stream").split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return (self.content_type or "application/octet-stream").split("/", 1)[1]


# ----------------------------------------------------------------------------- message


def _as_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str | Address | Mapping | tuple) and not (
        isinstance(value, tuple) and value and not isinstance(value[0], str | None)
    ):
        return [value]
    return value


class Envelope(_Strict):
    """The SMTP envelope when it differs from the headers (Nodemailer's ``envelope``):
    a bounce address (VERP), or recipients other than To/Cc/Bcc. Either may be left
    out: the message's own sender or recipients are used for it."""

    sender: Address | None = Field(default=None, alias="from")
    recipients: list[Address] | None = Field(default=None, alias="to")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @field_validator("recipients", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return None if value is None else _as_list(value)

    @model_validator(mode="after")
    def _not_empty(self) -> Envelope:
        if self.recipients is not None and not self.recipients:
            raise MessageError("envelope.recipients is empty: leave it out to use to/cc/bcc")
        return self


class Message(_Strict):
    """An email to send. Frozen: what was validated is what is sent.

    ``sender`` also accepts the alias ``from`` (``Message(**{"from": ...})``). The sender may
    be left out when the Mailer has ``defaults.sender``.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        populate_by_name=True,
        ser_json_bytes="base64",
        val_json_bytes="base64",
    )

    sender: Address | None = Field(default=None, alias="from")
    to: list[Address] = Field(default_factory=list)
    cc: list[Address] = Field(default_factory=list)
    bcc: list[Address] = Field(default_factory=list)
    reply_to: list[Address] = Field(default_factory=list)
    subject: str = ""
    text: str | None = None
    html: str | None = None
    attachments: list[Attachment] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, str] = Field(default_factory=dict)
    message_id: str | None = None
    #: DKIM signing for this message; wins over the provider's ``dkim``
    dkim: DKIMOptions | None = Field(default=None, repr=False)
    #: the SMTP envelope, when it differs from the headers (providers that cannot send
    #: one refuse the message rather than ignore it)
    envelope: Envelope | None = None
    #: per-provider options for this message, keyed by provider name or type: deep-merged
    #: into an HTTP provider's request body; for SMTP, overrides of its config for a
    #: one-off connection (see docs/configuration.md)
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict, repr=False)

    #: the rendering, made once: bytes, or with large attachments a streamed Rendering
    _rendered: bytes | _mime.Rendering | None = PrivateAttr(default=None)
    #: the Message-ID to be, shared with the copies with_defaults makes (see _MessageId)
    _id_cell: _IdCell | None = PrivateAttr(default=None)
    #: DKIM-Signature headers made for this message, by signing options (see _dkim)
    _signatures: dict[DKIMOptions, bytes] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # Field values only: whether one copy has been rendered yet does not matter.
        if not isinstance(other, Message):
            return NotImplemented
        if self.message_id != other.message_id:
            return False
        mine = {k: v for k, v in self.__dict__.items() if k != "message_id"}
        return mine == {k: v for k, v in other.__dict__.items() if k != "message_id"}

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def build(cls, data: Mapping[str, Any]) -> Message:
        """Construct from a mapping (as from JSON), raising MessageError on bad input."""
        return cls(**dict(data))

    # -- field validation ------------------------------------------------------------

    @field_validator("to", "cc", "bcc", "reply_to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)

    @field_validator("attachments", mode="before")
    @classmethod
    def _attachments(cls, value: Any) -> Any:
        items = _as_list(value) if not isinstance(value, list) else value
        out = []
        for item in items:
            if isinstance(item, str | Path):
                if _FROM_JSON.get():
                    raise MessageError(_PATH_FROM_JSON)
                out.append(Attachment(path=Path(item)))
            else:
                out.append(item)
        return out

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return check_length(check_text(value, "subject"), "subject")

    @field_validator("text", "html")
    @classmethod
    def _body(cls, value: str | None) -> str | None:
        # NUL is the one character no SMTP body may carry (RFC 5321 4.1.1.4, RFC 2045 2.7).
        if value is not None and "\x00" in value:
            raise MessageError("the body contains a NUL character")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        if len(value) > MAX_HEADERS:
            raise MessageError(f"{len(value)} custom headers; the limit is {MAX_HEADERS}")
        for name, text in value.items():
            if not HEADER_NAME.match(name):
                raise MessageError(f"invalid header name: {_describe(name)}")
            lower = name.lower()
            if lower in _RESERVED_HEADERS:
                raise MessageError(
                    f"header {name!r} is set from the message's own fields; use them instead"
                )
            if lower in _TRACE_HEADERS or lower.startswith(_TRACE_PREFIXES):
                raise MessageError(
                    f"header {name!r} is a trace or authentication header, which only the "
                    "servers a message passes through (or its DKIM signer: use the dkim "
                    "option) may add; a sender-supplied one is a forgery"
                )
            check_text(text, f"header {name!r}", allow_tab=True)
            check_length(text, f"header {name!r}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        for tag in value:
            check_text(tag, "tag")
            if not tag or len(tag) > 128:
                raise MessageError(f"tags must be 1 to 128 characters: {_describe(tag)}")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            check_text(key, "metadata key")
            check_text(text, f"metadata {key!r}")
        return value

    @field_validator("provider_options")
    @classmethod
    def _provider_options(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for key, options in value.items():
            check_text(key, "provider_options key")
            if not isinstance(options, dict):
                raise MessageError(f"provider_options[{key!r}] must be a mapping of options")
        return value

    @field_validator("message_id")
    @classmethod
    def _message_id(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_text(value, "message_id")
        core = value.strip().strip("<>")
        if core.count("@") != 1 or any(c in core for c in ' <>"\\') or not core.isascii():
            raise MessageError(f"invalid message_id: {_describe(value)}")
        return f"<{core}>"

    @model_validator(mode="after")
    def _complete(self) -> Message:
        if not (self.to or self.cc or self.bcc):
            raise MessageError("a message needs at least one recipient (to, cc or bcc)")
        if any(a.inline for a in self.attachments) and self.html is None:
            raise MessageError("inline attachments need an html body that refers to them")
        return self

    # -- derived values --------------------------------------------------------------

    def with_defaults(self, defaults: Mapping[str, Any] | MessageDefaults) -> Message:
        """Fill fields the caller left empty from the Mailer's defaults.

        Runs on every send, so it validates nothing itself: the defaults were validated
        once (``MessageDefaults``) and each field of this message when it was built, and
        filling an empty field cannot break a rule that spans fields (a default cc or bcc
        only adds recipients). What can, the merged headers' count, is checked here.
        Revalidating the whole copy cost about 20 us a send.
        """
        if not isinstance(defaults, MessageDefaults):
            defaults = MessageDefaults(defaults)
        updates: dict[str, Any] = {}
        for key, value in defaults.values.items():
            if key == "headers":
                merged = {**value, **self.headers}
                if merged != self.headers:
                    if len(merged) > MAX_HEADERS:
                        raise MessageError(
                            f"{len(merged)} headers with the Mailer's defaults; "
                            f"the limit is {MAX_HEADERS}"
                        )
                    updates["headers"] = merged
            elif not getattr(self, key, None) and value:
                updates[key] = list(value) if isinstance(value, list) else value  # unshared
        if not updates:
            return self  # the common case, on every send: no copy, the rendering is kept
        # model_copy keeps __dict__'s message_id as it is: None while nobody has read it
        # (reading self.message_id here would fix the id before the sender is known).
        filled = self.model_copy(update=updates)
        # A fresh private state: the original's rendering or signatures are not the copy's.
        filled.__pydantic_private__ = {
            name: attr.get_default() for name, attr in self.__private_attributes__.items()
        }
        if filled.__dict__["message_id"] is None:
            # One id for both: whichever is read first fixes it, with the filled-in
            # sender's domain unless the caller already read the original's.
            cell = _id_cell(self)
            if cell.domain is None and filled.sender is not None:
                cell.domain = filled.sender.domain
            filled.__pydantic_private__["_id_cell"] = cell
        return filled

    @field_serializer("message_id")
    def _dump_message_id(self, value: str | None) -> str:
        return self.message_id  # type: ignore[return-value]  # made when first read

    def with_content(self) -> Message:
        """A copy whose attachments hold their bytes: files given by path are read now.

        For storing a message (the outbox): what is sent later must not depend on a file
        that may change or vanish meanwhile. Returns the message itself when no attachment
        is given by path.
        """
        if all(a.path is None for a in self.attachments):
            return self
        attachments = [a.with_content() for a in self.attachments]
        data = self.model_dump(by_alias=False, exclude_defaults=True)
        data.update(attachments=attachments, message_id=self.message_id)
        return Message(**data)

    @property
    def envelope_sender(self) -> str:
        if self.envelope is not None and self.envelope.sender is not None:
            return self.envelope.sender.email
        if self.sender is None:
            raise MessageError("the message has no sender and the Mailer no default sender")
        return self.sender.email

    @property
    def smtputf8(self) -> bool:
        """Whether an address has a non-ASCII local part (EAI): SMTP needs SMTPUTF8.

        Such an address cannot be encoded (RFC 2047 covers display names, not addresses),
        so the headers carry it as UTF-8 (RFC 6532) and the server must offer SMTPUTF8.
        """
        if self.sender is not None and not self.sender.email.isascii():
            return True
        if any(not a.email.isascii() for a in (*self.to, *self.cc, *self.bcc, *self.reply_to)):
            return True
        envelope = self.envelope
        if envelope is None:
            return False
        chosen = [*([envelope.sender] if envelope.sender else []), *(envelope.recipients or [])]
        return any(not a.email.isascii() for a in chosen)

    @property
    def envelope_recipients(self) -> list[str]:
        """Every recipient once, in order: to, then cc, then bcc (or the envelope's)."""
        seen: dict[str, None] = {}
        envelope = self.envelope
        chosen = envelope.recipients if envelope is not None else None
        for addr in chosen if chosen is not None else (*self.to, *self.cc, *self.bcc):
            seen.setdefault(addr.email, None)
        return list(seen)

    # -- rendering -------------------------------------------------------------------

    def as_bytes(self) -> bytes:
        """The RFC 5322 message (CRLF line endings, no Bcc header), rendered once.

        A message with large attachments (see :meth:`render`) is joined anew on every
        call and not kept: providers that can stream use :meth:`render` instead.
        """
        private = self.__pydantic_private__
        assert private is not None
        data = private["_rendered"]  # the hot path: one dict look-up once rendered
        if type(data) is bytes:
            return data
        rendered = self.render()
        return rendered if isinstance(rendered, bytes) else rendered.join()

    @property
    def rendered_size(self) -> int:
        """Length of :meth:`as_bytes` in bytes, without joining a streamed rendering."""
        rendered = self.render()
        return len(rendered) if isinstance(rendered, bytes) else rendered.size

    def render(self) -> bytes | _mime.Rendering:
        """Render and check once; the bytes, or a :class:`Rendering` to stream.

        Attachments of at least ``_mime.STREAM_THRESHOLD`` bytes (1 MiB) make a
        Rendering: the headers and small parts rendered and checked now, the large
        attachments base64-encoded chunk by chunk as they are sent (a file by path is
        read again on each attempt and must not have changed). Everything else, i.e.
        nearly every message, is plain bytes, as fast as before.
        """
        # The private-attribute dict directly: pydantic's __getattr__ for private
        # attributes costs more than the rest of this method, and it runs on every send.
        private = self.__pydantic_private__
        assert private is not None
        data: bytes | _mime.Rendering | None = private["_rendered"]
        if data is None:
            with _RENDER_LOCK:  # two threads must not render (Date, boundary) differently
                data = private["_rendered"]
                if data is None:
                    data = private["_rendered"] = self._render()
        return data

    def _render(self) -> bytes | _mime.Rendering:
        if self.sender is None:
            raise MessageError("the message has no sender and the Mailer no default sender")
        date = format_datetime(_utcnow())
        fast = _mime.render(self, date)
        if fast is not None:
            segments, names = fast
            if len(segments) == 1:
                data = segments[0]
                assert isinstance(data, bytes)
                check_wire(data, names)
                return data
            for i, segment in enumerate(segments):
                if isinstance(segment, bytes):
                    check_wire(segment, names, head=i == 0)
            return _mime.Rendering(segments)
        return self._render_stdlib(date)

    def _render_stdlib(self, date: str) -> bytes:
        """The stdlib renderer: for what ``_mime`` leaves, and the tests' reference."""
        assert self.sender is not None
        policy = _POLICY_UTF8 if self.smtputf8 else _POLICY
        msg = EmailMessage(policy=policy)
        expected = ["from", "subject", "date", "message-id"]
        msg["From"] = self.sender.header_value()
        for field, header in (("to", "To"), ("cc", "Cc"), ("reply_to", "Reply-To")):
            addrs: list[Address] = getattr(self, field)
            if addrs:
                msg[header] = [a.header_value() for a in addrs]
                expected.append(header.lower())
        msg["Subject"] = self.subject
        msg["Date"] = date
        msg["Message-ID"] = self.message_id
        for name, value in self.headers.items():
            msg[name] = value
            expected.append(name.lower())
        self._add_body(msg)
        try:
            data = msg.as_bytes(policy=policy)
        except (ValueError, TypeError, UnicodeError) as exc:
            raise MessageError(f"cannot render message: {exc}") from exc
        check_wire(data, expected)
        return data

    def _add_body(self, msg: EmailMessage) -> None:
        text, html = self.text, self.html
        if text is None and html is None and not self.attachments:
            text = ""
        if text is not None:
            msg.set_content(text)
            if html is not None:
                msg.add_alternative(html, subtype="html")
        elif html is not None:
            msg.set_content(html, subtype="html")
        inline = [a for a in self.attachments if a.inline]
        if inline:
            html_part = msg.get_body(("html",))
            assert isinstance(html_part, EmailMessage)
            for att in inline:
                html_part.add_related(
                    att.data(), att.maintype, att.subtype,
                    cid=f"<{att.content_id}>", filename=att.filename, disposition="inline",
                )  # fmt: skip
        for att in self.attachments:
            if not att.inline:
                msg.add_attachment(att.data(), att.maintype, att.subtype, filename=att.filename)


class MessageDefaults:
    """A Mailer's ``defaults``, validated once when the Mailer is made.

    Validated as a message would validate them (a probe message carries them), so a bad
    default is a ConfigError at start-up, not a MessageError on every send, and
    ``Message.with_defaults`` can fill fields without validating again.
    """

    __slots__ = ("values",)

    _PROBE_RECIPIENT = "probe@example.invalid"

    def __init__(self, defaults: Mapping[str, Any]) -> None:
        raw = dict(defaults)
        if "from" in raw:
            raw["sender"] = raw.pop("from")
        probe = Message(**{"to": [self._PROBE_RECIPIENT], **raw})
        #: field name -> validated value (Address, list[Address], dict, list)
        self.values: dict[str, Any] = {key: getattr(probe, key) for key in raw}


class _IdCell:
    """A Message-ID not made yet: its domain, and the value once someone reads it."""

    __slots__ = ("domain", "value")

    def __init__(self, domain: str | None) -> None:
        self.domain = domain
        self.value: str | None = None


_ID_LOCK = threading.Lock()


def _id_cell(message: Message) -> _IdCell:
    private = message.__pydantic_private__
    assert private is not None
    cell: _IdCell | None = private["_id_cell"]
    if cell is None:
        with _ID_LOCK:
            cell = private["_id_cell"]
            if cell is None:
                sender = message.sender
                cell = private["_id_cell"] = _IdCell(sender.domain if sender else None)
    return cell


class _MessageId:
    """``Message.message_id``: made on first read, never changed after.

    A message left without a sender (the Mailer's ``defaults.sender`` fills it) used to get
    an id under ``mailer.invalid`` at construction, and every such message went out with
    it. Re-homing the id when the defaults were applied was rejected: a caller who read
    ``message.message_id`` before sending (an outbox, the demo) would then look for an id
    that never went out. Made lazily, the id is fixed by whoever reads it first: the
    renderer, after the defaults gave the copy a sender (the sender's domain), or the
    caller, before that (then ``mailer.invalid``, and it stays, since they saw it). The
    original and its with_defaults copy share one cell, so both always read the same id.

    A data descriptor, so it takes precedence over the instance ``__dict__`` where pydantic
    keeps the field (None until made, or the caller's own id).
    """

    def __get__(self, obj: Message | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value: str | None = obj.__dict__.get("message_id")
        if value is not None:
            return value
        cell = _id_cell(obj)
        with _ID_LOCK:
            if cell.value is None:
                cell.value = f"<{uuid.uuid4().hex}@{cell.domain or 'mailer.invalid'}>"
            value = cell.value
        obj.__dict__["message_id"] = value
        return value

    def __set__(self, obj: Message, value: str | None) -> None:
        obj.__dict__["message_id"] = value


type.__setattr__(Message, "message_id", _MessageId())


def _utcnow() -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time.time(), UTC)


_OVERLONG_LINE = re.compile(rb"(?m)^[^\r\n]{999}")  # anchored: linear, not quadratic
_LINE_START = re.compile(rb"(?m)^(?:([!-9;-~]+):|[ \t])")


def check_wire(data: bytes, expected_headers: Iterable[str], *, head: bool = True) -> None:
    """Last check on rendered bytes: CRLF only, no NUL, no long line, only our headers.

    ``head=False`` for a later segment of a streamed rendering (no header block in it).
    """
    crlf = data.count(b"\r\n")
    if data.count(b"\r") != crlf or data.count(b"\n") != crlf:
        raise MessageError("rendered message has a bare CR or LF (refusing to send it)")
    if b"\x00" in data:
        raise MessageError("rendered message contains NUL")
    if head:
        _check_head(data, expected_headers)
    if _OVERLONG_LINE.search(data):
        raise MessageError("rendered message has a line longer than 998 octets")


def _check_head(data: bytes, expected_headers: Iterable[str]) -> None:
    end = data.find(b"\r\n\r\n")  # no partition(): that would copy a large body
    if end < 0:
        raise MessageError("rendered message has no header/body separator")
    head = data[:end]
    allowed = {h.lower() for h in expected_headers}
    allowed |= {"mime-version", "content-type", "content-transfer-encoding"}
    seen: dict[str, int] = {}
    for line in head.split(b"\r\n"):
        if len(line) > 998:
            raise MessageError("rendered header line longer than 998 octets")
        m = _LINE_START.match(line)
        if m is None:
            raise MessageError(f"rendered header has an unexpected line: {line[:60]!r}")
        if m.group(1) is not None:
            name = m.group(1).decode("ascii").lower()
            if name not in allowed:
                raise MessageError(f"rendered message has an unexpected header {name!r}")
            seen[name] = seen.get(name, 0) + 1
    for name in ("from", "subject", "date", "message-id", "to", "cc", "reply-to"):
        if seen.get(name, 0) > 1:
            raise MessageError(f"rendered message has {name!r} more than once")


def _validation_summary(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"])
        text = str(err.get("msg", ""))
        text = text.removeprefix("Value error, ")
        # a nested model (an Address in ``to``) already summarised its own error
        text = text.removeprefix("invalid message: ").removeprefix("message: ")
        parts.append(f"{loc}: {text}" if loc else text)
    return "invalid message: " + "; ".join(parts)
