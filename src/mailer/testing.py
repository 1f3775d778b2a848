"""Helpers for testing code that sends mail, and for testing provider plugins.

* ``MemoryProvider``: records messages; ``ScriptedProvider``: fails on a script.
* ``ProviderConformance``: the shared test case every provider plugin subclasses.
* A pytest plugin (registered through the ``pytest11`` entry point) with an ``outbox``
  fixture: the messages every memory provider accepted during the test, like Django's
  ``mail.outbox``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ._conformance import ErrorCase, ProviderConformance
from ._message import Message
from .providers._memory import MemoryConfig, MemoryProvider, Outcome
from .providers._memory import outbox as _outbox

__all__ = ["ErrorCase", "MemoryProvider", "ProviderConformance", "ScriptedProvider", "outbox"]


class ScriptedProvider(MemoryProvider):
    """A memory provider built from a list of outcomes: ``ScriptedProvider("p", ["transient"])``.

    Outcomes are names (``ok``, ``transient``, ``rate_limited:30``, ``auth``,
    ``permanent``, ``uncertain``, ``refuse:a@x.org``), DeliveryError instances, or callables.
    """

    def __init__(self, name: str, outcomes: list[Outcome] | None = None, **config: Any) -> None:
        super().__init__(name, MemoryConfig(**config))
        if outcomes:
            self.script(*outcomes)


@pytest.fixture
def outbox() -> Iterator[list[Message]]:
    """Messages accepted by memory providers during this test."""
    _outbox.clear()
    yield _outbox
    _outbox.clear()
