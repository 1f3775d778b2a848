"""Local fakes of four ESPs' suppression-list APIs on one scripted HTTP server, each
checking the documented request shape (path, credential, page parameters) and paging as
the ESP documents: SES ListSuppressedDestinations (``PageSize`` <= 1000, ``NextToken``),
Postmark's per-stream dump (one page), SendGrid's bounces/spam_reports/unsubscribes
(``limit`` <= 500 and ``offset``), Mailgun's bounces/complaints/unsubscribes (``limit``
<= 1000, then ``paging.next``, an absolute URL on Mailgun's host)."""

from __future__ import annotations

import base64
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from mailer.testing._http import HTTPRequest, Reply

DOMAIN = "mg.example.com"


class SuppressionAPIs:
    """The lists (address, ESP reason) per ESP list; ``refuse`` holds paths answered 403
    (a key without the scope); ``pages`` counts the pages served per path."""

    def __init__(self) -> None:
        self.ses: list[tuple[str, str]] = []  # (address, BOUNCE | COMPLAINT)
        self.postmark: list[tuple[str, str]] = []  # (address, HardBounce | ...)
        self.sendgrid: dict[str, list[str]] = {"bounces": [], "spam_reports": [],
                                               "unsubscribes": []}  # fmt: skip
        self.mailgun: dict[str, list[str]] = {"bounces": [], "complaints": [],
                                              "unsubscribes": []}  # fmt: skip
        self.refuse: set[str] = set()
        self.pages: Counter[str] = Counter()

    def providers(self, base_url: str) -> list[dict[str, Any]]:
        """The four providers' configs pointed here."""
        return [
            {"type": "ses", "name": "ses", "config": {
                "region": "eu-west-1", "access_key_id": "AKIDEXAMPLE",
                "secret_access_key": "wJalrXUtnFEMI", "base_url": base_url, "timeout": 5}},
            {"type": "postmark", "name": "pm", "config": {
                "server_token": "pm-token", "message_stream": "outbound",
                "base_url": base_url, "timeout": 5}},
            {"type": "sendgrid", "name": "sg", "config": {
                "api_key": "SG.key", "base_url": base_url, "timeout": 5}},
            {"type": "mailgun", "name": "mg", "config": {
                "api_key": "key-x", "domain": DOMAIN, "base_url": base_url, "timeout": 5}},
        ]  # fmt: skip

    def respond(self, request: HTTPRequest) -> Reply:
        parts = urlsplit(request.path)
        query = parse_qs(parts.query)
        assert request.method == "GET", f"sync only reads: {request.method} {request.path}"
        if parts.path in self.refuse:
            return Reply(403, {"errors": [{"message": "access forbidden"}]})
        self.pages[parts.path] += 1
        if parts.path == "/v2/email/suppression/addresses":
            assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
            return self._ses(query)
        if parts.path == "/message-streams/outbound/suppressions/dump":
            assert request.headers["x-postmark-server-token"] == "pm-token"
            return Reply(200, {"Suppressions": [
                {"EmailAddress": a, "SuppressionReason": r, "Origin": "Recipient",
                 "CreatedAt": "2026-11-30T08:58:33-05:00"} for a, r in self.postmark]})  # fmt: skip
        if parts.path.startswith("/v3/suppression/"):
            assert request.headers["authorization"] == "Bearer SG.key"
            return self._sendgrid(parts.path.rsplit("/", 1)[-1], query)
        if parts.path.startswith(f"/v3/{DOMAIN}/"):
            auth = base64.b64encode(b"api:key-x").decode()
            assert request.headers["authorization"] == f"Basic {auth}"
            return self._mailgun(parts.path.rsplit("/", 1)[-1], query)
        return Reply(404, {"message": f"no route {parts.path}"})

    def _ses(self, query: dict[str, list[str]]) -> Reply:
        size = int(query["PageSize"][0])
        assert 1 <= size <= 1000
        start = int(query.get("NextToken", ["tok-0"])[0].removeprefix("tok-"))
        page = self.ses[start : start + size]
        body: dict[str, Any] = {"SuppressedDestinationSummaries": [
            {"EmailAddress": a, "Reason": r, "LastUpdateTime": 1_764_000_000.5}
            for a, r in page]}  # fmt: skip
        if start + size < len(self.ses):
            body["NextToken"] = f"tok-{start + size}"
        return Reply(200, body)

    def _sendgrid(self, name: str, query: dict[str, list[str]]) -> Reply:
        limit, offset = int(query["limit"][0]), int(query["offset"][0])
        assert 1 <= limit <= 500 and offset >= 0
        items = self.sendgrid[name][offset : offset + limit]
        extra = {"bounces": {"reason": "550 5.1.1 no such user", "status": "5.1.1"},
                 "spam_reports": {"ip": "192.0.2.1"}, "unsubscribes": {}}[name]  # fmt: skip
        return Reply(200, [{"created": 1_764_000_000, "email": a, **extra} for a in items])

    def _mailgun(self, name: str, query: dict[str, list[str]]) -> Reply:
        limit = int(query["limit"][0])
        assert 1 <= limit <= 1000
        listed = self.mailgun[name]
        start = 0
        if "address" in query:  # a `paging.next` page: after this address
            assert query["page"] == ["next"]
            start = listed.index(query["address"][0]) + 1
        page = listed[start : start + limit]
        after = page[-1] if page else ""
        following = f"https://api.mailgun.net/v3/{DOMAIN}/{name}?" + urlencode(
            {"page": "next", "address": after, "limit": limit}
        )
        return Reply(200, {
            "items": [{"address": a, "code": "550", "error": "No such mailbox",
                       "created_at": "Fri, 21 Nov 2026 11:02:55 UTC"} for a in page],
            "paging": {"first": "https://api.mailgun.net/first", "next": following,
                       "previous": "https://api.mailgun.net/prev",
                       "last": "https://api.mailgun.net/last"},
        })  # fmt: skip
