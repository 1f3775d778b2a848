"""An idempotent batch request whose answer is lost (Resend's ``/emails/batch``, with its
Idempotency-Key): its two tries share the provider's ``timeout``, half each, as a single
send's tries do (test_post_commit_hang.py), so an API that eats the body costs one
``timeout``, not two, and the re-send still delivers each item once when the hang passes.
Resend's real adapter against a FakeResend on 127.0.0.1 that also takes batches."""

from __future__ import annotations

import time
from typing import Any

import pytest

from mailer import DeliveryUncertain, Message, SendResult
from mailer.providers._resend import ResendProvider
from mailer.testing import FakeResend, HTTPRequest, Reply

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0  # the provider's: a batch request and its re-send share it
#: what a batch may take beyond it on this shared, noisy machine
SLACK = 0.6


class FakeResendBatch(FakeResend):
    """FakeResend with ``POST /emails/batch``: a repeated Idempotency-Key gets the first
    answer back and delivers nothing new, as Resend documents."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches: dict[str, dict[str, Any]] = {}

    def respond(self, request: HTTPRequest) -> Reply:
        if request.method != "POST" or request.path.rstrip("/") != "/emails/batch":
            return super().respond(request)
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            return Reply(401, {"name": "validation_error"}, final=True)
        key = request.headers.get("idempotency-key")
        if key and key in self._batches:
            return Reply(200, self._batches[key], final=True)  # a replay: nothing new
        data = []
        for email in request.json():
            data.append({"id": self.add_email(email)})
            self.received[str(email["to"][0])] += 1
        answer = {"data": data}
        if key:
            self._batches[key] = answer
        return Reply(200, answer)


def _messages(n: int) -> list[Message]:
    return [
        Message(sender="app@example.com", to=[f"u{i}@example.org"], subject="s", text="t")
        for i in range(n)
    ]


async def test_a_batch_whose_answers_never_come_costs_one_timeout() -> None:
    async with FakeResendBatch("hang") as api:
        provider = ResendProvider.from_config("resend", api.config(timeout=TIMEOUT))
        try:
            started = time.monotonic()
            outcomes = await provider.send_batch(_messages(3))
            took = time.monotonic() - started
        finally:
            await provider.aclose()
        # the request and its re-send (same key) share the 1 s timeout, half each
        # (it was 2 s: one each)
        assert TIMEOUT * 0.9 <= took < TIMEOUT + SLACK, took
        assert api.requests == 2
        assert all(isinstance(o, DeliveryUncertain) for o in outcomes), outcomes


async def test_the_resend_delivers_each_item_once_when_the_hang_passes() -> None:
    """The first request is taken and its answer lost; the re-send, with the half of
    the timeout kept for it, gets the first answer back and delivers nothing new."""
    async with FakeResendBatch(script=["accept-hang"]) as api:
        provider = ResendProvider.from_config("resend", api.config(timeout=TIMEOUT))
        messages = _messages(3)
        try:
            started = time.monotonic()
            outcomes = await provider.send_batch(messages)
            took = time.monotonic() - started
        finally:
            await provider.aclose()
        assert all(isinstance(o, SendResult) for o in outcomes), outcomes
        assert TIMEOUT / 2 * 0.9 <= took < TIMEOUT, took
        assert api.requests == 2
        assert dict(api.received) == {f"u{i}@example.org": 1 for i in range(3)}
        assert len(api.emails) == 3


async def test_a_batch_without_a_key_keeps_the_whole_timeout() -> None:
    """A non-idempotent batch is tried once, and that try may use all of ``timeout``."""

    class NoKey(ResendProvider):
        def batch_request(self, payloads: list[Any]) -> Any:
            request = super().batch_request(payloads)
            del request.headers["Idempotency-Key"]
            return request

    async with FakeResendBatch("hang") as api:
        provider = NoKey.from_config("resend", api.config(timeout=TIMEOUT))
        try:
            started = time.monotonic()
            outcomes = await provider.send_batch(_messages(2))
            took = time.monotonic() - started
        finally:
            await provider.aclose()
        assert TIMEOUT * 0.9 <= took < TIMEOUT + SLACK, took
        assert api.requests == 1
        assert all(isinstance(o, DeliveryUncertain) for o in outcomes), outcomes
