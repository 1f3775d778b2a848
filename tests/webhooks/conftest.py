"""The webhook receivers under a real server on 127.0.0.1: uvicorn for the ASGI app,
wsgiref for the WSGI one; posts are signed as each ESP signs them (tests/webhooks/sign.py)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import uvicorn

from mailer import Mailer
from mailer.testing import free_port
from mailer.webhooks import asgi_app

SAMPLES = Path(__file__).parent / "samples"


def sample(name: str) -> Any:
    """An ESP's documented sample events (tests/webhooks/samples/NAME.json)."""
    return json.loads((SAMPLES / f"{name}.json").read_text())


@asynccontextmanager
async def served_mailer(tmp_path: Path, *providers: Any) -> AsyncIterator[tuple[Mailer, str]]:
    """A Mailer over ``providers`` with an SQLite event store, its ASGI receiver under
    uvicorn; yields the Mailer and the receiver's base URL."""
    mailer = Mailer(list(providers), suppression={"store": f"sqlite:///{tmp_path / 'm.db'}"})
    async with mailer, asgi_server(asgi_app(mailer)) as url:
        yield mailer, url


@asynccontextmanager
async def asgi_server(app: Any) -> AsyncIterator[str]:
    """``app`` served by uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):  # bounded: 10 s
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def wsgi_server(app: Any) -> Iterator[str]:
    """``app`` served by wsgiref in a thread on a free loopback port."""
    server: WSGIServer = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
