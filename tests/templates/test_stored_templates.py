"""Each API's stored-template request, and its data rules checked before any I/O.

The requests are built by the adapters' walks (no I/O); a rule broken is an
UnsupportedFeature from that provider (so the Mailer moves on to one that renders locally).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from mailer import Message
from mailer._errors import MessageError, UnsupportedFeature
from mailer.providers import (
    MailgunProvider,
    PostmarkProvider,
    ResendProvider,
    SendGridProvider,
    SESProvider,
)

DATA = {"name": "Ada", "plan": "Pro", "items": [{"sku": "a-1", "qty": 2}]}


def _message(**extra: Any) -> Message:
    return Message(**{
        "from": "app@example.com", "to": "ada@example.org", "template": "welcome",
        "template_data": DATA, **extra,
    })  # fmt: skip


def test_sendgrid_dynamic_template() -> None:
    provider = SendGridProvider.from_config("sg", {"api_key": "k", "templates": {"welcome": "d-1"}})
    body = provider.build_request(_message()).json
    assert body["template_id"] == "d-1"
    assert body["personalizations"][0]["dynamic_template_data"] == DATA
    assert "content" not in body and "subject" not in body


def test_sendgrid_refuses_data_over_its_limit_and_legacy_ids() -> None:
    provider = SendGridProvider.from_config("sg", {"api_key": "k", "templates": {"welcome": "d-1"}})
    big = _message(template_data={"blob": "x" * 10_001})
    with pytest.raises(UnsupportedFeature, match="at most 10000 bytes of dynamic_template_data"):
        provider.build_request(big)
    legacy = SendGridProvider.from_config("sg", {"api_key": "k", "templates": {"welcome": "0a1b"}})
    with pytest.raises(UnsupportedFeature, match="dynamic templates only"):
        legacy.build_request(_message())


def test_postmark_alias_and_id_go_to_with_template() -> None:
    provider = PostmarkProvider.from_config(
        "pm", {"server_token": "t", "templates": {"welcome": "welcome-v2", "reset": "3141"}}
    )
    request = provider.build_request(_message())
    assert request.path == "/email/withTemplate"
    assert request.json is not None
    assert request.json["TemplateAlias"] == "welcome-v2"
    assert request.json["TemplateModel"] == DATA
    assert "Subject" not in request.json and "TextBody" not in request.json
    by_id = provider.build_request(_message(template="reset")).json
    assert by_id is not None and by_id["TemplateId"] == 3141


def test_postmark_refuses_a_model_key_mustachio_cannot_reach() -> None:
    provider = PostmarkProvider.from_config(
        "pm", {"server_token": "t", "templates": {"welcome": "welcome-v2"}}
    )
    with pytest.raises(UnsupportedFeature, match=r"TemplateModel key 'first\.name'"):
        provider.build_request(_message(template_data={"user": {"first.name": "Ada"}}))


def test_mailgun_template_and_variables_fields() -> None:
    provider = MailgunProvider.from_config("mg", {
        "api_key": "k", "domain": "mg.example.com", "templates": {"welcome": "welcome"},
    })  # fmt: skip
    request = provider.build_request(_message())
    fields = {name: value[1] for name, value in request.files or []}
    assert fields["template"] == "welcome"
    assert json.loads(fields["t:variables"]) == DATA
    assert "subject" not in fields and "text" not in fields


def test_resend_template_object_and_its_variable_rules() -> None:
    provider = ResendProvider.from_config(
        "rs", {"api_key": "re_k", "templates": {"welcome": "t-1"}}
    )
    flat = {"name": "Ada", "count": 3}
    body = provider.build_request(_message(template_data=flat)).json
    assert body is not None and body["template"] == {"id": "t-1", "variables": flat}
    with pytest.raises(UnsupportedFeature, match="strings or numbers, and 'items' is a list"):
        provider.build_request(_message())


def test_ses_template_content_carries_the_headers() -> None:
    provider = SESProvider.from_config("ses", {
        "region": "eu-west-1", "access_key_id": "AKIDEXAMPLE", "secret_access_key": "s",
        "templates": {"welcome": "Welcome"},
    })  # fmt: skip
    message = _message(headers={"X-Campaign": "spring"})
    body = provider.build_request(message).json
    assert body is not None
    template = body["Content"]["Template"]
    assert template["TemplateName"] == "Welcome"
    assert json.loads(template["TemplateData"]) == DATA
    headers = {h["Name"]: h["Value"] for h in template["Headers"]}
    assert headers["X-Campaign"] == "spring"


def test_a_template_message_takes_no_subject_or_body() -> None:
    with pytest.raises(MessageError, match="leave out subject, html"):
        _message(subject="Hi", html="<p>x</p>")
    with pytest.raises(MessageError, match="invalid template name"):
        _message(template="../etc/passwd")
    with pytest.raises(MessageError, match="JSON-serialisable"):
        _message(template_data={"when": object()})
