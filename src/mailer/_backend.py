"""Which event loop, if any, is running the current thread.

Two places need to know: the SMTP provider (aiosmtplib runs on asyncio only, so under
trio it must refuse before any I/O rather than fail half-way and look like a network
error) and the SyncMailer (a blocking call made from inside a running loop would freeze
that loop for the whole send). One function, so both name the loop the same way.
"""

from __future__ import annotations

import asyncio

__all__ = ["current_async_library"]

try:  # trio depends on sniffio; plain-asyncio installs may lack it (anyio no longer needs it)
    import sniffio
except ImportError:  # pragma: no cover - exercised only without trio installed
    sniffio = None  # type: ignore[assignment]


def current_async_library() -> str | None:
    """``"asyncio"``, ``"trio"``... when called inside a running event loop; else None."""
    # The common case first, cheaply: the SMTP provider asks on every send, and sniffio's
    # answer cost about 14 us there.
    if asyncio._get_running_loop() is not None and (
        sniffio is None
        or (sniffio.thread_local.name is None and sniffio.current_async_library_cvar.get() is None)
    ):
        return "asyncio"
    if sniffio is not None:
        try:
            return sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            return None
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return None
    return "asyncio"
