"""An OAuth2 token endpoint (refresh-token grant) on 127.0.0.1, for XOAUTH2 tests.

The SMTP server's XOAUTH2 accepts the tokens a test marks valid; the provider gets them
from its ``oauth2.token_url``, which is this: so a test can refresh, expire, revoke and
race the real token source without any identity provider.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

__all__ = ["TokenEndpoint"]


class TokenEndpoint:
    """An OAuth2 token endpoint (refresh-token grant) on 127.0.0.1.

    Hands out ``tokens`` in order (the last one repeats) with ``expires_in``; or, with
    ``error`` set, answers ``status`` and ``{"error": error, ...}``. Records each request
    form, and sleeps ``delay`` seconds per request (to widen races).
    """

    def __init__(self, tokens: list[str] | None = None) -> None:
        self.tokens = list(tokens or ["fresh-token"])
        self.expires_in: float | None = 3600
        self.error: str | None = None
        self.status = 400
        self.delay = 0.0
        self.requests: list[dict[str, str]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                endpoint.requests.append(form)
                time.sleep(endpoint.delay)
                body: dict[str, Any]
                if endpoint.error is not None:
                    status = endpoint.status
                    body = {
                        "error": endpoint.error,
                        "error_description": "Token has been expired or revoked.",
                    }
                else:
                    index = min(len(endpoint.requests), len(endpoint.tokens)) - 1
                    status = 200
                    body = {"access_token": endpoint.tokens[index], "token_type": "Bearer"}
                    if endpoint.expires_in is not None:
                        body["expires_in"] = endpoint.expires_in
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=2)
