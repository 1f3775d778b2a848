"""The file provider: writes each message as an ``.eml`` file into a folder.

The embedded default for development: no account, no server, and every message can be
opened in a mail client. Files are written atomically (a temporary name, then a rename),
so a reader never sees half a message.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult

import anyio
from pydantic import Field

from .._errors import TransientError
from .._message import Message
from .._message.dkim import DKIMOptions, choose, sign
from .._provider import Provider, ProviderConfig
from .._result import SendResult

__all__ = ["FileProvider"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class FileConfig(ProviderConfig):
    #: folder the .eml files go to (created if missing)
    directory: Path = Field(default=Path("outbox"))
    #: DKIM-sign every message (a message's own ``dkim`` wins)
    dkim: DKIMOptions | None = Field(default=None, repr=False)


class FileProvider(Provider[FileConfig]):
    Config = FileConfig
    config: FileConfig

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``file:///var/mail/outbox`` (or ``file://./outbox`` for a relative folder)"""
        path = (url.netloc + url.path) if url.netloc == "." else url.path
        return {"directory": path or "outbox", **params}

    def _write(self, message: Message, signature: bytes = b"") -> Path:
        folder = self.config.directory
        folder.mkdir(parents=True, exist_ok=True)
        stem = _UNSAFE.sub("_", (message.message_id or "message").strip("<>"))
        path = folder / f"{time.strftime('%Y%m%dT%H%M%S')}-{stem}.eml"
        tmp = path.with_suffix(".tmp")
        rendered = message.render()
        try:
            with tmp.open("wb") as out:
                out.write(signature)
                if isinstance(rendered, bytes):
                    out.write(rendered)
                else:  # large attachments: written chunk by chunk, never held whole
                    rendered.check()
                    for chunk in rendered.chunks():  # MessageError if a file changed
                        out.write(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written message left behind
            raise
        os.replace(tmp, path)
        return path

    async def _send(self, message: Message) -> SendResult:
        dkim = choose(message, self.config.dkim)
        signature = await sign(message, dkim) if dkim is not None else b""
        try:
            path = await anyio.to_thread.run_sync(self._write, message, signature)
        except OSError as exc:
            # Nothing was written under the final name: safe to fail over.
            raise TransientError(
                f"cannot write to {self.config.directory}: {exc.strerror}"
            ) from exc
        return SendResult(
            provider=self.name,
            message_id=message.message_id,
            accepted=message.envelope_recipients,
            response=str(path),
        )

    async def verify(self) -> None:
        folder = self.config.directory
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TransientError(f"cannot create {folder}: {exc.strerror}") from exc
        if not os.access(folder, os.W_OK):
            raise TransientError(f"folder {folder} is not writable")
