"""A local fake of the Postmark and Resend send APIs, for benchmarks/batch.py.

    python benchmarks/_fake_esp.py --port 8025

Answers ``POST /email`` and ``/email/batch`` (Postmark) and ``POST /emails`` and
``/emails/batch`` (Resend) with their documented success bodies, over HTTP/1.1 keep-alive,
in its own process so that the client being timed does not share its CPU. It parses each
JSON body (a server has to) and counts messages; it checks nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
from typing import Any

from mailer._demo.http_fake import _read_request

_ids = itertools.count(1)


def _answer(path: str, body: Any) -> Any:
    if path == "/email":
        return {"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{next(_ids)}",
                "To": body.get("To", "")}  # fmt: skip
    if path == "/email/batch":
        return [_answer("/email", item) for item in body]
    if path == "/emails":
        return {"id": f"re-{next(_ids)}"}
    if path == "/emails/batch":
        return {"data": [{"id": f"re-{next(_ids)}"} for _ in body]}
    return None


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
        while (request := await _read_request(reader)) is not None:
            _method, path, _headers, raw = request
            answer = _answer(path, json.loads(raw or b"null"))
            status = b"200 OK" if answer is not None else b"404 Not Found"
            data = json.dumps(answer if answer is not None else {"message": "no route"}).encode()
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(data) + data)  # fmt: skip
            await writer.drain()
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
