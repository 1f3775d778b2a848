"""Helpers for the HTTP adapter tests: send one message against a respx-stubbed endpoint
(the test kit's :func:`mailer.testing.send_stubbed`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from mailer.testing import Sent, send_stubbed

__all__ = ["Sent", "Stubbed"]

Stubbed = Callable[..., Awaitable[Sent]]


@pytest.fixture
def stubbed() -> Stubbed:
    """``await stubbed(provider, message, "POST", url, answer)`` -> Sent.

    ``answer`` is an httpx.Response or a transport exception. The provider is closed
    afterwards. DeliveryErrors are caught and returned; anything else propagates.
    """
    return send_stubbed
