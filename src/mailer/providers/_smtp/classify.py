"""Every SMTP outcome, put into exactly one class of the error tree.

Pure functions: a reply (phase, code, text) or a foreign exception (aiosmtplib, ssl,
OSError) in, a DeliveryError out. The connection layer calls :func:`map_exception` at
its one boundary, so the rules live here, in one table, and are unit-tested without a
server.

The rules, and why:

* Anything before the message was sent that says "not now" (connect refused or timed
  out, no greeting, 421, any 4xx) is a TransientError: nothing was delivered, another
  provider may work.
* 5xx at AUTH (535, 5.7.x) is an AuthError: *this* provider's credentials are wrong.
  530 / 5.7.0 "authentication required" at MAIL or RCPT is one too.
* 5xx at MAIL, DATA or after the message is a PermanentError: the server looked at the
  message or its sender and said no; another provider would likely say the same.
* RCPT refusals are counted per recipient: some refused is a success with ``rejected``;
  all refused with 5xx is RecipientsRefused; all refused with any 4xx is
  RecipientsDeferred (transient, ``code`` the first 4xx). Both carry each address's reply.
* "452 too many recipients" (or the 552 that RFC 821 listed for it) is neither: the
  server wants the rest in another transaction (:func:`too_many_recipients`).
* No definitive answer after the final "." (timeout, connection lost) is
  DeliveryUncertain: the server may have queued the message.
* TLS failures name the TLS problem (certificate, name, or a TLS/plaintext port mix-up)
  and are transient: the server or its certificate may be fixed, and another provider
  may work meanwhile. They never fall back to plaintext.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypedDict, TypeVar

from aiosmtplib import errors as smtp_errors

from ..._errors import (
    AuthError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    PermanentError,
    RecipientsDeferred,
    RecipientsRefused,
    TransientError,
)
from ..._text import REASON, clip
from ._proxy import ProxyFailure

_E = TypeVar("_E", bound=BaseException)

__all__ = [
    "Endpoint",
    "Phase",
    "classify_recipients",
    "classify_reply",
    "enhanced_status",
    "map_exception",
    "too_many_recipients",
]


class Phase(StrEnum):
    """Where in the session something happened; it decides what an outcome means."""

    CONNECT = "connect"
    TLS = "TLS handshake"
    GREETING = "greeting"
    EHLO = "EHLO"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"
    #: the payload and its final "." were written; waiting for the verdict
    MESSAGE = "end of data"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What error messages need to say where: never credentials."""

    host: str
    port: int
    secure: bool
    tls_name: str
    #: the proxy connections go through, credentials removed (``ProxyURL.shown``)
    via: str | None = None

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def route(self) -> str:
        """``where``, and the proxy when there is one: for connect errors."""
        return self.where if self.via is None else f"{self.where} through proxy {self.via}"


_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")
# OpenSSL reasons that mean "the other side does not speak TLS here".
_PLAINTEXT_PEER = (
    "WRONG_VERSION_NUMBER",
    "RECORD_LAYER_FAILURE",
    "PACKET_LENGTH_TOO_LONG",
    "UNKNOWN_PROTOCOL",
    "HTTP_REQUEST",
    "record layer failure",
    "wrong version number",
)


def enhanced_status(text: str) -> tuple[int, int, int] | None:
    """The RFC 3463 enhanced status code at the start of a reply text, if any."""
    m = _ENHANCED.match(text.strip())
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _reply(code: int, text: str) -> str:
    return f"{code} {text}".strip() if text else str(code)


