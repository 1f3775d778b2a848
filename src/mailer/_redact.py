"""The one home of secret redaction: a registry of known secrets, and the URL rule.

A secret reaches text through paths nobody plans for: a server echoing the credential it
was sent, a connection URL given where a file path was expected, a dependency's DEBUG
trace. Every such path runs through :func:`redact` (text) or :func:`redact_url` (a URL),
so there is one rule to get right instead of one per module.

* Known secrets (passwords, API keys, OAuth tokens, proxy credentials) are registered
  once, when a config or token is made (:func:`register_secret`), and redacted everywhere
  after: in log records (the filter in :mod:`mailer._log`), in the text of every error
  built from a server's words, in reprs and in the CLI's output.
* A secret travels in other forms too: base64 in an ``AUTH PLAIN``/``LOGIN`` exchange and
  a Basic ``Authorization`` header. The secret's own base64 is registered with it, and
  :func:`register_credentials` adds the user-and-password forms (a base64 of the pair does
  not contain the base64 of the password alone).
* Strings shorter than :data:`MIN_LENGTH` are never registered: a password ``a`` must not
  blank out every ``a`` in a log line.
"""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from pydantic import BaseModel, SecretStr

__all__ = [
    "MASK",
    "MIN_LENGTH",
    "any_registered",
    "redact",
    "redact_url",
    "register_config",
    "register_credentials",
    "register_secret",
    "secret_values",
]

#: what a secret is replaced with
MASK = "**********"
#: shorter values would redact ordinary words
MIN_LENGTH = 4
#: query parameters whose value is a secret (``?api_key=...``, ``?access_token=...``)
_SECRET_PARAM = re.compile(r"key|token|secret|pass|pwd|auth|sig|credential", re.I)

_forms: set[str] = set()
_lock = threading.Lock()
#: one alternation of every form, longest first; rebuilt on registration, which is rare
_pattern: re.Pattern[str] | None = None


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _add(forms: Iterable[str]) -> None:
    global _pattern
    new = {form for form in forms if len(form) >= MIN_LENGTH} - _forms
    if not new:
        return
    with _lock:
        _forms.update(new)
        ordered = sorted(_forms, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(form) for form in ordered))


def register_secret(value: str | SecretStr | None) -> None:
    """Redact ``value`` (and its base64) from every text from now on."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if value and len(value) >= MIN_LENGTH:
        _add((value, _b64(value)))


def register_credentials(user: str | None, password: str | SecretStr | None) -> None:
    """A user and password pair: the password, and the pair as Basic auth and SASL PLAIN
    carry it (``user:password`` and ``\\0user\\0password``, base64-encoded)."""
    if isinstance(password, SecretStr):
        password = password.get_secret_value()
    if not password or len(password) < MIN_LENGTH:
        return
    register_secret(password)
    user = user or ""
    _add((_b64(f"{user}:{password}"), _b64(f"\0{user}\0{password}")))


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


def register_config(model: Any) -> None:
    """Register every SecretStr of a (nested) config, and each ``user``/``username`` and
    ``password`` pair in the forms SASL PLAIN and Basic auth send it."""
    for value in secret_values(model):
        register_secret(value)
    for user, password in _pairs(model):
        register_credentials(user, password)


def _pairs(model: Any) -> Iterator[tuple[str | None, SecretStr]]:
    if not isinstance(model, BaseModel):
        return
    user = getattr(model, "user", None) or getattr(model, "username", None)
    password = getattr(model, "password", None)
    if isinstance(password, SecretStr) and (user is None or isinstance(user, str)):
        yield user, password
    for name in type(model).model_fields:
        yield from _pairs(getattr(model, name, None))


def any_registered() -> bool:
    """Whether any secret is known (the log filter skips formatting a record otherwise)."""
    return _pattern is not None


def redact(text: str) -> str:
    """``text`` with every registered secret, in any registered form, masked."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def redact_url(url: str) -> str:
    """``scheme://***@host:port/path?key=***``: where a URL points, never who or with what.

    The whole user info goes (a user name is often the key: ``mailgun://KEY:DOMAIN@``),
    as do the values of query parameters that look secret. Text that is not a URL is
    returned as it is, redacted of known secrets; an unparsable URL is not echoed.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not parts.netloc:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAM.search(name) for name, _ in pairs):
            shown = [(n, "***" if _SECRET_PARAM.search(n) else v) for n, v in pairs]
            query = urlencode(shown, safe="*")
    return redact(parts._replace(netloc=netloc, query=query).geturl())
