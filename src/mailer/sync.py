"""SyncMailer: the Mailer for Django, Flask and other blocking code.

One background thread runs one event loop for the life of the SyncMailer, so pooled SMTP
connections and HTTP keep-alive survive between calls (``asyncio.run`` per send would
tear them down every time). asyncio rather than another anyio backend, because the SMTP
provider is built on aiosmtplib, which is asyncio-only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from .errors import MailerError
from .mailer import Mailer
from .message import Message
from .result import SendResult

__all__ = ["SyncMailer"]

T = TypeVar("T")


class SyncMailer:
    """A blocking facade: ``SyncMailer(config).send(message)``.

    Takes the same config as ``Mailer.from_config`` (mapping or file path), or a Mailer.
    Thread-safe: many threads may call ``send`` at once; the sends run concurrently on
    the background loop.
    """

    def __init__(self, config: Mailer | Mapping[str, Any] | str | Path, **kwargs: Any) -> None:
        self.mailer = config if isinstance(config, Mailer) else Mailer.from_config(config, **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mailer-loop", daemon=True
        )
        self._thread.start()
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed:
            coro.close()
            raise MailerError("this SyncMailer is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def send(self, message: Message) -> SendResult:
        """Send and wait; raises exactly what ``Mailer.send`` raises."""
        return self._run(self.mailer.send(message))

    def verify(self) -> dict[str, Exception | None]:
        return self._run(self.mailer.verify())

    def close(self) -> None:
        """Close the providers and stop the background loop. Idempotent."""
        if self._closed:
            return
        try:
            self._run(self.mailer.aclose())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<SyncMailer {self.mailer!r}>"