def classify_reply(phase: Phase, code: int, text: str, endpoint: Endpoint) -> DeliveryError:
    """The error for an unexpected reply ``code text`` to the command of ``phase``."""
    reply = _reply(code, text)
    status = enhanced_status(text)
    if code == 421:
        return TransientError(
            f"server {endpoint.where} is closing the connection at {phase}: {reply}",
            code=code,
            response=text,
        )
    if phase is Phase.GREETING:
        return TransientError(
            f"server {endpoint.where} refused the session: {reply}", code=code, response=text
        )
    if phase is Phase.AUTH:
        if 400 <= code < 500:
            return TransientError(
                f"authentication temporarily failed: {reply}", code=code, response=text
            )
        return AuthError(f"authentication failed: {reply}", code=code, response=text)
    if phase in (Phase.MAIL, Phase.RCPT) and (
        code == 530 or (status is not None and status[0] == 5 and status[1:] == (7, 0))
    ):
        return AuthError(
            f"server {endpoint.where} requires authentication at {phase}: {reply} (configure auth)",
            code=code,
            response=text,
        )
    if phase is Phase.MESSAGE:
        if 400 <= code < 500:
            return TransientError(
                f"message not accepted, try later: {reply}", code=code, response=text
            )
        if 500 <= code < 600:
            return PermanentError(f"message refused: {reply}", code=code, response=text)
        return DeliveryUncertain(
            f"unexpected reply after the message was sent: {reply}; it may have been delivered",
            code=code,
            response=text,
        )
    if phase in (Phase.MAIL, Phase.DATA, Phase.RCPT) and 500 <= code < 600:
        return PermanentError(f"{phase} refused: {reply}", code=code, response=text)
    if 400 <= code < 500:
        return TransientError(f"{phase} temporarily refused: {reply}", code=code, response=text)
    # 5xx at EHLO/STARTTLS/RSET/NOOP and odd codes: this server will not serve us now.
    return TransientError(f"{phase} refused by {endpoint.where}: {reply}", code=code, response=text)


def too_many_recipients(code: int, text: str) -> bool:
    """Whether a RCPT reply means "no more recipients in this transaction".

    RFC 5321 section 4.5.3.1.10: a server out of room for recipients answers 452, and
    the client sends the rest in a later transaction; clients should read the 552 that
    RFC 821 listed for it the same way. A 452 or 552 naming another cause ("4.2.2
    mailbox full", "4.3.1 insufficient storage") is an ordinary refusal of one address.
    """
    if code not in (452, 552):
        return False
    status = enhanced_status(text)
    if status is not None:
        return status[1:] == (5, 3)
    return code == 452 or "too many recipients" in text.lower()


