"""Attachments: bytes in memory or a file read at render time, with a safe file name."""

from __future__ import annotations

import mimetypes
import re
import uuid
from pathlib import Path

from pydantic import (
    Field,
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

    def with_content(self) -> Attachment:
        """The same attachment with its bytes (a file given by path is read now)."""
        if self.path is None:
            return self
        return Attachment(
            content=self.data(), filename=self.filename, content_type=self.content_type,
            inline=self.inline, content_id=self.content_id,
        )  # fmt: skip

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
