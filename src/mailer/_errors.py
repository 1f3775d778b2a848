"""The exception tree, and the one rule that matters: what may be failed over.

::

    MailerError
    ├── ConfigError               bad config; raised at build time (or, for an event loop a
    │                             provider cannot run on, before its first I/O); never failed over
    ├── MessageError(ValueError)  bad message (CRLF in a header, bad address); before any I/O
    └── DeliveryError             .provider, .code (SMTP reply or HTTP status), .response
        ├── TransientError        not accepted; this provider may work later -> fail over
        │   ├── RateLimited       .retry_after seconds -> fail over, provider rests that long
        │   └── RecipientsDeferred .refused {address: reply}: none accepted, some only for now
        ├── UnsupportedFeature    this provider cannot carry the message as it is (also a
        │                         MessageError) -> fail over, health untouched; raised
        │                         when no provider can
        ├── AuthError             credentials refused -> fail over, provider rests long
        ├── PermanentError        fails on any provider (5.1.x bad mailbox, 4xx validation)
        │   ├── RecipientsRefused .refused {address: reply}
        │   └── RecipientsSuppressed .suppressed {address: reason}: on the suppression
        │                         list; raised before any I/O, no provider tried
        ├── DeliveryUncertain     request or final "." sent, no definitive answer
        └── AllProvidersFailed    .errors per provider; .possibly_delivered; .message

Why the classes are split this way: the Mailer decides to fail over from the class alone.
Failing over after a *permanent* error would mark healthy providers dead for a bad address
(Symfony's failover does this); failing over after an *uncertain* one may deliver twice.
So each provider's job is to put every outcome it sees into exactly one of these classes,
at exactly one boundary where foreign exceptions (aiosmtplib, httpx, ssl) are mapped.

Secrets never appear here: errors carry the provider's reply text, never a credential.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._message import Message
    from ._result import Attempt

__all__ = [
    "AllProvidersFailed",
    "AuthError",
    "ConfigError",
    "DeliveryError",
    "DeliveryUncertain",
    "MailerError",
    "MessageError",
    "PermanentError",
    "RateLimited",
    "RecipientsDeferred",
    "RecipientsRefused",
    "RecipientsSuppressed",
    "TransientError",
    "UnsupportedFeature",
    "possibly_delivered",
]


class MailerError(Exception):
    """Base of every error this library raises on purpose.

    Every one pickles with its fields (a Celery or RQ result carries it to another
    process): the default ``Exception`` pickling calls ``cls(*args)``, which the classes
    with keyword-only fields (``refused``, ``errors``, ...) cannot take, so an error is
    rebuilt without its constructor, from its ``args`` and its attributes. What it
    carries is only what it shows (provider replies, never a credential), so pickling
    reveals nothing ``str()`` and ``repr()`` do not.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args), self.__dict__ or None)


def _rebuild(cls: type[MailerError], args: tuple[Any, ...]) -> MailerError:
    """An error of class ``cls`` with ``args``, its constructor not run (its attributes
    follow from the pickle's state)."""
    error = cls.__new__(cls)
    error.args = args
    return error


class ConfigError(MailerError):
    """The configuration cannot work. Raised when the Mailer or a provider is built, or
    (a provider on an event loop it cannot run on) before the provider's first I/O."""


class MessageError(MailerError, ValueError):
    """The message is unsafe or incomplete. Raised before any byte leaves the process."""


class DeliveryError(MailerError):
    """A provider did not (certainly) deliver the message.

    ``code`` is the SMTP reply code or HTTP status when there was one; ``response`` is the
    provider's own text (SMTP reply, HTTP body), kept so that operators can see *why*.
    """

    #: whether the Mailer may try the next provider after this error
    failover: bool = False
    # The three judgements below are made where the error is raised, by whoever saw what
    # happened, and given to the constructor (a class sets its own default): an error is
    # complete when it is built, so no later layer rewrites what an earlier one found.

    #: whether a retry on the same provider within seconds can help. False for what does
    #: not heal that fast: timeouts and hangs, TLS and certificate errors, a TLS policy
    #: refusal, a TLS/plaintext port mix-up, a DNS failure.
    retry_here: bool = True
    #: the provider did not answer in time (a hang, not a refusal): such a slow call opens
    #: the provider's breaker at once, for every send.
    timed_out: bool = False
    #: the error says nothing about the provider's health (it was never asked, or we were
    #: only queued behind its other sends): its breaker records no verdict.
    no_verdict: bool = False

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        code: int | None = None,
        response: str | None = None,
        retry_here: bool | None = None,
        timed_out: bool | None = None,
        no_verdict: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.code = code
        self.response = response
        # Only when given: the class attribute stays the default for everyone else.
        if retry_here is not None:
            self.retry_here = retry_here
        if timed_out is not None:
            self.timed_out = timed_out
        if no_verdict is not None:
            self.no_verdict = no_verdict
        #: the attempts the Mailer made before this error reached the caller
        self.attempts: list[Attempt] = []

    def __str__(self) -> str:
        text = super().__str__()
        prefix = f"[{self.provider}] " if self.provider else ""
        return f"{prefix}{text}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({super().__str__()!r}, provider={self.provider!r}, "
            f"code={self.code!r})"
        )


