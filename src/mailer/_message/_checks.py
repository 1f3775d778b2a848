"""The rules every field of a message is checked by, and the models' strict base.

Control characters are refused everywhere (inside encoded-words too: CVE-2024-6923),
lengths are bounded, and a validation error becomes a MessageError that names each bad
field and why, never the input (pydantic's own error would quote a whole body).
"""

from __future__ import annotations

import contextvars
import re
from email.header import decode_header
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from .._errors import MessageError
from .._options import validation_text

# C0 controls (HTAB included: it has no business in a name or address), DEL, C1 controls
# and the Unicode line/paragraph separators that str.splitlines() treats as newlines.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Header values may carry HTAB (it is folding whitespace) but nothing else.
_CONTROL_IN_VALUE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")

#: Longest subject, header value and display name, in characters. RFC 5322 2.1.1: a
#: line may hold 998 characters; a longer value is only possible folded, and a megabyte
#: subject is a way to make a message nobody can read (or a server refuses mid-DATA).
MAX_HEADER_CHARS = 998
#: Most custom ``headers`` one message may carry.
MAX_HEADERS = 100
#: Longest attachment file name, in characters (common file systems' limit).
MAX_FILENAME_CHARS = 255
PATH_FROM_JSON = (
    "an attachment given by path cannot come from JSON (a stored or received message "
    "carries its content); read the file and give content= instead"
)

# Set while JSON is parsed. pydantic's mode flag cannot tell: the models' own __init__
# makes it validate the parsed JSON in Python mode.
FROM_JSON: contextvars.ContextVar[bool] = contextvars.ContextVar("mailer_json", default=False)


def describe(text: str, limit: int = 80) -> str:
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
    pattern = _CONTROL_IN_VALUE if allow_tab else CONTROL
    if pattern.search(value):
        raise MessageError(
            f"{what} contains a control character (CR, LF, NUL, ...): {describe(value)}"
        )
    for word in ENCODED_WORD.findall(value):
        try:
            parts = decode_header(word)
        except Exception as exc:
            raise MessageError(
                f"{what} contains a malformed encoded-word: {describe(word)}"
            ) from exc
        for chunk, charset in parts:
            decoded = (
                chunk.decode(charset or "ascii", errors="replace")
                if isinstance(chunk, bytes)
                else chunk
            )
            if CONTROL.search(decoded):
                raise MessageError(
                    f"{what} contains an encoded-word that decodes to a control character "
                    f"(CVE-2024-6923): {describe(word)}"
                )
    return value


class Strict(BaseModel):
    """Base for the message models: bad input raises MessageError, not ValidationError."""

    # base64 for bytes in JSON, so a message (attachments included) round-trips through
    # model_dump_json / model_validate_json: the outbox pattern stores messages that way.
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    def __init__(self, /, **data: Any) -> None:
        # The validator called as BaseModel.__init__ calls it, without that frame and the
        # keywords packed again: ~0.4 us of every Message(...), and of each Address made
        # from a string while one validates (a custom __init__ is what pydantic-core calls
        # for a nested model). A model validator that returned another object, which
        # BaseModel.__init__ would warn of, is a bug here: none of the models has one.
        try:
            validated = self.__pydantic_validator__.validate_python(data, self_instance=self)
        except ValidationError as exc:
            error = MessageError(validation_text("message", exc))
        else:
            assert validated is self, "a model validator returned another object"
            return
        raise error  # outside the except: the pydantic error holds every input value

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        """Validate a mapping (or a model), raising MessageError on bad input: as
        ``model_validate_json``, the error never quotes the input (bodies included)."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            error = MessageError(validation_text("message", exc))
        raise error  # outside the except, as in __init__

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """Parse JSON (a stored or received message), raising MessageError on bad input.

        The error names each bad field and why, never the input itself: pydantic's own
        error would quote the whole body. Attachments given by ``path`` are refused here,
        since a path in stored or received JSON would read whatever file it names.
        """
        token = FROM_JSON.set(True)
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError as exc:
            error = MessageError(validation_text("message", exc))
        finally:
            FROM_JSON.reset(token)
        raise error  # outside the except, as above
