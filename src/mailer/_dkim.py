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
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio
import idna
from pydantic import BaseModel, ConfigDict, PrivateAttr, SecretStr, field_validator, model_validator

if TYPE_CHECKING:
    from .message import Message

__all__ = ["DKIMOptions", "choose", "sign", "signature"]

_SELECTOR_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")
_LOCK = threading.Lock()
# A message to sign when the options are built: a key that cannot sign fails the config,
# not the first send.
_PROBE = b"From: probe@example.invalid\r\nSubject: probe\r\n\r\nprobe\r\n"


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
        from ._options import Alias, normalize_options

        aliases = {"domainName": Alias("domain"), "keySelector": Alias("selector"),
                   "privateKey": Alias("private_key")}  # fmt: skip
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
        from .message import HEADER_NAME  # the one header-name rule (a cycle at import)

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
    try:
        import dkim
    except ImportError:  # pragma: no cover - the dkim extra is part of dev
        raise ValueError("DKIM signing needs dkimpy: pip install 'mailer-failover[dkim]'") from None
    try:
        header: bytes = dkim.sign(
            data,
            options.selector.encode("ascii"),
            options.domain.encode("ascii"),
            options._key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=options.algorithm.encode("ascii"),
            include_headers=[h.encode("ascii") for h in options.headers]
            if options.headers is not None
            else None,
        )
    except Exception as exc:  # dkimpy's KeyFormatError, ParameterError, NaCl errors...
        # dkimpy's reasons name the format problem ("Private key not found"), never the
        # key; cut to one short line all the same
        reason = (str(exc).splitlines() or [""])[0][:120]
        raise ValueError(
            f"{what} cannot sign with {options.algorithm}: {type(exc).__name__}"
            + (f" ({reason})" if reason else "")
        ) from None
    return header


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
        header = _sign(message.as_bytes(), options)
    except ValueError as exc:
        from .errors import MessageError

        raise MessageError(str(exc)) from None
    if not header.endswith(b"\r\n"):
        header += b"\r\n"
    with _LOCK:
        return cache.setdefault(options, header)


async def sign(message: Message, options: DKIMOptions) -> bytes:
    """:func:`signature`, run in a worker thread unless it is already made."""
    found = _cache(message).get(options)
    if found is not None:
        return found
    return await anyio.to_thread.run_sync(signature, message, options)
