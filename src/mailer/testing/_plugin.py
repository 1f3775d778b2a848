"""The pytest plugin (registered through the ``pytest11`` entry point as ``mailer``).

It holds only the fixtures, so that the kit's servers can be imported without pytest:
the demo runs on them from a plain install.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .._message import Message
from ..providers._memory import recording

__all__ = ["outbox"]


@pytest.fixture
def outbox() -> Iterator[list[Message]]:
    """Messages accepted by memory providers during this test, like Django's
    ``mail.outbox``."""
    with recording() as messages:
        yield messages
