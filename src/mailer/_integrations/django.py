"""Django's email backend on top of the Mailer: ``EMAIL_BACKEND = "mailer.django.EmailBackend"``.

Everything Django sends (``send_mail``, password resets, admin error mails) goes through
``send_messages``, so one setting moves a whole project onto failover. The mapping from
Django's EmailMessage to our Message is complete or it refuses: a feature we cannot
express (an AMP alternative, a From header that differs from the envelope sender) raises
MessageError rather than sending something other than what the code asked for.

No Django version-specific imports: only ``django.conf.settings`` and the base backend,
both unchanged since Django 1.x, so the same backend serves 4.2 to 6.x (and ``MAILERS``).
"""

from __future__ import annotations

import smtplib
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.mail.backends.base import BaseEmailBackend
from django.db import DEFAULT_DB_ALIAS

from .._errors import (
    ConfigError,
    DeliveryError,
    MailerError,
    MessageError,
    possibly_delivered,
)
from .._log import get_logger
from .._message import Message
from .._result import SendResult
from .._sync import SyncMailer
from ._django_message import providers_of, to_message
from ._process import build, close_all, config_key, read_source, shared_mailer

__all__ = ["EmailBackend", "MailerResult", "close_mailers", "get_mailer", "to_message"]

log = get_logger("mailer.django")

#: get_connection() keywords of Django's SMTP backend, and where each setting lives in
#: MAILER instead (docs/django.md). Accepted so that code written for that backend runs;
#: an empty value (None, "", False, 0) is what Django itself passes and is ignored, any
#: other is ignored with one warning per keyword and process (MAILER decides).
SMTP_KEYWORDS = {
    "host": "providers[].config.host",
    "port": "providers[].config.port",
    "username": "providers[].config.auth.user",
    "password": "providers[].config.auth.password",
    "use_tls": "providers[].config.require_tls",
    "use_ssl": "providers[].config.secure",
    "timeout": "providers[].config.socket_timeout (and send_timeout)",
    "ssl_keyfile": "providers[].config.tls.key_file",
    "ssl_certfile": "providers[].config.tls.cert_file",
}
#: the keywords already warned about in this process (each once: a backend is made per send)
_warned_keywords: set[str] = set()
#: keys of the "django" table inside the MAILER config
_OPTIONS = frozenset({"opentelemetry", "enqueue_on_commit", "enqueue_in_transaction"})


@dataclass(frozen=True, slots=True)
class MailerResult:
    """What happened to one EmailMessage: set as ``message.mailer_result`` by the backend.

    ``sent`` tells which case it is; ``result`` holds the SendResult (every attempt
    included) and ``error`` the MailerError that stopped it.
    """

    message_id: str | None
    result: SendResult | None = None
    error: MailerError | None = None
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    #: stored in the outbox for a worker to send (enqueue_on_commit, or
    #: on_all_failed="enqueue" after every provider failed)
    queued: bool = False

    @property
    def sent(self) -> bool:
        """A provider accepted it (not merely queued)."""
        return self.result is not None and not self.queued

    @property
    def status(self) -> str:
        """``"sent"``, ``"queued"`` or ``"failed"``."""
        return "queued" if self.queued else "sent" if self.result is not None else "failed"

    @property
    def provider(self) -> str | None:
        """The provider that took the message, or the one whose error ended the send."""
        if self.result is not None:
            return self.result.provider
        return self.error.provider if isinstance(self.error, DeliveryError) else None

    @property
    def possibly_delivered(self) -> bool:
        """True when the send failed uncertainly: sending it again may duplicate it."""
        return self.error is not None and possibly_delivered(self.error)


# ------------------------------------------------------------------------ the Mailer


def _setting() -> Any:
    source = getattr(settings, "MAILER", None)
    if source is None:
        raise ConfigError(
            "settings.MAILER is not set: give the Mailer config as a mapping, a provider URL "
            "or the path of a TOML/JSON file (see docs/django.md)"
        )
    return source


