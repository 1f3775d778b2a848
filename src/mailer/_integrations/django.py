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

import email.message
import email.utils
import mimetypes
import weakref
from collections.abc import Iterable, Mapping, Sequence
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
from .._message import Address, Attachment, Envelope, Message
from .._result import SendResult
from .._sync import SyncMailer
from ._process import build, close_all, config_key, read_source, shared_mailer

__all__ = ["EmailBackend", "MailerResult", "close_mailers", "get_mailer", "to_message"]

log = get_logger("mailer.django")

#: get_connection() keyword arguments Django itself passes (send_mail's auth_user and
#: auth_password); accepted when None, refused otherwise: credentials live in MAILER.
_DJANGO_CONNECTION_ARGS = frozenset(
    {"username", "password", "host", "port", "use_tls", "use_ssl", "timeout",
     "ssl_keyfile", "ssl_certfile"}
)  # fmt: skip
#: django-anymail's message attributes that have no equivalent here: refused rather than
#: silently dropped, so a project migrating from anymail finds each one at its first send
_ANYMAIL_ONLY = (
    "template_id", "merge_data", "merge_global_data", "merge_metadata", "merge_headers",
    "send_at", "track_clicks", "track_opens", "esp_extra",
)  # fmt: skip
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
            "settings.MAILER is not set: give the Mailer config as a mapping or the path "
            "of a TOML/JSON file (see docs/django.md)"
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
        raise ConfigError("MAILER must be a mapping or the path of a TOML/JSON file")
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
        for key, value in kwargs.items():
            if key in _DJANGO_CONNECTION_ARGS and value is None:
                continue
            raise ConfigError(
                f"mailer.django.EmailBackend does not take {key!r}: put provider settings "
                "and credentials in MAILER (see docs/django.md)"
            )
        self.config = config

    def send_messages(self, email_messages: Sequence[Any]) -> int:
        """Send every message concurrently; return how many were sent.

        Each message gets ``mailer_result``. Without ``fail_silently`` the first error
        (in the order given) is raised once every message has finished, so one bad
        message never stops the others; with it, our errors are logged and swallowed.
        """
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
                batch.append((i, to_message(message), _providers(message)))
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
            raise error
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

    from .._outbox.postgres import ADD_SQL, add_params
    from .._outbox.worker import Outbox

    try:
        if providers is not None:
            raise MessageError(
                "message.providers cannot be combined with enqueue_in_transaction: the "
                "outbox's workers send through every provider"
            )
        item = Outbox.prepare(message)  # a bad message fails now, inside the transaction
        connection = connections[alias]
        _check_same_table(sync, connection)
    except MailerError as exc:
        return MailerResult(message.message_id, error=exc)
    with connection.cursor() as cursor:  # a database error raises into the transaction
        cursor.execute(ADD_SQL.format(*["%s"] * 6), add_params(item))
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


# ------------------------------------------------------------------------ the mapping


def to_message(source: Any) -> Message:
    """Our Message for a Django EmailMessage or EmailMultiAlternatives (MessageError if
    it holds something we cannot send as asked)."""
    for name in _ANYMAIL_ONLY:
        if getattr(source, name, None) is not None:
            raise MessageError(
                f"the django-anymail attribute {name!r} is not supported by mailer.django "
                "(see docs/django.md); the message was not sent"
            )
    headers = {str(k): str(v) for k, v in (source.extra_headers or {}).items()}
    names = {k.lower(): k for k in headers}
    data: dict[str, Any] = {
        "sender": Address.parse(source.from_email),
        "to": _addresses(source.to),
        "cc": _addresses(source.cc),
        "bcc": _addresses(source.bcc),
        "reply_to": _addresses(source.reply_to),
        "subject": str(source.subject or ""),
    }
    if "message-id" in names:
        data["message_id"] = headers.pop(names["message-id"])
    if "reply-to" in names:  # Django lets the header win over reply_to
        data["reply_to"] = _header_addresses(headers.pop(names["reply-to"]))
    if "date" in names:
        raise MessageError("a Date header cannot be set: it is written when the message is sent")
    envelope: dict[str, Any] = {}
    # Django's rule: from_email and to/cc/bcc are the envelope, these headers only what
    # readers see. When they name other mailboxes, the envelope keeps Django's.
    recipients = [*data["to"], *data["cc"], *data["bcc"]]
    for header, key in (("from", "sender"), ("to", "to"), ("cc", "cc")):
        if header in names:
            shown = _header_addresses(headers.pop(names[header]))
            if header == "from":
                if len(shown) != 1:
                    raise MessageError("a From header must name exactly one mailbox")
                if shown[0].email.lower() != data["sender"].email.lower():
                    envelope["sender"] = data["sender"]
                data["sender"] = shown[0]
            else:
                if _emails(shown) != _emails(data[key]):
                    envelope["recipients"] = recipients
                data[key] = shown
    bounce = getattr(source, "envelope_sender", None)  # django-anymail's name for it
    if bounce is not None:
        envelope["sender"] = Address.parse(str(bounce))
    envelope.update(_explicit_envelope(getattr(source, "envelope", None)))
    if envelope:
        data["envelope"] = envelope
    options = getattr(source, "provider_options", None)
    if options is not None:
        if not isinstance(options, Mapping):
            raise MessageError("message.provider_options must map provider names to options")
        data["provider_options"] = {str(k): dict(v) for k, v in options.items()}
    text, html = _bodies(source)
    data.update(text=text, html=html, headers=headers)
    data["attachments"] = [_attachment(a, has_html=html is not None) for a in source.attachments]
    tags = getattr(source, "tags", None)
    if tags:
        data["tags"] = [str(t) for t in tags]
    metadata = getattr(source, "metadata", None)
    if metadata:
        data["metadata"] = {str(k): str(v) for k, v in dict(metadata).items()}
    return Message(**data)


