"""Logging with secrets redacted.

Secrets are ``SecretStr`` everywhere, so formatting one prints ``**********``. This filter
is the second line: every secret registered in :mod:`mailer._redact` (passwords, API keys,
OAuth tokens, including tokens fetched at run time) is replaced in every record our
loggers emit, in case one ever reaches a log line through a server's echo or a
third-party message. The registry and the rule live there, not here: one home.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from ._errors import DeliveryUncertain
from ._redact import any_registered, redact, register_secret, secret_values
from ._text import LINE, clip

if TYPE_CHECKING:
    from ._routing.events import Event

# register_secret, secret_values and redact are re-exported for the modules that log
__all__ = [
    "event_logged",
    "get_logger",
    "log_event",
    "one_line",
    "redact",
    "register_secret",
    "secret_values",
]


# What every LogRecord has; anything else on a record came through ``extra=``.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}  # fmt: skip


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not any_registered():
            return True
        message = record.getMessage()
        shown = redact(message)
        if shown != message:
            record.msg, record.args = shown, None
        for key, value in vars(record).items():  # the extra= fields too
            if isinstance(value, str) and key not in _STANDARD_ATTRS:
                setattr(record, key, redact(value))
        return True


_FILTER = _RedactFilter()

# A library adds a NullHandler to its top logger (Python's logging HOWTO, "Configuring
# Logging for a Library"): without one, a script that never configured logging gets our
# warnings on stderr through logging.lastResort. An app that configures logging (root
# handlers, dictConfig) still receives every record: this handler only stops the fallback.
logging.getLogger("mailer").addHandler(logging.NullHandler())


def get_logger(name: str = "mailer") -> logging.Logger:
    """A logger under ``mailer`` with the redaction filter attached (filters on a logger
    do not apply to its children, so every logger we use gets its own); also used to
    attach it to a dependency's logger that can print one of our secrets."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def one_line(text: str, limit: int = LINE) -> str:
    """Redacted, on one line, at most ``limit`` characters: for CLI errors and reports.

    Server replies and validation errors can span lines; a one-line error must not.
    """
    flat = " ".join(redact(text).split())
    return clip(flat, limit)


# ----------------------------------------------------------------- delivery records

_delivery = get_logger("mailer.delivery")


def event_logged(level: int) -> bool:
    """Whether :func:`log_event` writes its record of an event at ``level`` (a successful
    attempt DEBUG, a sent message INFO: the levels it documents). The emitters ask before
    building an event that only the log would read, and the log would drop."""
    return _delivery.isEnabledFor(level)


def log_event(event: Event) -> None:
    """One record per attempt and per outcome, with fields for structured logging.

    Every provider tree's Runtime subscribes this to its events. The fields (``extra=``)
    are the same on every record, so a JSON formatter turns them into columns: ``event``,
    ``provider``, ``message_id``, ``outcome``, ``duration`` (seconds), ``code`` (SMTP reply
    or HTTP status), ``error``, and on attempts ``committed`` (whether the commit point was
    passed). Levels: a successful attempt DEBUG, a failed one INFO (WARNING when
    uncertain), a failover WARNING, a delivered message INFO, a failed one ERROR.
    """
    kind = event.kind
    if kind == "attempt" and event.attempt is not None:
        attempt = event.attempt
        level = (
            logging.DEBUG
            if attempt.ok
            else logging.WARNING
            if attempt.outcome == "DeliveryUncertain"
            else logging.INFO
        )
        if not _delivery.isEnabledFor(level):
            return
        fields = {
            "event": "attempt", "provider": attempt.provider, "message_id": event.message_id,
            "outcome": attempt.outcome, "duration": round(attempt.duration, 6),
            "code": attempt.code, "error": attempt.error, "committed": attempt.committed,
        }  # fmt: skip
        text = "attempt %s via %s: %s in %.3fs"
        args: tuple[Any, ...] = (
            event.message_id,
            attempt.provider,
            attempt.outcome,
            attempt.duration,
        )
        if attempt.error:
            text, args = text + " (%s)", (*args, attempt.error)
        _delivery.log(level, text, *args, extra=fields)
    elif kind == "failover" and _delivery.isEnabledFor(logging.WARNING):
        error = event.error
        outcome = type(error).__name__ if error is not None else None
        _delivery.warning(
            "failover of %s from %s (%s) to %s",
            event.message_id,
            event.provider,
            outcome,
            event.next_provider or "nobody",
            extra={
                "event": "failover",
                "provider": event.provider,
                "message_id": event.message_id,
                "outcome": outcome,
                "next_provider": event.next_provider,
                "code": error.code if error is not None else None,
            },
        )
    elif kind == "sent" and event.result is not None and _delivery.isEnabledFor(logging.INFO):
        result = event.result
        duration = round(sum(a.duration for a in result.attempts), 6)
        _delivery.info(
            "sent %s via %s after %d attempt(s) in %.3fs",
            event.message_id,
            result.provider,
            len(result.attempts),
            duration,
            extra={
                "event": "sent",
                "provider": result.provider,
                "message_id": event.message_id,
                "outcome": "sent",
                "duration": duration,
                "code": None,
                "attempts": len(result.attempts),
            },
        )
    elif kind == "failed" and event.error is not None and _delivery.isEnabledFor(logging.ERROR):
        error = event.error
        duration = round(sum(a.duration for a in error.attempts), 6)
        provider = event.provider or error.provider
        # one wording per outcome: "not sent" only when that is certain; an error
        # that says it may have been delivered is never logged under "not sent"
        maybe = isinstance(error, DeliveryUncertain) or bool(
            getattr(error, "possibly_delivered", False)
        )
        _delivery.error(
            "%s %s: %s",
            "may have been delivered" if maybe else "not sent",
            event.message_id,
            error,
            extra={
                "event": "failed",
                "provider": provider,
                "message_id": event.message_id,
                "outcome": type(error).__name__,
                "duration": duration,
                "code": error.code,
                "attempts": len(error.attempts),
                "error": str(error),
            },
        )
