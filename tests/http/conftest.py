"""Helpers for the HTTP adapter tests: send one message against a respx-stubbed endpoint."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import respx

from mailer import DeliveryError, Message, SendResult
from mailer._provider import Provider


@dataclass
class Sent:
    """What one stubbed send did: the request that went out, and its outcome."""

    request: httpx.Request | None
    calls: int
    result: SendResult | None = None
    error: DeliveryError | None = None

    def json(self) -> Any:
        assert self.request is not None
        return json.loads(self.request.content)


Stubbed = Callable[..., Awaitable[Sent]]


@pytest.fixture
def stubbed() -> Stubbed:
    """``await stubbed(provider, message, "POST", url, answer)`` -> Sent.

    ``answer`` is an httpx.Response or a transport exception. The provider is closed
    afterwards. DeliveryErrors are caught and returned; anything else propagates.
    """

    async def run(
        provider: Provider,
        message: Message,
        method: str,
        url: str,
        answer: httpx.Response | Exception,
    ) -> Sent:
        with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
            route = router.request(method, url)
            if isinstance(answer, Exception):
                route.mock(side_effect=answer)
            else:
                route.mock(return_value=answer)
            result = error = None
            try:
                result = await provider.send(message)
            except DeliveryError as exc:
                error = exc
            finally:
                await provider.aclose()
            request = route.calls.last.request if route.calls else None
            return Sent(request=request, calls=route.call_count, result=result, error=error)

    return run
