"""DKIM signing (RFC 6376, RFC 8463) with dkimpy: once per message, off the event loop.

Where the signature is made decides whether it survives failover. It is made from the
rendered bytes (which are themselves made once per message) and kept on the message,
keyed by the signing options, so every attempt on every provider that sends raw MIME
(SMTP, SES raw, file, memory) sends the very same signed bytes; a re-signature would
carry a new ``t=`` and differ. Providers whose API rebuilds the MIME from JSON cannot
carry a signature over bytes they do not send, so they refuse a message that asks for
one (:meth:`mailer.providers.http.HTTPProvider.unsupported`).

Per-message options win over the provider's, as in Nodemailer. Signing (a body hash
over the whole message, an RSA or ed25519 signature) runs in a worker thread.

The body hash is ours, not dkimpy's: dkimpy canonicalizes the whole body with ``re.sub``
in one call, which holds the GIL (0.5 s for 10 MiB: a worker thread alone does not keep
the event loop free) and needs the whole message in memory. :class:`RelaxedBodyHash`
does RFC 6376 3.4.4 chunk by chunk (a base64 chunk has no whitespace to compress, so
it goes straight to hashlib, which releases the GIL), over a streamed rendering's
chunks as they are encoded. dkimpy then signs only the header block with that ``bh=``
(``DKIM.gen_header``, the same code its ``sign`` ends with), and verifies in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import idna
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr, field_validator, model_validator

from .._errors import MessageError
from .._options import Alias, normalize_options
from .._text import REASON, clip
from ._checks import HEADER_NAME

if TYPE_CHECKING:
    from . import Message

__all__ = ["DKIMOptions", "RelaxedBodyHash", "choose", "sign", "signature"]

_SELECTOR_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_LOCK = threading.Lock()
# A message to sign when the options are built: a key that cannot sign fails the config,
# not the first send.
_PROBE = b"From: probe@example.invalid\r\nSubject: probe\r\n\r\nprobe\r\n"
_TRAILING_WSP = re.compile(rb"[\t ]+\r\n")
_WSP = re.compile(rb"[\t ]+")


class RelaxedBodyHash:
    """SHA-256 of the relaxed canonical body (RFC 6376 3.4.4), fed in chunks of any size.

    Per line: runs of WSP become one space, WSP at the end of a line goes, and empty
    lines at the end of the body are ignored (so they are held back, as a count, until a
    non-empty line follows). Only complete lines are canonicalized; the rest of a chunk
    waits for the next. A chunk without space or tab (base64) is hashed as it is.
    """

    __slots__ = ("_blank", "_hash", "_tail")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._tail = b""
        self._blank = 0  # empty lines seen and not yet hashed

    def update(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        cut = data.rfind(b"\r\n")
        if cut < 0:
            self._tail = data
            return
        self._tail = data[cut + 2 :]
        self._lines(data[: cut + 2] if self._tail else data)

    def _lines(self, block: bytes) -> None:
        """Complete lines, each ending with CRLF (the wire check refused bare CR or LF)."""
        if b" " in block or b"\t" in block:
            block = _WSP.sub(b" ", _TRAILING_WSP.sub(b"\r\n", block))
        text = block.rstrip(b"\r\n")
        if not text:
            self._blank += len(block) // 2
            return
        if self._blank:
            self._hash.update(b"\r\n" * self._blank)
        self._hash.update(text)
        self._hash.update(b"\r\n")
        self._blank = (len(block) - len(text)) // 2 - 1

    def digest(self) -> bytes:
        if self._tail:  # a last line without CRLF: compressed (dkimpy's order), ended
            line, self._tail = _WSP.sub(b" ", self._tail), b""
            if self._blank:
                self._hash.update(b"\r\n" * self._blank)
            self._hash.update(line + b"\r\n")
            self._blank = 0
        return self._hash.digest()


def body_hash(chunks: Iterable[bytes]) -> bytes:
    """``bh=``: the relaxed body hash of the body given in chunks."""
    hasher = RelaxedBodyHash()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.digest()


class DKIMOptions(BaseModel):
    """``dkim = {domain, selector, private_key | private_key_file, headers?, algorithm}``.

    ``private_key``: PEM (RSA, PKCS#1 or PKCS#8) for rsa-sha256; the base64 32-byte seed
    for ed25519-sha256 (what ``dknewkey --ktype ed25519`` writes). ``headers``: the
    header fields to sign (``from`` is required); by default dkimpy's RFC 6376 list,
    with From signed twice so that no second From can be added.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str
    selector: str
    private_key: SecretStr | None = None
    private_key_file: Path | None = None
    headers: tuple[str, ...] | None = None
    algorithm: Literal["rsa-sha256", "ed25519-sha256"] = "rsa-sha256"

    _key: bytes = PrivateAttr(default=b"")

    @model_validator(mode="before")
    @classmethod
    def _nodemailer_names(cls, data: Any) -> Any:
        """Nodemailer's ``dkim`` block (``domainName``, ``keySelector``, ``privateKey``)
        pasted as is: renamed like the rest of the seeds' vocabulary."""
        aliases = {
            "domainName": Alias("domain"),
            "keySelector": Alias("selector"),
            "privateKey": Alias("private_key"),
        }
        return normalize_options(data, aliases=aliases)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        try:
            return idna.encode(value.rstrip("."), uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise ValueError(f"dkim.domain is not a valid domain name ({exc})") from None

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        if not all(_SELECTOR_LABEL.match(label) for label in value.split(".")):
            raise ValueError("dkim.selector must be DNS labels (letters, digits, - and _)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        names = tuple(h.strip().lower() for h in value)
        if not all(HEADER_NAME.match(h) for h in names):
            raise ValueError("dkim.headers must be header field names")
        if "from" not in names:
            raise ValueError("dkim.headers must include from (RFC 6376 5.4)")
        return names

    @model_validator(mode="after")
    def _load_key(self) -> DKIMOptions:
        if (self.private_key is None) == (self.private_key_file is None):
            raise ValueError("dkim needs exactly one of private_key or private_key_file")
        if self.private_key is not None:
            key = self.private_key.get_secret_value().encode("ascii", "replace")
        else:
            assert self.private_key_file is not None
            try:
                key = self.private_key_file.read_bytes()
            except OSError as exc:
                raise ValueError(
                    f"dkim.private_key_file {str(self.private_key_file)!r} cannot be read: "
                    f"{exc.strerror}"
                ) from None
        self._key = key.strip() + (b"\n" if self.algorithm == "rsa-sha256" else b"")
        _sign(_PROBE, self, what="dkim.private_key")
        return self

    def __hash__(self) -> int:  # a cache key: the key material is part of the identity
        return hash((self.domain, self.selector, self.headers, self.algorithm, self._key))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DKIMOptions):
            return NotImplemented
        return hash(self) == hash(other) and self._key == other._key


def _sign(data: bytes, options: DKIMOptions, *, what: str = "dkim") -> bytes:
    """Sign a whole message held in memory (the key probe; the tests' reference)."""
    end = data.find(b"\r\n\r\n") + 4
    head = data[:end] if end >= 4 else data + b"\r\n"
    return _sign_head(head, body_hash([data[end:]] if end >= 4 else []), options, what=what)


def _sign_head(head: bytes, bh: bytes, options: DKIMOptions, *, what: str = "dkim") -> bytes:
    """The ``DKIM-Signature:`` header for the header block ``head`` and body hash ``bh``.

    What ``dkim.DKIM.sign`` does after hashing the body, with our ``bh``: the same
    fields, the same folding, ``gen_header`` for the header hash and the signature.
    """
    try:
        import dkim
        from dkim.crypto import parse_pem_private_key
    except ImportError:  # pragma: no cover - the dkim extra is part of dev
        raise ValueError("DKIM signing needs dkimpy: pip install 'mailer-failover[dkim]'") from None
    algorithm = options.algorithm.encode("ascii")
    domain = options.domain.encode("ascii")
    try:
        signer = dkim.DKIM(head)
        signer.signature_algorithm = algorithm
        signer.hasher = hashlib.sha256
        pk: Any
        if options.algorithm == "rsa-sha256":
            pk = parse_pem_private_key(options._key)
        else:
            import nacl.encoding
            import nacl.signing

            pk = nacl.signing.SigningKey(options._key, encoder=nacl.encoding.Base64Encoder)
        if options.headers is not None:
            include = tuple(h.encode("ascii") for h in options.headers)
        else:
            include = tuple(h.lower() for h in signer.default_sign_headers())
        # RFC 8058 section 4: both one-click headers must be covered by the signature;
        # dkimpy's default list has List-Unsubscribe but not List-Unsubscribe-Post
        present = {line.split(b":", 1)[0].strip().lower() for line in head.split(b"\r\n")}
        for name in (b"list-unsubscribe", b"list-unsubscribe-post"):
            if name in present and name not in {h.lower() for h in include}:
                include += (name,)
        signer.include_headers = include
        policy = dkim.CanonicalizationPolicy.from_c_value(b"relaxed/relaxed")
        fields = [
            (b"v", b"1"),
            (b"a", algorithm),
            (b"c", policy.to_c_value()),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", options.selector.encode("ascii")),
            (b"t", str(int(time.time())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(bh)),
            (b"b", b"0" * 60),  # dkimpy's trick: b= folds onto its own line
        ]
        value: bytes = signer.gen_header(fields, include, policy, b"DKIM-Signature", pk)
    except Exception as exc:  # dkimpy's KeyFormatError, ParameterError, NaCl errors...
        # dkimpy's reasons name the format problem ("Private key not found"), never the
        # key; cut to one short line all the same
        reason = clip((str(exc).splitlines() or [""])[0], REASON)
        raise ValueError(
            f"{what} cannot sign with {options.algorithm}: {type(exc).__name__}"
            + (f" ({reason})" if reason else "")
        ) from None
    return b"DKIM-Signature: " + value


def choose(message: Message, provider: DKIMOptions | None) -> DKIMOptions | None:
    """The options in effect: the message's own, else the provider's."""
    return message.dkim if message.dkim is not None else provider


def _cache(message: Message) -> dict[DKIMOptions, bytes]:
    private = message.__pydantic_private__
    assert private is not None
    cache: dict[DKIMOptions, bytes] | None = private["_signatures"]
    if cache is None:
        with _LOCK:
            cache = private["_signatures"]
            if cache is None:
                cache = private["_signatures"] = {}
    return cache


def signature(message: Message, options: DKIMOptions) -> bytes:
    """The ``DKIM-Signature:`` header (CRLF-terminated) for the message, made once.

    The first signature made for these options is kept; a concurrent second one (two
    attempts racing) is discarded, so every attempt sends the same bytes.
    """
    cache = _cache(message)
    found = cache.get(options)
    if found is not None:
        return found
    try:
        header = _sign_rendered(message, options)
    except ValueError as exc:
        raise MessageError(str(exc)) from None
    if not header.endswith(b"\r\n"):
        header += b"\r\n"
    with _LOCK:
        return cache.setdefault(options, header)


def _sign_rendered(message: Message, options: DKIMOptions) -> bytes:
    """Sign the message's rendering; a streamed one is read (and encoded) once for ``bh``."""
    rendered = message.render()
    if isinstance(rendered, bytes):
        return _sign(rendered, options)
    first = rendered.pieces[0]
    assert isinstance(first, bytes)
    end = first.find(b"\r\n\r\n") + 4
    assert end >= 4  # the renderer writes the whole header block into the first segment
    chunks = rendered.chunks()
    next(chunks)  # the first segment, split here instead
    bh = body_hash(_chain(first[end:], chunks))
    return _sign_head(first[:end], bh, options)


def _chain(first: bytes, rest: Iterable[bytes]) -> Iterable[bytes]:
    yield first
    yield from rest


async def sign(message: Message, options: DKIMOptions) -> bytes:
    """:func:`signature`, run in a worker thread unless it is already made."""
    found = _cache(message).get(options)
    if found is not None:
        return found
    return await anyio.to_thread.run_sync(signature, message, options)
