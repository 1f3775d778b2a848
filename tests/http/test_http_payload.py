"""The payload object and the answers: a payload per message, made once; presign without a
throwaway payload; the size measured once; a batch item read as a whole answer would be."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx

from mailer import DeliveryUncertain, Message, PermanentError, RecipientsRefused
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._sendgrid import SendGridPayload, SendGridProvider
from mailer.providers._ses import SESPayload, SESProvider
from mailer.providers.http import Answer, HTTPProvider

pytestmark = pytest.mark.anyio


def msg(i: int = 0, **extra: Any) -> Message:
    fields: dict[str, Any] = {"sender": "s@example.com", "to": [f"r{i}@example.org"],
                              "subject": f"m{i}", "text": "t", **extra}  # fmt: skip
    return Message(**fields)


class _CountingPayload(SendGridPayload):
    made = 0

    def __init__(self, provider: Any, message: Message) -> None:
        super().__init__(provider, message)
        type(self).made += 1


class _Counting(SendGridProvider):
    payload_class = _CountingPayload


async def test_presign_builds_no_payload_and_signs_nothing_for_a_json_api(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed: list[Message] = []

    async def sign(message: Message, options: Any) -> None:
        signed.append(message)

    monkeypatch.setattr("mailer.providers.http.provider.sign", sign)
    monkeypatch.setattr(_Counting, "dkim_options", lambda self, message: object())
    provider = _Counting.from_config("sg", {"api_key": "SG.presign-key"})
    _CountingPayload.made = 0
    await provider.presign(msg())
    assert _CountingPayload.made == 0 and signed == []


async def test_presign_signs_once_where_the_payload_carries_the_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed: list[Message] = []

    async def sign(message: Message, options: Any) -> None:
        signed.append(message)

    monkeypatch.setattr("mailer.providers.http.provider.sign", sign)
    monkeypatch.setattr(SESProvider, "dkim_options", lambda self, message: object())
    provider = SESProvider.from_config(
        "ses",
        {"region": "eu-west-1", "access_key_id": "AKIAPAYLOAD", "secret_access_key": "sk-1234"},
    )
    message = msg()
    await provider.presign(message)
    assert signed == [message]
    assert SESPayload.signs_dkim and not SendGridPayload.signs_dkim


def test_one_payload_per_message_and_hooks_on_it() -> None:
    provider = _Counting.from_config("sg", {"api_key": "SG.walk-key"})
    _CountingPayload.made = 0
    first, second = provider.payload(msg(1)), provider.payload(msg(2))
    assert _CountingPayload.made == 2
    assert first is not second and first.message is not second.message
    assert first.data["personalizations"][0]["to"] == [{"email": "r1@example.org"}]
    assert first.provider is provider


async def test_a_batch_measures_each_message_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Message] = []
    measure = HTTPProvider.message_size

    def counted(message: Message) -> int:
        calls.append(message)
        return measure(message)

    monkeypatch.setattr(PostmarkProvider, "message_size", staticmethod(counted))
    provider = PostmarkProvider.from_config("pm", {"server_token": "pm-size-token"})
    messages = [msg(i) for i in range(5)]
    answer = [{"ErrorCode": 0, "Message": "OK", "MessageID": f"pm-{i}"} for i in range(5)]
    with respx.mock(assert_all_mocked=True) as router:
        router.post("https://api.postmarkapp.com/email/batch").mock(
            return_value=httpx.Response(200, json=answer)
        )
        outcomes = await provider.send_batch(messages)
    await provider.aclose()
    assert [getattr(o, "provider_message_id", None) for o in outcomes] == [
        f"pm-{i}" for i in range(5)
    ]
    assert calls == messages  # once each, in the walk; the chunking reads payload.size


def test_a_batch_item_is_classified_as_the_same_answer_alone() -> None:
    provider = PostmarkProvider.from_config("pm", {"server_token": "pm-item-token"})
    message = msg(0, cc=["c@example.org"])
    item = {"ErrorCode": 300, "Message": "Invalid 'Cc' address: 'c@example.org'."}
    whole = provider.error_for(Answer.of(httpx.Response(422, json=item)), message)
    alone = provider.item_error(422, item, message)
    assert type(whole) is type(alone) is RecipientsRefused
    assert str(whole) == str(alone) and whole.response == alone.response
    assert whole.refused == alone.refused == {"c@example.org": item["Message"]}
    other = provider.item_error(422, {"ErrorCode": 300, "Message": "Bad subject"}, message)
    assert type(other) is PermanentError


def test_answer_reads_once_and_tolerates_bodies_that_are_not_json() -> None:
    html = Answer.of(httpx.Response(502, text="<html>bad gateway</html>"))
    assert html.data is None and html.get("message") is None and html.text.startswith("<html>")
    listed = Answer.of(httpx.Response(200, json=[1, 2]))
    assert listed.data == [1, 2] and listed.get("id") is None and listed.is_success
    headers = Answer.of(httpx.Response(429, headers={"Retry-After": "3"}))
    assert headers.headers.get("retry-after") == "3"  # case-insensitive, as httpx's


def test_uncertain_gives_each_item_its_own_error() -> None:
    provider = PostmarkProvider.from_config("pm", {"server_token": "pm-unc-token"})
    errors = provider.uncertain("batch answer unreadable", 3)
    assert len({id(e) for e in errors}) == 3
    assert all(isinstance(e, DeliveryUncertain) and e.provider == "pm" for e in errors)
