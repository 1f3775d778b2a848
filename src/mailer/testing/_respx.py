"""The one respx harness: one HTTP endpoint stubbed with one answer, and a send through it.

For the adapter checks that are about mapping (an API's status and body to the right
DeliveryError, a message to the right JSON) no socket is needed: respx answers inside
httpx. ``assert_all_mocked`` makes a request to any other URL fail the test, so a wrong
endpoint cannot pass unnoticed. Transport faults belong on :class:`HTTPTestServer`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from .._errors import DeliveryError
from .._message import Message
from .._provider import Provider
from .._result import SendResult
from ._deps import require

if TYPE_CHECKING:
    import respx

__all__ = ["Sent", "send_stubbed", "stub_endpoint"]


@contextmanager
def stub_endpoint(
    method: str, url: str, answer: httpx.Response | Exception
) -> Iterator[respx.Route]:
    """Within the block, ``method url`` answers ``answer`` (a response, or a transport
    exception raised instead); any other request fails. Yields the route (its calls)."""
    mock = require("respx").mock
    with mock(assert_all_called=False, assert_all_mocked=True) as router:
        route = router.request(method, url)
        if isinstance(answer, Exception):
            route.mock(side_effect=answer)
        else:
            route.mock(return_value=answer)
        yield route


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


async def send_stubbed(
    provider: Provider,
    message: Message,
    method: str,
    url: str,
    answer: httpx.Response | Exception,
) -> Sent:
    """Send ``message`` through ``provider`` against the stubbed endpoint, then close it.

    DeliveryErrors are caught and returned in :class:`Sent`; anything else propagates.
    """
    with stub_endpoint(method, url, answer) as route:
        result = error = None
        try:
            result = await provider.send(message)
        except DeliveryError as exc:
            error = exc
        finally:
            await provider.aclose()
        request = route.calls.last.request if route.calls else None
        return Sent(request=request, calls=route.call_count, result=result, error=error)
