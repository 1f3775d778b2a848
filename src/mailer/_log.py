"""Logging with secrets redacted.

Secrets are ``SecretStr`` everywhere, so formatting one prints ``**********``. This filter
is the second line: any secret value registered here (passwords, API keys, OAuth tokens,
including tokens fetched at run time) is replaced in every record our loggers emit, in
case one ever reaches a log line through a server's echo or a third-party message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, SecretStr

__all__ = ["get_logger", "one_line", "redact", "register_secret", "secret_values"]

_secrets: set[str] = set()
_lock = threading.Lock()
_MIN_LEN = 4  # shorter values would redact ordinary words


def secret_values(model: Any) -> Iterator[str]:
    """Every SecretStr value in a (nested) config model, mapping or list."""
    if isinstance(model, SecretStr):
        yield model.get_secret_value()
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            yield from secret_values(getattr(model, name, None))
    elif isinstance(model, Mapping):
        for value in model.values():
            yield from secret_values(value)
    elif isinstance(model, list | tuple):
        for value in model:
            yield from secret_values(value)


def register_secret(value: str | None) -> None:
    if value and len(value) >= _MIN_LEN:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    if not _secrets:
        return text
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, "**********")
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            message = redact(record.getMessage())
            record.msg, record.args = message, None
        return True


_FILTER = _RedactFilter()


def get_logger(name: str = "mailer") -> logging.Logger:
    """A logger under ``mailer`` with the redaction filter attached (filters on a logger
    do not apply to its children, so every logger we use gets its own)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def one_line(text: str, limit: int = 400) -> str:
    """Redacted, on one line, at most ``limit`` characters: for CLI errors and reports.

    Server replies and validation errors can span lines; a one-line error must not.
    """
    flat = " ".join(redact(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