def _options(source: Mapping[str, Any] | str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The Mailer config and the ``django`` table taken out of it."""
    data = read_source(source)
    options = data.pop("django", None) or {}
    if not isinstance(options, Mapping) or set(options) - _OPTIONS:
        raise ConfigError(f"the MAILER 'django' table takes only {sorted(_OPTIONS)}")
    if options.get("enqueue_on_commit") and not data.get("outbox"):
        raise ConfigError(
            "MAILER 'django': enqueue_on_commit needs an outbox (the outbox option, docs/outbox.md)"
        )
    if options.get("enqueue_in_transaction"):
        if options.get("enqueue_on_commit"):
            raise ConfigError(
                "MAILER 'django': choose enqueue_in_transaction or enqueue_on_commit, not both"
            )
        outbox = data.get("outbox")
        url = outbox.get("url") if isinstance(outbox, Mapping) else outbox
        if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                "MAILER 'django': enqueue_in_transaction needs a postgresql:// outbox in the "
                "same database as the Django connection it writes through"
            )
    return data, dict(options)


#: the "django" table of each config the process built a Mailer for, by config key
_options_by_key: dict[str, dict[str, Any]] = {}


def get_mailer(config: Mapping[str, Any] | str | Path | None = None) -> SyncMailer:
    """The process's SyncMailer for ``config`` (default: ``settings.MAILER``).

    Built on first use and shared by every backend instance and thread of the process;
    a forked worker builds its own (see ``mailer._integrations._process``).
    """
    return _mailer_and_options(config)[0]


def _mailer_and_options(
    config: Mapping[str, Any] | str | Path | None,
) -> tuple[SyncMailer, dict[str, Any]]:
    source = _source(config)
    key = config_key("django", source)

    def make() -> SyncMailer:
        data, options = _options(source)
        _options_by_key[key] = options
        return build(data, opentelemetry=bool(options.get("opentelemetry")))

    sync = shared_mailer(key, make)
    return sync, _options_by_key.get(key, {})


def _source(config: Mapping[str, Any] | str | Path | None) -> Mapping[str, Any] | str | Path:
    source = _setting() if config is None else config
    if not isinstance(source, Mapping | str | Path):
        raise ConfigError(
            "MAILER must be a mapping, a provider URL or the path of a TOML/JSON file"
        )
    return source


def close_mailers() -> None:
    """Close the shared Mailers now (they are also closed at interpreter exit)."""
    close_all()


# ----------------------------------------------------------------------- the backend


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Sends Django's EmailMessages through the process's Mailer, concurrently.

    ``config`` (a mapping or a file path) overrides ``settings.MAILER``: it is how
    Django 6.1's ``MAILERS`` setting passes ``OPTIONS`` to a backend.
    """

    def __init__(
        self,
        fail_silently: bool = False,
        *,
        config: Mapping[str, Any] | str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(fail_silently=fail_silently)
        _ignore_keywords(kwargs)
        self.config = config

    def send_messages(self, email_messages: Iterable[Any]) -> int:
        """Send every message concurrently; return how many were sent.

        Each message gets ``mailer_result``. Without ``fail_silently`` the first error
        (in the order given) is raised once every message has finished, so one bad
        message never stops the others; with it, our errors are logged and swallowed.
        Django allows any iterable: it is read once, into a list, since the messages are
        walked twice (convert and send, then results and errors).
        """
        email_messages = list(email_messages)
        if not email_messages:
            return 0
        try:
            sync, options = _mailer_and_options(self.config)
        except MailerError as exc:
            for message in email_messages:
                message.mailer_result = MailerResult(None, error=exc)
            return self._fail(exc)
        outcomes: dict[int, MailerResult] = {}  # by position in email_messages
        batch: list[tuple[int, Message, list[str] | None]] = []
        for i, message in enumerate(email_messages):
            if not message.recipients():
                continue  # as Django's SMTP backend: nobody to send to, nothing counted
            try:
                batch.append((i, to_message(message), providers_of(message)))
            except MailerError as exc:
                log.warning("cannot send a Django EmailMessage: %s", exc)
                outcomes[i] = MailerResult(None, error=exc)
        on_commit = options.get("enqueue_on_commit")
        in_transaction = options.get("enqueue_in_transaction")
        if batch and in_transaction:
            alias = in_transaction if isinstance(in_transaction, str) else DEFAULT_DB_ALIAS
            for i, converted, providers in batch:
                outcomes[i] = _enqueue_in_transaction(sync, converted, providers, alias)
        elif batch and on_commit:
            alias = on_commit if isinstance(on_commit, str) else None
            for i, converted, providers in batch:
                outcomes[i] = self._enqueue_on_commit(
                    sync, email_messages[i], converted, providers, alias
                )
        elif batch:
            try:
                # concurrent; each send bounded by send_timeout as SyncMailer.send is
                results = sync._send_each([m for _, m, _ in batch], [p for *_, p in batch])
            except MailerError as exc:  # closed meanwhile: nothing was sent
                results = [exc] * len(batch)
            for (i, converted, _), result in zip(batch, results, strict=True):
                outcomes[i] = _outcome(converted, result)
        sent = 0
        first_error: MailerError | None = None
        for i, message in enumerate(email_messages):
            outcome = outcomes.get(i)
            if outcome is None:
                continue
            if outcome is not _SCHEDULED:
                message.mailer_result = outcome
            if outcome.error is None:
                sent += 1
            elif first_error is None:
                first_error = outcome.error
        if first_error is not None:
            self._fail(first_error)
        return sent

    def _fail(self, error: MailerError) -> int:
        if not self.fail_silently:
            raise smtp_error(error)
        return 0

    @staticmethod
    def _enqueue_on_commit(
        sync: SyncMailer,
        email: Any,
        message: Message,
        providers: list[str] | None,
        alias: str | None,
    ) -> MailerResult:
        """Store the message in the outbox once the current transaction commits (at once
        outside one): a rolled-back transaction sends nothing. ``mailer_result`` is set
        when the enqueue has happened."""
        from django.db import transaction

        try:
            if providers is not None:
                raise MessageError(
                    "message.providers cannot be combined with enqueue_on_commit: the "
                    "outbox's workers send through every provider"
                )
            message.as_bytes()  # a bad message fails now, inside the transaction
        except MailerError as exc:
            return MailerResult(message.message_id, error=exc)

        def enqueue() -> None:
            try:
                sync.enqueue(message)
            except MailerError as exc:
                # After the commit: raising would tell the caller its transaction failed.
                log.error("enqueue after commit failed for %s: %s", message.message_id, exc)
                email.mailer_result = MailerResult(message.message_id, error=exc)
            else:
                email.mailer_result = MailerResult(message.message_id, queued=True)

        transaction.on_commit(enqueue, using=alias)
        return _SCHEDULED


def _enqueue_in_transaction(
    sync: SyncMailer, message: Message, providers: list[str] | None, alias: str
) -> MailerResult:
    """Write the message's outbox row through Django's own connection, so it is part of
    the app's transaction: stored if and only if the transaction commits, with no second
    transaction after it that a crash could miss. The outbox must be that database's
    (checked once per connection settings: :func:`_check_same_table`)."""
    from django.db import connections

    from .._outbox._chunked import dbapi_write
    from .._outbox.postgres import ADD_SQL, add_params
    from .._outbox.worker import Outbox

    try:
        if providers is not None:
            raise MessageError(
                "message.providers cannot be combined with enqueue_in_transaction: the "
                "outbox's workers send through every provider"
            )
        # a bad message fails now, inside the transaction; a large one's attachments
        # are read as its chunks are written, below (mailer._outbox._chunked)
        item = Outbox.prepare(message, chunked=True)
        connection = connections[alias]
        _check_same_table(sync, connection)
    except MailerError as exc:
        return MailerResult(message.message_id, error=exc)
    with connection.cursor() as cursor:  # a database error raises into the transaction
        if not item.parts:
            cursor.execute(ADD_SQL.format(*["%s"] * 7), add_params(item))
        else:
            cursor.execute(ADD_SQL.format(*["%s"] * 7) + " RETURNING id", add_params(item))
            added = cursor.fetchone()
            if added is not None:  # (None: that Message-ID was stored already)
                dbapi_write(cursor, added[0], item.parts)
    if sync._current().outbox.config.dispatch is not None:
        # the row exists only once the transaction commits: its task is published then
        from django.db import transaction

        from .tasks import publish_after_commit

        transaction.on_commit(lambda: publish_after_commit(sync, item.message_id), using=alias)
    return MailerResult(item.message_id, queued=True)


#: per SyncMailer, the Django connection settings already found to share its table (weak
#: keys: an id() could be reused by a later SyncMailer with another outbox)
_same_table: weakref.WeakKeyDictionary[SyncMailer, set[str]] = weakref.WeakKeyDictionary()


def _check_same_table(sync: SyncMailer, connection: Any) -> None:
    """Refuse to write a row the outbox's workers would never see: the Django connection
    must reach the outbox's database and resolve ``mailer_outbox`` to the same table."""
    from .._outbox.postgres import IDENTITY_SQL

    settings_dict = connection.settings_dict
    where = sorted((k, str(settings_dict.get(k))) for k in ("NAME", "HOST", "PORT", "OPTIONS"))
    key = repr(where)
    checked = _same_table.setdefault(sync, set())
    if key in checked:
        return
    if connection.vendor != "postgresql":
        raise ConfigError(
            f"enqueue_in_transaction: database {connection.alias!r} is {connection.vendor}; "
            "the outbox's rows can be written in a transaction on PostgreSQL only"
        )
    theirs = sync._call(lambda mailer: mailer.outbox.identity(), "the outbox check")
    with connection.cursor() as cursor:
        cursor.execute(IDENTITY_SQL)
        row = cursor.fetchone()
    ours = tuple(str(value) for value in row)
    if ours != theirs or theirs[2] == "None":
        raise ConfigError(
            f"enqueue_in_transaction: database {connection.alias!r} is not the outbox's "
            f"(database, server start, mailer_outbox table: {ours} here, {theirs} for the "
            "outbox): point the outbox URL at the same database and schema"
        )
    checked.add(key)


#: send_messages' placeholder for a message whose result comes when its transaction commits
_SCHEDULED = MailerResult(None)


def _ignore_keywords(kwargs: Mapping[str, Any]) -> None:
    """Django's BaseEmailBackend takes and ignores keywords it does not use, and Django
    passes the SMTP backend's (``send_mail``'s ``auth_user``/``auth_password`` become
    ``username``/``password``, often ""): refusing them broke ``get_connection()`` calls
    written for Django. The setting they name lives in MAILER; a non-empty one is logged
    (its name, never its value) so that nobody believes it took effect."""
    for key, value in kwargs.items():
        if not value or key in _warned_keywords:
            continue
        _warned_keywords.add(key)
        where = SMTP_KEYWORDS.get(key)
        hint = f"set {where} in MAILER" if where else "it has no meaning here"
        log.warning(
            "mailer.django.EmailBackend ignores the get_connection() keyword %r: %s "
            "(see docs/django.md)",
            key,
            hint,
        )


#: per MailerError class, its subclass that is also an smtplib.SMTPException
_smtp_classes: dict[type[MailerError], type[MailerError]] = {}


def smtp_error(error: MailerError) -> MailerError:
    """``error`` as an instance of a subclass of its class and of smtplib.SMTPException.

    Code written for Django's SMTP backend catches ``smtplib.SMTPException`` or
    ``OSError`` (which SMTPException is) around ``send_mail``; our errors are neither, so
    a server outage escaped those handlers. The copy keeps every attribute, the class
    name and ``except AllProvidersFailed`` working; it pickles as the original error.
    A MessageError is the caller's bug, not an outage: it stays a ValueError only.
    """
    if isinstance(error, smtplib.SMTPException | MessageError):
        return error  # a MessageError is a ValueError, as Django's BadHeaderError is
    cls = type(error)
    sub = _smtp_classes.get(cls)
    if sub is None:
        namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        sub = type(cls.__name__, (cls, smtplib.SMTPException), namespace)
        sub.__reduce__ = _reduce_plain  # type: ignore[assignment]
        _smtp_classes[cls] = sub
    copy = sub.__new__(sub)
    copy.__dict__.update(error.__dict__)
    copy.args = error.args
    copy.__cause__ = error.__cause__
    copy.__suppress_context__ = error.__suppress_context__
    copy.__dict__["_plain"] = error
    return copy


def _reduce_plain(self: MailerError) -> tuple[Any, ...]:
    return (smtp_error, (self.__dict__["_plain"],))


def _outcome(message: Message, outcome: SendResult | MailerError) -> MailerResult:
    if isinstance(outcome, MailerError):
        return MailerResult(message.message_id, error=outcome)
    return MailerResult(
        outcome.message_id or message.message_id,
        result=outcome,
        accepted=list(outcome.accepted),
        rejected=dict(outcome.rejected),
        queued=outcome.status == "queued",
    )
