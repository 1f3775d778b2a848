"""The correlation key: every attempt carries the Message-ID where the ESP echoes it.

A clash with the user's own metadata is refused before any I/O; the tag-safe encoding
(Resend, SES) decodes back to exactly the Message-ID.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailer import Message, MessageError
from mailer.providers._postmark import PostmarkProvider
from mailer.providers._resend import ResendProvider
from mailer.providers.http import CORRELATION_KEY
from mailer.providers.http.correlation import from_tag_safe, tag_safe

pytestmark = pytest.mark.anyio

_TAG_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


@given(st.text(min_size=1, max_size=200).filter(lambda s: "\x00" not in s))
def test_tag_safe_round_trip(core: str) -> None:
    message_id = f"<{core}@example.com>"
    value = tag_safe(message_id)
    assert set(value) <= _TAG_CHARS
    assert from_tag_safe(value) == message_id


@pytest.mark.parametrize("value", ["orders", "true", "", "!!!", tag_safe("no-brackets@x")])
def test_a_stranger_tag_is_no_message_id(value: str) -> None:
    assert from_tag_safe(value) is None


async def test_clash_with_user_metadata_is_refused_before_io(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t",
                      metadata={CORRELATION_KEY: "mine"})  # fmt: skip
    provider = PostmarkProvider.from_config("postmark", {"server_token": "pm-secret"})
    answer = httpx.Response(200, json={"MessageID": "pm-1", "ErrorCode": 0})
    sent = await stubbed(provider, message, "POST", "https://api.postmarkapp.com/email", answer)
    assert isinstance(sent.error, MessageError)
    assert CORRELATION_KEY in str(sent.error)
    assert sent.request is None  # refused before any request


async def test_resend_carries_the_encoded_message_id(stubbed: Any) -> None:
    message = Message(sender="s@example.com", to=["a@example.org"], subject="x", text="t")
    provider = ResendProvider.from_config("resend", {"api_key": "re_secret"})
    sent = await stubbed(provider, message, "POST", "https://api.resend.com/emails",
                         httpx.Response(200, json={"id": "re-1"}))  # fmt: skip
    tags = {t["name"]: t["value"] for t in json.loads(sent.request.content)["tags"]}
    assert from_tag_safe(tags[CORRELATION_KEY]) == message.message_id