def _providers(source: Any) -> list[str] | None:
    """``message.providers = ["ses", "smtp"]``: only these, in this order (Mailer.send's
    ``providers``; an unknown name is a MessageError from the Mailer)."""
    names = getattr(source, "providers", None)
    if names is None:
        return None
    if isinstance(names, str) or not all(isinstance(n, str) for n in names):
        raise MessageError("message.providers must be a list of provider names")
    return list(names)


def _addresses(values: Iterable[Any] | None) -> list[Address]:
    return [Address.parse(str(v)) for v in (values or []) if v]


def _header_addresses(value: str) -> list[Address]:
    """A header's address list. The stdlib only splits it: each piece then goes through
    our strict parser, so nothing it tolerates (CVE-2023-27043) gets through."""
    pairs = email.utils.getaddresses([value])
    if not pairs or any(not addr for _, addr in pairs):
        raise MessageError(f"cannot parse the address header {value[:80]!r}")
    return [Address(name=name or None, email=addr) for name, addr in pairs]


def _emails(addresses: Iterable[Address]) -> list[str]:
    return sorted(a.email.lower() for a in addresses)


def _explicit_envelope(value: Any) -> dict[str, Any]:
    """``message.envelope``: an Envelope, or a mapping with ``from``/``sender`` and
    ``to``/``recipients`` (it wins over what the headers implied)."""
    if value is None:
        return {}
    if isinstance(value, Envelope):
        return {k: v for k, v in (("sender", value.sender), ("recipients", value.recipients))
                if v is not None}  # fmt: skip
    if not isinstance(value, Mapping):
        raise MessageError("message.envelope must be a mapping (from, to) or an Envelope")
    aliases = {"from": "sender", "to": "recipients"}
    return {aliases.get(str(k), str(k)): v for k, v in value.items()}


def _text(content: Any) -> str:
    return content.decode("utf-8") if isinstance(content, bytes) else str(content)


def _bodies(source: Any) -> tuple[str | None, str | None]:
    subtype = getattr(source, "content_subtype", "plain")
    body = _text(source.body or "")
    if subtype == "html":
        text, html = None, body
    elif subtype == "plain":
        text, html = body, None
    else:
        raise MessageError(f"a text/{subtype} body is not supported (only plain and html)")
    for content, mimetype in getattr(source, "alternatives", None) or []:
        kind = str(mimetype).lower()
        if kind == "text/html" and html is None:
            html = _text(content)
        elif kind == "text/plain" and not text:
            text = _text(content)
        else:
            raise MessageError(
                f"an alternative of type {mimetype!r} is not supported (one text/plain "
                "body and one text/html alternative are)"
            )
    if html is not None and text == "":
        text = None  # Django would send an empty text/plain part next to the HTML
    return text, html


def _attachment(item: Any, *, has_html: bool) -> Attachment:
    if isinstance(item, email.message.Message):
        return _mime_attachment(item, has_html=has_html)
    filename, content, mimetype = item
    mimetype = mimetype or (filename and mimetypes.guess_type(filename)[0]) or None
    if mimetype == "message/rfc822" and not isinstance(content, str | bytes):
        # an EmailMessage (Django) or an email.message.Message
        content = content.message() if hasattr(content, "message") else content
        content = content.as_bytes()
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    return Attachment(
        content=data, filename=filename or _default_name(mimetype), content_type=mimetype
    )


def _mime_attachment(part: email.message.Message, *, has_html: bool) -> Attachment:
    """A MIMEBase part (MIMEImage, MIMEApplication, ...): its decoded body, type, file name
    and Content-ID. A Content-ID makes it an inline part of the HTML when there is one."""
    ctype = part.get_content_type()
    if part.is_multipart():
        if ctype != "message/rfc822":
            raise MessageError(f"a {ctype} attachment part is not supported")
        inner = part.get_payload(0)
        assert isinstance(inner, email.message.Message)
        data = inner.as_bytes()
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
    cid = part.get("Content-ID")
    inline = cid is not None and has_html and part.get_content_disposition() != "attachment"
    return Attachment(
        content=data,
        filename=part.get_filename() or _default_name(ctype),
        content_type=ctype,
        inline=inline,
        content_id=str(cid) if cid is not None else None,
    )


def _default_name(mimetype: str | None) -> str:
    """Django allows attachments without a file name; ours need one."""
    extension = mimetypes.guess_extension(mimetype or "") or ".bin"
    return f"attachment{extension}"
