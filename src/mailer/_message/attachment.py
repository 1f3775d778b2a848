"""Attachments: bytes in memory or a file read at render time, with a safe file name."""

from __future__ import annotations

import codecs
import mimetypes
import re
import uuid
from pathlib import Path

from pydantic import (
    Field,
    FieldSerializationInfo,
    field_serializer,
    field_validator,
    model_validator,
)

from .._errors import MessageError
from ._checks import (
    FROM_JSON,
    MAX_FILENAME_CHARS,
    PATH_FROM_JSON,
    Strict,
    check_length,
    check_text,
    describe,
)

#: bytes read at a time when a text file given by path is checked for UTF-8
_CHECK_CHUNK = 1024 * 1024

_CONTENT_TYPE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$"
)


def safe_filename(name: str) -> str:
    """The base name of ``name``: no directories, no leading dots, within the length limit.

    A recipient's client that saves ``../../etc/passwd`` (or ``..\\..\\boot.ini``) under
    its download folder should find only ``passwd``; the reduced name is what is sent.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = base.strip().lstrip(".").rstrip(". ")  # Windows drops trailing dots/spaces
    if not base:
        raise MessageError(f"attachment filename has no usable base name: {describe(name)}")
    return check_length(base, "attachment filename", MAX_FILENAME_CHARS)


class Attachment(Strict):
    """A file to attach: bytes in memory or a path read once, at render time.

    ``inline=True`` with a ``content_id`` makes it a related part of the HTML body,
    referenced from the HTML as ``cid:<content_id>``.
    """

    content: bytes | None = Field(default=None, repr=False)
    path: Path | None = None
    filename: str | None = None
    content_type: str | None = None
    inline: bool = False
    content_id: str | None = None

    @field_validator("path")
    @classmethod
    def _no_path_from_json(cls, value: Path | None) -> Path | None:
        if value is not None and FROM_JSON.get():
            raise MessageError(PATH_FROM_JSON)
        return value

    @model_validator(mode="after")
    def _check(self) -> Attachment:
        if (self.content is None) == (self.path is None):
            raise MessageError("an attachment needs exactly one of content= or path=")
        if self.path is not None and not self.path.is_file():
            raise MessageError(f"attachment path is not a readable file: {self.path}")
        name = self.filename or (self.path.name if self.path is not None else None)
        if name is None:
            raise MessageError("an attachment given as bytes needs a filename")
        check_text(name, "attachment filename")
        name = safe_filename(name)
        object.__setattr__(self, "filename", name)
        ctype = self.content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if not _CONTENT_TYPE.match(ctype):
            raise MessageError(f"invalid attachment content type: {describe(ctype)}")
        object.__setattr__(self, "content_type", ctype.lower())
        if self.content_id is not None:
            cid = self.content_id.strip("<>")
            check_text(cid, "content id")
            if not cid or any(c in cid for c in ' <>"\\') or not cid.isascii():
                raise MessageError(f"invalid content id: {describe(self.content_id)}")
            object.__setattr__(self, "content_id", cid)
        elif self.inline:
            object.__setattr__(self, "content_id", f"{uuid.uuid4().hex}@mailer")
        return self

    @field_serializer("content", when_used="json")
    def _dump_content(self, value: bytes | None, info: FieldSerializationInfo) -> bytes | None:
        # JSON carries the bytes, never a path: model_validate_json refuses a path (it
        # would read whatever file stored JSON names), so a dumped message reloads
        return self.data() if value is None else value

    @field_serializer("path", when_used="json")
    def _dump_path(self, value: Path | None, info: FieldSerializationInfo) -> None:
        return None

    def mime_type(self) -> str:
        """The Content-Type to send: ``content_type``, with a charset for text.

        A text part without a charset is read as US-ASCII (RFC 2046 4.1.2), so UTF-8 text
        arrived garbled. Text that is valid UTF-8 says so; other text (an unknown legacy
        charset we cannot name) goes as application/octet-stream, as Django sends it,
        so that nothing guesses. The one rule for every path: the MIME renderers and the
        JSON APIs that take a content type.
        """
        ctype = self.content_type or "application/octet-stream"
        if self.maintype != "text":
            return ctype
        if not self._is_utf8():
            return "application/octet-stream"
        return f"{ctype}; charset=utf-8"

    def _is_utf8(self) -> bool:
        if self.content is not None:
            try:
                self.content.decode("utf-8")
            except UnicodeDecodeError:
                return False
            return True
        assert self.path is not None
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            with self.path.open("rb") as f:
                while chunk := f.read(_CHECK_CHUNK):
                    decoder.decode(chunk)
                decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return False
        except OSError as exc:
            raise MessageError(
                f"attachment file {str(self.path)!r} cannot be read: {exc.strerror}"
            ) from None
        return True

    def with_content(self) -> Attachment:
        """The same attachment with its bytes (a file given by path is read now)."""
        if self.path is None:
            return self
        return Attachment(
            content=self.data(),
            filename=self.filename,
            content_type=self.content_type,
            inline=self.inline,
            content_id=self.content_id,
        )

    def data(self) -> bytes:
        if self.content is not None:
            return self.content
        assert self.path is not None
        return self.path.read_bytes()

    @property
    def maintype(self) -> str:
        return (self.content_type or "application/octet-stream").split("/", 1)[0]

    @property
    def subtype(self) -> str:
        return (self.content_type or "application/octet-stream").split("/", 1)[1]
