"""A local fake of the Postmark, Resend, Mailtrap, MailerSend, Mandrill, Azure and Scaleway
send APIs, for
benchmarks/batch.py and benchmarks/sdk_send.py.

    python benchmarks/_fake_esp.py --port 8025

Answers ``POST /email`` and ``/email/batch`` (Postmark), ``POST /emails`` and
``/emails/batch`` (Resend), ``POST /api/send`` and ``/api/batch`` (Mailtrap),
``POST /v1/email`` and ``/v1/bulk-email`` with ``GET /v1/bulk-email/{id}`` (MailerSend: the
bulk is ``completed`` at the first poll, sooner than MailerSend's queue would finish it),
``POST /api/1.3/messages/send.json`` (Mandrill: one ``sent`` item per ``to`` entry),
``POST /emails:send`` (Azure: 202 and an operation) and
``POST /transactional-email/v1alpha1/regions/*/emails`` (Scaleway: one ``emails`` item per
recipient, every field its SDK reads) with their documented success bodies, over HTTP/1.1
keep-alive, in its own process so that the client being timed does not share its CPU. It
parses each JSON body (a server has to) and counts messages; it checks nothing else. The
server is the test kit's scripted HTTP server (``mailer.testing.HTTPTestServer``) with this
answer.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
from typing import Any

from mailer.testing import HTTPRequest, HTTPTestServer, Reply

_ids = itertools.count(1)
#: MailerSend bulks: id -> the number of messages posted
_bulks: dict[str, int] = {}


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
    if path == "/api/send":
        return {"success": True, "message_ids": [f"mt-{next(_ids)}"]}
    if path == "/api/batch":
        return {"success": True, "responses": [_answer("/api/send", item)
                                               for item in body["requests"]]}  # fmt: skip
    if path == "/v1/bulk-email":
        bulk = f"bulk-{next(_ids)}"
        _bulks[bulk] = len(body)
        return {"message": "The bulk email is being processed.", "bulk_email_id": bulk}
    if path.startswith("/v1/bulk-email/"):
        bulk = path.rsplit("/", 1)[1]
        taken = [f"ms-{next(_ids)}" for _ in range(_bulks[bulk])]
        return {"data": {"id": bulk, "state": "completed", "validation_errors_count": 0,
                         "validation_errors": None, "suppressed_recipients": None,
                         "messages_id": taken}}  # fmt: skip
    if path == "/api/1.3/messages/send.json":
        return [{"email": rcpt["email"], "status": "sent", "_id": f"md-{next(_ids)}",
                 "reject_reason": None} for rcpt in body["message"]["to"]]  # fmt: skip
    if path.startswith("/emails:send"):
        return {"id": f"az-{next(_ids)}", "status": "Running", "error": None}
    if path.startswith("/transactional-email/") and path.endswith("/emails"):
        return {"emails": [_scaleway_email(body, rcpt["email"]) for rcpt in body.get("to", [])]}
    return None


def _scaleway_email(body: Any, rcpt: str) -> dict[str, Any]:
    return {"id": f"scw-{next(_ids)}", "message_id": f"m-{next(_ids)}",
            "project_id": body.get("project_id"), "mail_from": body["from"]["email"],
            "rcpt_to": rcpt, "mail_rcpt": rcpt, "rcpt_type": "to", "subject": body["subject"],
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
            "status": "new", "status_details": None, "try_count": 0, "last_tries": [],
            "flags": []}  # fmt: skip


def _respond(request: HTTPRequest) -> Reply:
    if request.path == "/v1/email":
        json.loads(request.body)
        return Reply(202, {}, headers={"X-Message-Id": f"ms-{next(_ids)}"})
    answer = _answer(request.path, json.loads(request.body or b"null"))
    if answer is None:
        return Reply(404, {"message": "no route"})
    accepted = request.path.startswith("/emails:send") or request.path == "/v1/bulk-email"
    return Reply(202 if accepted else 200, answer)


async def main(port: int) -> None:
    await HTTPTestServer(respond=_respond, port=port, keep=0, backlog=1024).start()
    await asyncio.Event().wait()  # until the benchmark kills the process


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
