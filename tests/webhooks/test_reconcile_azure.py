"""``mailer outbox reconcile`` with Azure, against a local stand-in for its API: the
Operation-Id our sends choose from the Message-ID lets the lookup ask Azure exactly. Of
two sends whose replies were lost, the one Azure took is settled; the one that never
arrived is re-queued once the row is old enough, and its re-send names the same
operation; the statuses and ages that prove nothing leave the row alone."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from mailer import Mailer
from mailer.providers._azure import OPERATION_KEPT, AzureProvider, operation_id_of
from mailer.providers.http.lookup import ABSENT_AFTER
from mailer.testing import HTTPTestServer, serve
from mailer.testing._http import HTTPRequest, Reply

from .reconcile_kit import age_rows, config, message

pytestmark = pytest.mark.anyio

KEY = base64.b64encode(b"azure-unit-test-secret-key-32byt").decode()
NOT_FOUND = {"error": {"code": "NotFound", "message": "Operation not found"}}


class FakeAzure:
    """Takes sends (the script drops some replies) and answers operation status."""

    def __init__(self, status: str = "Succeeded") -> None:
        self.status = status
        self.operations: list[str] = []  # every Operation-Id sent, repeats included
        self.asked: list[str] = []

    def respond(self, request: HTTPRequest) -> Reply:
        if request.method == "POST":
            op = request.headers["operation-id"]
            if op in self.operations:
                return Reply(409, {"error": {"code": "Conflict", "message": "exists"}})
            self.operations.append(op)
            return Reply(202, {"id": op, "status": "Running"})
        op = request.path.split("?")[0].rsplit("/", 1)[1]
        self.asked.append(op)
        if op in self.operations:
            return Reply(200, {"id": op, "status": self.status})
        return Reply(404, NOT_FOUND)


def azure(base_url: str) -> dict[str, Any]:
    return {"type": "azure", "name": "acs",
            "config": {"endpoint": base_url, "access_key": KEY, "timeout": 5}}  # fmt: skip


async def test_reconcile_asks_azure_by_operation_id(tmp_path: Path) -> None:
    fake = FakeAzure()
    api = HTTPTestServer("ok", script=["accept-drop", "drop"], respond=fake.respond)
    async with api, Mailer.from_config(config(tmp_path, azure(api.base_url))) as mailer:
        taken = await mailer.enqueue(message("x@example.org"))
        await mailer.drain(timeout=10.0)
        lost = await mailer.enqueue(message("y@example.org"))
        await mailer.drain(timeout=10.0)
        assert (await mailer.outbox.stats())["unknown"] == 2
        assert fake.operations == [operation_id_of(taken)]

        report = await mailer.reconcile()  # the lost row is fresh: a 404 proves nothing yet
        assert (report.settled, report.requeued, report.left) == ([taken], [], [lost])
        assert fake.asked == [operation_id_of(taken), operation_id_of(lost)]

        age_rows(tmp_path, ABSENT_AFTER + 60)
        report = await mailer.reconcile()
        assert (report.settled, report.requeued, report.left) == ([], [lost], [])
        await mailer.drain(timeout=10.0)
        states = {i.message_id: i.state for i in await mailer.outbox.items(limit=10)}
        assert states == {taken: "sent", lost: "sent"}
        assert fake.operations == [operation_id_of(taken), operation_id_of(lost)]


@pytest.mark.parametrize(
    ("status", "age", "verdict"),
    [
        ("Running", 0.0, "sent"),
        ("NotStarted", 0.0, "sent"),
        ("Succeeded", 10.0, "sent"),
        ("Failed", 4000.0, "unknown"),  # Azure will not send it, nor take the id again
        ("Canceled", 4000.0, "unknown"),
        (None, 10.0, "unknown"),  # 404 too soon: the send may be in flight
        (None, ABSENT_AFTER + 1, "absent"),
        (None, OPERATION_KEPT + 1, "unknown"),  # Azure may have forgotten it
    ],
)
async def test_lookup_verdicts(status: str | None, age: float, verdict: str) -> None:
    fake = FakeAzure(status or "Succeeded")
    mid = "<r1@app.example.com>"
    if status is not None:
        fake.operations.append(operation_id_of(mid))
    async with serve(respond=fake.respond) as api:
        provider = AzureProvider.from_config("acs", {"endpoint": api.base_url, "access_key": KEY})
        try:
            answer = await provider.lookup(mid, age=age)
        finally:
            await provider.aclose()
    assert answer.verdict == verdict, answer.detail
    assert fake.asked == [operation_id_of(mid)]
    if verdict == "sent":
        assert answer.provider_message_id == operation_id_of(mid)


async def test_lookup_on_a_server_error_is_unknown() -> None:
    async with serve(respond=lambda r: Reply(500, {"error": {"code": "x", "message": "y"}})) as api:
        provider = AzureProvider.from_config("acs", {"endpoint": api.base_url, "access_key": KEY})
        try:
            answer = await provider.lookup("<r2@app.example.com>", age=ABSENT_AFTER + 1)
        finally:
            await provider.aclose()
    assert answer.verdict == "unknown"
