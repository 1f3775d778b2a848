"""A fake of Resend's ``POST /emails``, its email list and retrieve, on the scripted
HTTP server.

Why a fake of a real API rather than a made-up one: the library's real Resend adapter
(pointed here through ``base_url``) then runs, so a test or the demo exercises the code
path production uses. Like Resend it honours ``Idempotency-Key``: a repeated key gets the
first answer back and delivers nothing new, which is what makes retrying an uncertain send
safe. It counts deliveries by Message-ID in ``received``, the ground truth a test checks
"nothing lost, nothing duplicated" against.

``GET /emails`` lists what it took as Resend documents it: newest first, ``limit`` 1 to
100 (20 by default; anything else is a 422), the ``after`` cursor (an email's id,
itself excluded), ``has_more``, and only the fields Resend lists (no tags, no headers).
``GET /emails/{id}`` retrieves one with its bodies. ``lookups`` records each of those
requests' paths, for a test to check the shape of what it was asked.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
        #: what it took, oldest first, as Resend stores it (see :meth:`add_email`)
        self.emails: list[dict[str, Any]] = []
        self.lookups: list[str] = []

    @property
    def accepted(self) -> int:
        return sum(self.received.values())

    @property
    def duplicates(self) -> dict[str, int]:
        return {mid: n for mid, n in self.received.items() if n > 1}

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A ``resend`` provider config pointed here."""
        return {"api_key": self.api_key, "base_url": self.base_url, "timeout": 1.0, **overrides}

    def add_email(self, email: dict[str, Any], *, created: float | None = None) -> str:
        """Record ``email`` (a send's JSON) as taken at ``created`` (epoch seconds, now by
        default) without a send: its id. A test fills the list with it."""
        email_id = secrets.token_hex(16)
        when = datetime.fromtimestamp(time.time() if created is None else created, UTC)
        self.emails.append({
            "object": "email", "id": email_id, "to": _listed(email.get("to")),
            "from": email.get("from"), "created_at": when.isoformat(),
            "subject": email.get("subject"), "html": email.get("html"),
            "text": email.get("text"), "bcc": email.get("bcc"), "cc": email.get("cc"),
            "reply_to": email.get("reply_to"), "last_event": "delivered",
            "scheduled_at": None,
        })  # fmt: skip
        return email_id

    def error_body(self, status: int) -> Any:
        names = {429: "rate_limit_exceeded", 503: "internal_server_error"}
        return _error(status, names.get(status, "application_error"), "injected fault")

    def respond(self, request: HTTPRequest) -> Reply:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, _error(401, "validation_error", "API key is invalid"), final=True)
        route = request.path.split("?", 1)[0].rstrip("/")
        if request.method == "GET" and route in ("/domains", "/api-keys", ""):
            return Reply(200, {"data": []})  # what an adapter's verify() may probe
        if request.method == "GET" and route == "/emails":
            self.lookups.append(request.path)
            return self._list(request.path)
        if request.method == "GET" and route.startswith("/emails/"):
            self.lookups.append(request.path)
            wanted = route.removeprefix("/emails/")
            for email in self.emails:
                if email["id"] == wanted:
                    return Reply(200, email)
            return Reply(404, _error(404, "not_found", "Email not found"))
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
        email_id = self.add_email(email)
        if key:
            self._keys[key] = email_id
        self.received[_message_id(email) or key or email_id] += 1
        if len(self.payloads) < self.keep:
            self.payloads.append(email)
        return Reply(200, {"id": email_id})

    def _list(self, path: str) -> Reply:
        query = parse_qs(urlsplit(path).query)
        try:
            limit = int(query.get("limit", ["20"])[0])
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return Reply(422, _error(422, "validation_error", "limit must be 1 to 100"))
        newest = [_listed_fields(e) for e in reversed(self.emails)]
        after = query.get("after", [None])[0]
        if after is not None:
            ids = [e["id"] for e in newest]
            if after not in ids:
                return Reply(422, _error(422, "validation_error", "Invalid `after` cursor"))
            newest = newest[ids.index(after) + 1 :]
        page = newest[:limit]
        return Reply(200, {"object": "list", "has_more": len(newest) > limit, "data": page})


def _error(status: int, name: str, message: str) -> dict[str, Any]:
    return {"statusCode": status, "name": name, "message": message}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _listed_fields(email: dict[str, Any]) -> dict[str, Any]:
    """An email as the list shows it: without its bodies."""
    return {k: v for k, v in email.items() if k not in ("object", "html", "text")}


def _message_id(email: dict[str, Any]) -> str | None:
    extra = email.get("headers")
    if isinstance(extra, dict):
        for name, value in extra.items():
            if str(name).lower() == "message-id" and isinstance(value, str):
                return " ".join(value.split())
    return None
