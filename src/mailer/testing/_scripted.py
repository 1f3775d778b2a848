"""A memory provider that fails on a script, for testing failover without servers."""

from __future__ import annotations

from typing import Any

from ..providers._memory import MemoryConfig, MemoryProvider, Outcome

__all__ = ["ScriptedProvider"]


class ScriptedProvider(MemoryProvider):
    """A memory provider built from a list of outcomes: ``ScriptedProvider("p", ["transient"])``.

    Outcomes are names (``ok``, ``transient``, ``rate_limited:30``, ``auth``,
    ``permanent``, ``uncertain``, ``refuse:a@x.org``), DeliveryError instances, or callables.
    """

    def __init__(self, name: str, outcomes: list[Outcome] | None = None, **config: Any) -> None:
        super().__init__(name, MemoryConfig(**config))
        if outcomes:
            self.script(*outcomes)