class TransientError(DeliveryError):
    """Not accepted, and nothing was delivered: another provider (or later) may work."""

    failover = True


class RateLimited(TransientError):
    """The provider is throttling us. ``retry_after`` is how long it asked us to rest."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class RecipientsDeferred(TransientError):
    """Every recipient was refused, at least one only for now (4xx, or "too many
    recipients"). ``code`` is a temporary one; ``refused`` maps each address to the
    server's reply, as on :class:`RecipientsRefused`.

    Transient because nothing was delivered and the deferred recipients may be taken
    later or by another provider (a re-send is still refused for the 5xx addresses).
    """

    def __init__(self, message: str, *, refused: Mapping[str, str], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.refused = dict(refused)


class AuthError(DeliveryError):
    """Credentials refused (or the token endpoint failed). Nothing was sent."""

    failover = True


class UnsupportedFeature(DeliveryError, MessageError):
    """This provider cannot carry something the message uses; nothing was sent.

    A Bcc-only message to an API that requires To, DKIM to a JSON API that rebuilds the
    MIME, an address that needs SMTPUTF8 on a server without it. Unlike a bad message,
    another provider may carry it, so the Mailer fails over, and this provider's health
    is untouched (it answered nothing). When no provider can, the Mailer raises this
    error itself: it is a MessageError too, since the message cannot go through this
    Mailer as it is.
    """

    failover = True
    no_verdict = True
    retry_here = False


class PermanentError(DeliveryError):
    """Refused for a reason every provider would share (bad mailbox, invalid request)."""


class RecipientsRefused(PermanentError):
    """Every recipient was refused. ``refused`` maps each address to the server's reply."""

    def __init__(self, message: str, *, refused: Mapping[str, str], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.refused = dict(refused)


class RecipientsSuppressed(PermanentError):
    """Every envelope recipient is on the suppression list (docs/suppression.md).

    Raised by the Mailer before any I/O: no provider was tried and no breaker touched.
    ``suppressed`` maps each address to the reason it was suppressed. Send with
    ``suppression=False`` to bypass the list (a legal or security notice).
    """

    no_verdict = True

    def __init__(self, message: str, *, suppressed: Mapping[str, str], **kw: Any) -> None:
        super().__init__(message, **kw)
        self.suppressed = dict(suppressed)


class DeliveryUncertain(DeliveryError):
    """The message (or the final ".") left, but no definitive answer came back.

    It may have been delivered. Re-sending elsewhere risks a duplicate, so the Mailer
    raises this by default (``on_uncertain="raise"``).
    """


class AllProvidersFailed(DeliveryError):
    """No provider delivered the message.

    ``errors`` maps each provider tried to its last error; ``message`` is the message
    itself, so the caller can store it and retry later; ``possibly_delivered`` is true when
    any attempt ended uncertain (retrying it later may duplicate).
    """

    def __init__(
        self,
        errors: Mapping[str, DeliveryError],
        *,
        message: Message | None = None,
    ) -> None:
        self.errors: dict[str, DeliveryError] = dict(errors)
        self.message = message
        summary = "; ".join(
            f"{name}: {type(e).__name__}: {e.args[0] if e.args else ''}"
            for name, e in self.errors.items()
        )
        super().__init__(f"all providers failed ({summary or 'none available'})")
        #: a nested group that failed before any commit point: its parent may go on
        self.failover = not self.possibly_delivered

    @property
    def possibly_delivered(self) -> bool:
        return possibly_delivered(self)


def possibly_delivered(error: BaseException | None, committed: bool | None = False) -> bool:
    """Whether the message may have been accepted, by how an attempt (or a send) ended.

    The one place this is decided; the Mailer's "failed" event, SyncMailer's verdict on a
    cut call, the outbox worker, AllProvidersFailed and the Django result all ask it.

    ``error`` is how it ended (None: it succeeded). ``committed`` is whether the attempt
    crossed its commit point: None when its provider does not say (so it may have sent
    from its first instruction), False (the default) when the error alone is the
    evidence. Anything but a success, a crossing, an unknown crossing or an uncertain
    end (or a group's error holding one) is "not delivered": other errors are raised
    only when nothing was accepted. A foreign exception says nothing, so it counts as
    not delivered here; callers that must treat it as unknown (the outbox) check first.
    """
    if error is None or committed is not False:
        return True
    if isinstance(error, AllProvidersFailed):
        return any(possibly_delivered(e) for e in error.errors.values())
    return isinstance(error, DeliveryUncertain)
