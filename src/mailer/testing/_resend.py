"""A fake of Resend's ``POST /emails`` on the scripted HTTP server.

Why a fake of a real API rather than a made-up one: the library's real Resend adapter
(pointed here through ``base_url``) then runs, so a test or the demo exercises the code
path production uses. Like Resend it honours ``Idempotency-Key``: a repeated key gets the
first answer back and delivers nothing new, which is what makes retrying an uncertain send
safe. It counts deliveries by Message-ID in ``received``, the ground truth a test checks
"nothing lost, nothing duplicated" against.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

from ._http import HTTPRequest, HTTPTestServer, Reply

__all__ = ["FakeResend"]


class FakeResend(HTTPTestServer):
    """Resend's send API on 127.0.0.1, with the faults of :class:`HTTPTestServer`.

    ``idempotent=False`` makes a repeated Idempotency-Key deliver again (an API without
    idempotency). ``payloads`` keeps the first ``keep`` JSON bodies received.
    """

    def __init__(
        self,
        mode: str = "ok",
        *,
        api_key: str = "re_test_key",
        idempotent: bool = True,
        keep: int = 10_000,
        **options: Any,
    ) -> None:
        super().__init__(mode, **options)
        self.api_key = api_key
        self.idempotent = idempotent
        self.keep = keep
        self.received: Counter[str] = Counter()
        self.payloads: list[dict[str, Any]] = []
        self._keys: dict[str, str] = {}

    @property
    def accepted(self) -> int:
        return sum(self.received.values())

    @property
    def duplicates(self) -> dict[str, int]:
        return {mid: n for mid, n in self.received.items() if n > 1}

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A ``resend`` provider config pointed here."""
        return {"api_key": self.api_key, "base_url": self.base_url, "timeout": 1.0, **overrides}

    def error_body(self, status: int) -> Any:
        names = {429: "rate_limit_exceeded", 503: "internal_server_error"}
        return _error(status, names.get(status, "application_error"), "injected fault")

    def respond(self, request: HTTPRequest) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, _error(401, "validation_error", "API key is invalid"), final=True)
        route = request.path.split("?", 1)[0].rstrip("/")
        if request.method == "GET" and route in ("/domains", "/api-keys", ""):
            return Reply(200, {"data": []})  # what an adapter's verify() may probe
        if route != "/emails":
            return Reply(404, _error(404, "not_found", "The requested endpoint does not exist"))
        if request.method != "POST":
            return Reply(405, _error(405, "method_not_allowed", "Method not allowed"))
        try:
            email = request.json()
        except ValueError:
            return Reply(400, _error(400, "validation_error", "Body is not JSON"))
        if not isinstance(email, dict):
            return Reply(422, _error(422, "validation_error", "Body must be an object"))
        missing = [k for k in ("from", "to", "subject") if not email.get(k)]
        if missing:
            return Reply(422, _error(422, "validation_error", f"Missing `{missing[0]}` field"))
        key = request.headers.get("idempotency-key")
        if self.idempotent and key and key in self._keys:
            return Reply(200, {"id": self._keys[key]}, final=True)  # a replay: nothing new
        email_id = secrets.token_hex(16)
        if key:
            self._keys[key] = email_id
        self.received[_message_id(email) or key or email_id] += 1
        if len(self.payloads) < self.keep:
            self.payloads.append(email)
        return Reply(200, {"id": email_id})


def _error(status: int, name: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "name": name, "message": message}


def _message_id(email: dict[str, Any]) -> str | None:
    extra = email.get("headers")
    if isinstance(extra, dict):
        for name, value in extra.items():
            if str(name).lower() == "message-id" and isinstance(value, str):
                return " ".join(value.split())
    return None