def classify_recipients(
    accepted: list[str], refused: Mapping[str, tuple[int, str]]
) -> DeliveryError | None:
    """None while at least one recipient was accepted; the error when none was.

    Temporary when any refusal is (a 4xx, or "too many recipients"): nothing was
    delivered, and those recipients may be taken later. Its ``code`` is then the first
    temporary reply's, never a 5xx that came before it.
    """
    if accepted or not refused:
        return None
    replies = {addr: _reply(code, text) for addr, (code, text) in refused.items()}
    summary = "; ".join(f"{a}: {r}" for a, r in list(replies.items())[:5])
    if len(replies) > 5:
        summary += f"; and {len(replies) - 5} more"
    temporary = [
        (code, text)
        for code, text in refused.values()
        if 400 <= code < 500 or too_many_recipients(code, text)
    ]
    if temporary:
        code, text = next(((c, t) for c, t in temporary if c < 500), temporary[0])
        return RecipientsDeferred(
            f"every recipient was refused, some temporarily: {summary}",
            refused=replies,
            code=code,
            response=text,
        )
    first_code, first_text = next(iter(refused.values()))
    return RecipientsRefused(
        f"every recipient was refused: {summary}",
        refused=replies,
        code=first_code,
        response=first_text,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _find(exc: BaseException, kind: type[_E]) -> _E | None:
    for item in _chain(exc):
        if isinstance(item, kind):
            return item
    return None


class _Flags(TypedDict):
    retry_here: bool
    timed_out: bool


@dataclass(frozen=True, slots=True)
class _Verdict:
    """What :func:`map_exception` read from the exception chain, for the constructors."""

    retry_here: bool
    timed_out: bool

    def transient(self) -> _Flags:
        return {"retry_here": self.retry_here, "timed_out": self.timed_out}

    def uncertain(self) -> _Flags:
        # No answer after the final "." within the timeout is a slow call too, as HTTP's
        # post-body timeout is (providers/http/transport.py): the breaker opens on the
        # first, so the sends after it go to the next provider at once instead of each
        # waiting out socket_timeout (issue 21). A dropped connection is not a hang.
        return {"retry_here": self.retry_here, "timed_out": self.timed_out}


def _ssl_error(exc: ssl.SSLError, endpoint: Endpoint, verdict: _Verdict) -> DeliveryError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return TransientError(
            f"TLS certificate verification failed for {endpoint.tls_name!r} at "
            f"{endpoint.where}: {detail} (for a private CA set tls.ca_file; when the "
            "certificate names another host set tls.servername)",
            **verdict.transient(),
        )
    why = getattr(exc, "reason", None) or exc
    reason = f"{why} {exc}"
    if any(marker in reason for marker in _PLAINTEXT_PEER):
        if endpoint.secure:
            return TransientError(
                f"TLS handshake with {endpoint.where} failed: the server answered in "
                f"plaintext, so port {endpoint.port} expects STARTTLS or plaintext: set "
                "secure=False (implicit TLS is usually port 465)",
                **verdict.transient(),
            )
        return TransientError(
            f"TLS handshake with {endpoint.where} failed after STARTTLS: the server did "
            f"not speak TLS ({why})",
            **verdict.transient(),
        )
    return TransientError(f"TLS error with {endpoint.where}: {why}", **verdict.transient())


def _proxy_error(failure: ProxyFailure, endpoint: Endpoint, verdict: _Verdict) -> DeliveryError:
    """The proxy did not connect us. A proxy that is down, or that could not reach the
    server, may heal in a retry's backoff; refused credentials or a proxy that speaks
    another protocol do not."""
    proxy, detail, where = failure.proxy.shown, failure.detail, endpoint.where
    if failure.kind == "unreachable":
        return TransientError(
            f"cannot connect to proxy {proxy} (for {where}): {detail}; is the proxy up, "
            "and is this its port?",
            **verdict.transient(),
        )
    if failure.kind == "rejected":
        return TransientError(
            f"proxy {proxy} could not connect to {where}: {detail}", **verdict.transient()
        )
    if failure.kind == "auth":
        return AuthError(
            f"proxy {proxy} refused authentication (for {where}): {detail}; check the user "
            "and password in the proxy URL",
            retry_here=False,
            timed_out=verdict.timed_out,
        )
    return TransientError(
        f"proxy {proxy} did not answer as a {failure.proxy.scheme}:// proxy (for "
        f"{where}): {detail}; check the proxy URL's scheme and port",
        retry_here=False,
        timed_out=verdict.timed_out,
    )


def map_exception(
    exc: BaseException,
    phase: Phase,
    endpoint: Endpoint,
    *,
    timeout: float | None = None,
    timeout_name: str = "socket_timeout",
) -> DeliveryError | MessageError:
    """The one mapping of foreign exceptions. ``timeout`` is the one that was in force.

    Also says whether a same-provider retry can help: not after a timeout (a hang does
    not clear in the 200 ms of a retry's backoff, and the retry doubles the wait), a TLS
    or certificate error, or a DNS failure. Both verdicts go to the error's constructor.
    """
    timed_out = _find(exc, TimeoutError) is not None
    heals = not (
        timed_out or _find(exc, socket.gaierror) is not None or _tls_setup_error(exc, phase)
    )
    verdict = _Verdict(retry_here=heals, timed_out=timed_out)
    return _map_exception(
        exc, phase, endpoint, timeout=timeout, timeout_name=timeout_name, verdict=verdict
    )


def _tls_setup_error(exc: BaseException, phase: Phase) -> bool:
    """A certificate or handshake failure (a setting, not a blip). A TLS session that
    breaks later (an EOF mid-session) is a dropped connection like any other."""
    if _find(exc, ssl.SSLCertVerificationError) is not None:
        return True
    setup = phase in (Phase.CONNECT, Phase.GREETING, Phase.STARTTLS, Phase.TLS)
    return setup and _find(exc, ssl.SSLError) is not None


def _map_exception(
    exc: BaseException,
    phase: Phase,
    endpoint: Endpoint,
    *,
    timeout: float | None,
    timeout_name: str,
    verdict: _Verdict,
) -> DeliveryError | MessageError:
    if isinstance(exc, DeliveryError | MessageError):
        return exc
    if isinstance(exc, ValueError) and "control character" in str(exc):
        return MessageError(f"refusing to send a command with a control character at {phase}")
    response = _find(exc, smtp_errors.SMTPResponseException)
    if response is not None and response.code > 0:
        return classify_reply(phase, response.code, response.message, endpoint)
    secs = f"{timeout:.3g}s" if timeout is not None else "the timeout"
    timed_out = _find(exc, TimeoutError) is not None
    ssl_exc = _find(exc, ssl.SSLError)
    if phase is Phase.MESSAGE:
        if timed_out:
            return DeliveryUncertain(
                f"no reply within {secs} ({timeout_name}) after the message was sent "
                "(final '.'): it may have been delivered",
                **verdict.uncertain(),
            )
        return DeliveryUncertain(
            f"connection to {endpoint.where} lost after the message was sent (final '.'), "
            "before the server replied: it may have been delivered",
            **verdict.uncertain(),
        )
    if ssl_exc is not None:
        return _ssl_error(ssl_exc, endpoint, verdict)
    if phase is Phase.CONNECT:
        proxied = _find(exc, ProxyFailure)
        if proxied is not None:
            return _proxy_error(proxied, endpoint, verdict)
        if timed_out:
            return TransientError(
                f"timed out after {secs} connecting to {endpoint.route} ({timeout_name})",
                **verdict.transient(),
            )
        if _find(exc, ConnectionRefusedError) is not None:
            return TransientError(
                f"connection refused by {endpoint.where}: is the server up, and is this the "
                "right port?",
                **verdict.transient(),
            )
        gai = _find(exc, socket.gaierror)
        if gai is not None:
            return TransientError(
                f"cannot resolve host {endpoint.host!r}: {gai.strerror}", **verdict.transient()
            )
        return TransientError(f"cannot connect to {endpoint.route}: {exc}", **verdict.transient())
    if phase is Phase.GREETING and timed_out:
        if endpoint.secure and "connecting" in str(exc):
            return TransientError(
                f"timed out after {secs} in the TLS handshake with {endpoint.where} "
                f"({timeout_name})",
                **verdict.transient(),
            )
        if not endpoint.secure and endpoint.port == 465:
            return TransientError(
                f"port 465 expects implicit TLS: set secure=True (no greeting from "
                f"{endpoint.where} within {secs})",
                **verdict.transient(),
            )
        hint = (
            ""
            if endpoint.secure
            else ("; if this port expects implicit TLS (usually 465), set secure=True")
        )
        return TransientError(
            f"timed out after {secs} waiting for the greeting from {endpoint.where} "
            f"({timeout_name}){hint}",
            **verdict.transient(),
        )
    if phase in (Phase.TLS, Phase.STARTTLS) and timed_out:
        return TransientError(
            f"timed out after {secs} in the TLS handshake with {endpoint.where} ({timeout_name})",
            **verdict.transient(),
        )
    if timed_out:
        return TransientError(
            f"timed out after {secs} waiting for the reply to {phase} from "
            f"{endpoint.where} ({timeout_name})",
            **verdict.transient(),
        )
    if response is not None:  # code -1: a reply we could not parse
        return TransientError(
            f"malformed reply from {endpoint.where} at {phase}: {clip(response.message, REASON)}",
            **verdict.transient(),
        )
    if isinstance(exc, smtp_errors.SMTPException | OSError):
        return TransientError(
            f"connection to {endpoint.where} lost at {phase}", **verdict.transient()
        )
    return TransientError(
        f"{phase} failed with {endpoint.where}: {type(exc).__name__}", **verdict.transient()
    )
