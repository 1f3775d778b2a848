"""A conformance test case for provider plugins (``mailer.testing.ProviderConformance``).

A plugin proves it keeps the contract the Mailer relies on (which errors it raises for
which outcomes, that secrets never leak, that unsupported features fail loudly) by
subclassing one class in its own tests::

    import httpx
    from mailer.testing import ProviderConformance
    from mailer_acme import AcmeProvider

    class TestAcmeConformance(ProviderConformance):
        provider_class = AcmeProvider
        config = {"api_key": "acme-secret-key"}
        secrets = ("acme-secret-key",)
        endpoint = ("POST", "https://api.acme.example/v1/send")
        entry_point = "acme"
        expected_provider_message_id = "msg-1"

        def success_response(self) -> httpx.Response:
            return httpx.Response(200, json={"id": "msg-1"})

The HTTP endpoint is stubbed with respx, so the checks need no network. They run each
coroutine with :func:`asyncio.run` inside plain test functions, so no async pytest plugin
is needed. Why these checks: each one is an outcome the Mailer decides failover from, and
a plugin that maps it wrongly either loses mail (fails over after a possible delivery) or
duplicates it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email
import email.policy
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import unquote_plus

import httpx
import pytest

from .._errors import (
    AuthError,
    ConfigError,
    DeliveryError,
    DeliveryUncertain,
    MessageError,
    RateLimited,
    RecipientsRefused,
    TransientError,
)
from .._message import Attachment, Message
from .._provider import Provider
from .._result import SendResult
from ._respx import stub_endpoint

if TYPE_CHECKING:
    import respx

__all__ = ["ErrorCase", "ProviderConformance"]

T = TypeVar("T")


@dataclass(frozen=True)
class ErrorCase:
    """One documented error answer of an API, and what it must become.

    ``body`` is the API's documented error body (a JSON object, or text); ``rest`` the
    range of ``retry_after`` seconds a RateLimited must carry (the provider's rest).
    """

    name: str
    status: int
    body: dict[str, Any] | list[Any] | str
    expect: type[DeliveryError]
    failover: bool
    rest: tuple[float, float] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    refused: tuple[str, ...] | None = None

    def response(self) -> httpx.Response:
        if isinstance(self.body, str):
            return httpx.Response(self.status, headers=self.headers, text=self.body)
        return httpx.Response(self.status, headers=self.headers, json=self.body)


#: the Message features the field check sends one at a time, with a marker each
_MARK = "mkr7q"
_BASE: dict[str, Any] = {
    "sender": "s@example.com",
    "to": ["to@example.org"],
    "subject": "x",
    "text": "t",
}
_FEATURES: dict[str, dict[str, Any]] = {
    "to": {"to": [f"{_MARK}-to@example.org"]},
    "cc": {"cc": [f"{_MARK}-cc@example.org"]},
    "bcc": {"bcc": [f"{_MARK}-bcc@example.org"]},
    "bcc only": {"to": [], "bcc": [f"{_MARK}-bcc@example.org"]},
    "reply-to": {"reply_to": [f"{_MARK}-reply@example.org"]},
    "subject": {"subject": f"{_MARK} subject"},
    "text": {"text": f"{_MARK} text"},
    "html": {"html": f"<p>{_MARK} html</p>"},
    "html only": {"text": None, "html": f"<p>{_MARK} html</p>"},
    "attachment": {
        "attachments": [Attachment(content=f"{_MARK} file".encode(), filename=f"{_MARK}.txt")]
    },
    "inline": {
        "html": '<img src="cid:logo@x">',
        "attachments": [
            Attachment(
                content=f"{_MARK} image".encode(),
                filename="logo.png",
                content_type="image/png",
                inline=True,
                content_id="logo@x",
            )
        ],
    },
    "header": {"headers": {"X-Conformance": f"{_MARK} header"}},
    "non-ASCII header": {"headers": {"X-Conformance": f"Grüße {_MARK}"}},
    "tag": {"tags": [f"{_MARK}tag"]},
    "metadata": {"metadata": {f"{_MARK}key": f"{_MARK}value"}},
    "envelope": {"envelope": {"to": [f"{_MARK}-envelope@example.org"]}},
    "provider options": {"provider_options": {"conformance": {f"x_{_MARK}": f"{_MARK} opt"}}},
}


def _texts(request: httpx.Request) -> str:
    """Every readable text in a request: the body, JSON strings, base64 and MIME inside
    them (decoded), multipart parts, header values; encoded-words decoded."""
    found: list[str] = [f"{k}: {v}" for k, v in request.headers.items()]
    found += [str(request.url), unquote_plus(str(request.url))]
    content = request.content

    def mime(data: bytes) -> None:
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        for part in parsed.walk():
            found.extend(f"{k}: {v}" for k, v in part.items())
            found.append(str(part.get_filename() or ""))
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                found.append(payload.decode("utf-8", "replace"))

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                found.append(str(key))
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.append(value)
            try:
                raw = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return
            found.append(raw.decode("utf-8", "replace"))
            if b"\r\n\r\n" in raw:
                mime(raw)

    content_type = request.headers.get("Content-Type", "")
    if content_type.startswith("multipart/"):
        mime(f"Content-Type: {content_type}\r\n\r\n".encode() + content)
    else:
        try:
            walk(json.loads(content))
        except ValueError:  # form-encoded or plain
            found.append(content.decode("utf-8", "replace"))
            found.append(unquote_plus(content.decode("utf-8", "replace")))
    out = []
    for text in found:
        out.append(text)
        if "=?" in text:
            with suppress(ValueError, LookupError):
                out.append(str(make_header(decode_header(text))))
    return "\n".join(out)


class ProviderConformance:
    """Base test class: subclass it as ``Test<Something>`` and fill in the class attributes."""

    #: the provider class under test
    provider_class: ClassVar[type[Provider]]
    #: a valid config mapping whose credentials are fake
    config: ClassVar[dict[str, Any]]
    #: the secret values in ``config``: none may appear in a repr, str, log or error
    secrets: ClassVar[tuple[str, ...]] = ()
    #: (method, full URL) of the send call, as the provider makes it with ``config``
    endpoint: ClassVar[tuple[str, str]]
    #: the entry-point name the distribution registers in "mailer.providers", if any
    entry_point: ClassVar[str | None] = None
    #: the provider's id in ``success_response``, checked on the SendResult when set
    expected_provider_message_id: ClassVar[str | None] = None
    #: the config option that sends without unsupported features, if the provider has one
    ignore_unsupported_option: ClassVar[str | None] = "ignore_unsupported"
    #: the API's documented error answers and what each must become (docs/providers.md)
    documented_errors: ClassVar[tuple[ErrorCase, ...]] = ()

    # -- hooks a plugin's test overrides ---------------------------------------------

    def success_response(self) -> httpx.Response:
        """The provider's answer to a successful send."""
        raise NotImplementedError("override success_response() in the conformance test")

    def error_response(self, status: int, headers: dict[str, str] | None = None) -> httpx.Response:
        """An error answer with ``status``; by default one that echoes a secret back, to
        check that the provider scrubs what it puts on exceptions."""
        echoed = self.secrets[0] if self.secrets else "no secret"
        return httpx.Response(status, headers=headers, json={"message": f"refused (key {echoed})"})

    def unsupported_message(self) -> Message | None:
        """A message using a feature the provider lacks, or None if it lacks none."""
        return None

    def message(self) -> Message:
        """The message sent by the checks."""
        return Message(
            sender="Conformance <sender@example.com>",
            to=["to@example.org"],
            cc=["cc@example.org"],
            subject="conformance",
            text="plain body",
            html="<p>html body</p>",
        )

    def make_provider(self, **overrides: Any) -> Provider:
        return self.provider_class.from_config("conformance", {**self.config, **overrides})

    # -- plumbing --------------------------------------------------------------------

    @staticmethod
    def run(factory: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            return await factory()

        return asyncio.run(main())

    @contextmanager
    def stub(self, response: httpx.Response | Exception) -> Iterator[respx.Route]:
        """Stub the send endpoint with one answer (or a transport exception)."""
        method, url = self.endpoint
        with stub_endpoint(method, url, response) as route:
            yield route

    def send(self, provider: Provider, message: Message | None = None) -> SendResult:
        async def go() -> SendResult:
            try:
                return await provider.send(message or self.message())
            finally:
                await provider.aclose()

        return self.run(go)

    def send_error(
        self, answer: httpx.Response | Exception, provider: Provider | None = None
    ) -> tuple[DeliveryError, respx.Route]:
        provider = provider or self.make_provider()
        with self.stub(answer) as route, pytest.raises(DeliveryError) as info:
            self.send(provider)
        self.assert_no_secret(info.value)
        return info.value, route

    def assert_no_secret(self, *things: object) -> None:
        for thing in things:
            texts = [repr(thing), str(thing)]
            if isinstance(thing, DeliveryError):
                texts.append(thing.response or "")
                texts.extend(str(a) for a in thing.args)
            for secret in self.secrets:
                for text in texts:
                    assert secret not in text, f"secret leaked in {type(thing).__name__}"

    # -- the checks ------------------------------------------------------------------

    def test_from_config_builds_provider(self) -> None:
        provider = self.make_provider()
        assert isinstance(provider, Provider)
        assert provider.name == "conformance"

    def test_unknown_option_is_config_error(self) -> None:
        with pytest.raises(ConfigError) as info:
            self.make_provider(no_such_option_xyz=1)
        assert "no_such_option_xyz" in str(info.value)
        self.assert_no_secret(info.value)

    def test_invalid_config_error_hides_secrets(self) -> None:
        """A config rejected for another reason must not echo the secrets it was given."""
        with pytest.raises(ConfigError) as info:
            self.make_provider(timeout="not a number", no_such_option_xyz=1)
        self.assert_no_secret(info.value)

    def test_repr_and_str_hide_secrets(self) -> None:
        provider = self.make_provider()
        self.assert_no_secret(provider, getattr(provider, "config", None))

    def test_successful_send(self) -> None:
        message = self.message()
        with self.stub(self.success_response()) as route:
            result = self.send(self.make_provider(), message)
        assert route.call_count == 1
        assert isinstance(result, SendResult)
        assert result.provider == "conformance"
        assert result.message_id == message.message_id
        assert result.provider_message_id or result.message_id
        if self.expected_provider_message_id is not None:
            assert result.provider_message_id == self.expected_provider_message_id
        assert set(result.accepted) | set(result.rejected) == set(message.envelope_recipients)
        request = route.calls.last.request
        for secret in self.secrets:
            assert secret not in str(request.url), "a secret was put in the URL"
        self.assert_no_secret(result)

    def test_429_is_rate_limited_with_retry_after(self) -> None:
        error, _ = self.send_error(self.error_response(429, {"Retry-After": "7"}))
        assert isinstance(error, RateLimited)
        assert error.retry_after is not None
        assert 6 <= error.retry_after <= 7
        assert error.code == 429

    def test_429_with_http_date_retry_after(self) -> None:
        from datetime import UTC, datetime, timedelta
        from email.utils import format_datetime

        when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
        error, _ = self.send_error(self.error_response(429, {"Retry-After": when}))
        assert isinstance(error, RateLimited)
        assert error.retry_after is not None
        assert 100 <= error.retry_after <= 121

    def test_401_is_auth_error_without_secret(self) -> None:
        error, _ = self.send_error(self.error_response(401))
        assert isinstance(error, AuthError)
        assert error.failover
        assert error.code == 401
        assert error.provider == "conformance"

    def test_503_is_transient(self) -> None:
        error, _ = self.send_error(self.error_response(503))
        assert type(error) is TransientError
        assert error.failover
        assert error.code == 503

    def test_connect_error_is_transient(self) -> None:
        error, _ = self.send_error(httpx.ConnectError("connection refused"))
        assert type(error) is TransientError

    def test_read_timeout_is_uncertain(self) -> None:
        error, _ = self.send_error(httpx.ReadTimeout("timed out"))
        assert isinstance(error, DeliveryUncertain)
        assert not error.failover

    def test_dropped_response_is_uncertain(self) -> None:
        error, _ = self.send_error(httpx.RemoteProtocolError("server disconnected"))
        assert isinstance(error, DeliveryUncertain)

    def test_unsupported_feature_fails_loudly(self) -> None:
        message = self.unsupported_message()
        if message is None:
            pytest.skip("the provider declares no unsupported feature")
        with self.stub(self.success_response()) as route:
            with pytest.raises(MessageError) as info:
                self.send(self.make_provider(), message)
            assert route.call_count == 0, "a request was made before refusing the message"
        assert "conformance" in str(info.value)
        if self.ignore_unsupported_option is not None:
            provider = self.make_provider(**{self.ignore_unsupported_option: True})
            with self.stub(self.success_response()) as route:
                result = self.send(provider, message)
            assert route.call_count == 1
            assert result.provider == "conformance"

    def test_documented_errors(self) -> None:
        """Each documented error body becomes the error class the failover rule wants:
        account, sender identity, domain, quota or plan -> fail over (resting the
        provider); this message or its recipients -> no failover."""
        if not self.documented_errors:
            pytest.skip("no documented error answers declared")
        for case in self.documented_errors:
            error, _ = self.send_error(case.response())
            where = f"{case.name}: got {type(error).__name__}: {error}"
            assert type(error) is case.expect, where
            assert error.failover is case.failover, where
            assert error.code == case.status, where
            assert error.provider == "conformance", where
            if case.rest is not None:
                assert isinstance(error, RateLimited), where
                assert error.retry_after is not None, where
                assert case.rest[0] <= error.retry_after <= case.rest[1], where
            if case.refused is not None:
                assert isinstance(error, RecipientsRefused), where
                assert sorted(error.refused) == sorted(case.refused), where

    def test_every_field_is_sent_or_refused(self) -> None:
        """No Message field is dropped silently: each one, sent alone, either shows up in
        the request (raw, base64, MIME, form-encoded or RFC 2047-encoded) or is refused
        before I/O. Dropping cc, bcc or a header sends mail that is wrong without error."""
        for feature, fields in _FEATURES.items():
            message = Message(**{**_BASE, **fields})
            with self.stub(self.success_response()) as route:
                try:
                    self.send(self.make_provider(), message)
                except MessageError:
                    assert route.call_count == 0, f"{feature}: refused after a request"
                    continue
            assert route.call_count == 1, feature
            texts = _texts(route.calls.last.request)
            for value in _markers(fields):
                assert value in texts, f"{feature}: {value!r} is not in the request"
            if getattr(self.provider_class, "sends_message_id", True):
                assert message.message_id is not None
                assert message.message_id.strip("<>") in texts, "the Message-ID is not sent"

    def test_dkim_is_signed_or_refused(self) -> None:
        """A message asking for DKIM goes out with its DKIM-Signature, or is refused before
        I/O: an API that rebuilds the MIME from JSON fields cannot carry a signature made
        over bytes it does not send, and sending it unsigned would be silent."""
        pytest.importorskip("dkim")
        pytest.importorskip("nacl")
        seed = base64.b64encode(os.urandom(32)).decode()  # any 32 bytes: an ed25519 key
        options = {
            "domain": "example.com",
            "selector": "conformance",
            "private_key": seed,
            "algorithm": "ed25519-sha256",
        }
        message = Message(**_BASE, dkim=options)
        refusal: str | None = None
        with self.stub(self.success_response()) as route:
            try:
                self.send(self.make_provider(), message)
            except MessageError as exc:
                refusal = str(exc)
                assert route.call_count == 0, "dkim refused after a request"
        if refusal is not None:
            assert "dkim" in refusal, refusal
            return
        assert route.call_count == 1
        assert "DKIM-Signature: v=1" in _texts(route.calls.last.request), "signature not sent"

    def test_verify_checks_credentials(self) -> None:
        """``verify()`` must reach the provider with the credentials, not just return."""
        import respx

        provider = self.make_provider()

        async def go() -> None:
            try:
                await provider.verify()
            finally:
                await provider.aclose()

        with respx.mock(assert_all_called=False) as router:
            route = router.route().mock(return_value=self.error_response(401))
            with pytest.raises(AuthError) as info:
                self.run(go)
        assert route.call_count >= 1
        self.assert_no_secret(info.value)

    def test_registered_entry_point(self) -> None:
        if self.entry_point is None:
            pytest.skip("no entry point declared")
        found = entry_points(group="mailer.providers", name=self.entry_point)
        assert found, f"no 'mailer.providers' entry point named {self.entry_point!r}"
        assert next(iter(found)).load() is self.provider_class

    def test_aclose_twice_is_safe(self) -> None:
        provider = self.make_provider()

        async def twice() -> None:
            await provider.aclose()
            await provider.aclose()

        self.run(twice)


def _markers(fields: dict[str, Any]) -> list[str]:
    """The marked values of a feature's fields, as they must appear in the request."""
    out: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, Attachment):
            out.append(value.data().decode())
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(key)
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str) and _MARK in value:
            out.append(value)

    walk(fields)
    return out
