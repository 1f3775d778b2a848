"""The memory provider: keeps messages in a list. For tests, and for scripting failures.

What it keeps is bounded (``keep``, the most recent messages per provider) and held by
the provider alone, so it goes with the Mailer that owns it; the module-wide ``outbox``
(the pytest fixture's) fills only while that fixture records. A script or a benchmark
that sends 100k messages through ``memory://`` once held every one of them, module-wide,
after its Mailer was closed.

Outcomes can be scripted, in config (``outcomes = ["transient", "ok"]``) or in code
(``provider.script(TransientError("down"), "ok")``), so that failover can be tested
against real Mailer logic without a network. Each send takes the next scripted outcome;
when the script is used up, sends succeed (or the script repeats, with ``repeat``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import SplitResult

import anyio
from pydantic import Field, field_validator

from .._errors import (
    AuthError,
    DeliveryUncertain,
    MailerError,
    PermanentError,
    RateLimited,
    RecipientsRefused,
    TransientError,
)
from .._message import Message
from .._message.dkim import DKIMOptions, choose, sign
from .._provider import Provider, ProviderConfig
from .._result import SendResult

__all__ = ["MemoryProvider", "outbox", "recording"]

#: every message any memory provider accepted while ``recording()`` (the pytest
#: ``outbox`` fixture), in order
outbox: list[Message] = []
_recording = 0


@contextmanager
def recording() -> Iterator[list[Message]]:
    """Collect every message memory providers accept meanwhile in ``outbox`` (emptied on
    the way in and out): the pytest ``outbox`` fixture, like Django's ``mail.outbox``."""
    global _recording
    outbox.clear()
    _recording += 1
    try:
        yield outbox
    finally:
        _recording -= 1
        outbox.clear()


Outcome = str | MailerError | Callable[[Message], Any]

_NAMED = (
    "ok",
    "transient",
    "rate_limited",
    "auth",
    "permanent",
    "uncertain",
    "refuse",
    "hang",
    "stall",
)


def _check_outcome(spec: str) -> str:
    kind = spec.split(":", 1)[0]
    if kind not in _NAMED:
        raise ValueError(f"unknown outcome {spec!r}; use one of {', '.join(_NAMED)}")
    return spec


class MemoryConfig(ProviderConfig):
    #: scripted outcomes, one per send: ok, transient, rate_limited[:seconds], auth,
    #: permanent, uncertain, refuse:addr[,addr]  (refuse = those recipients refused),
    #: hang (never answers, before the commit point), stall (the message is taken, then
    #: no answer ever comes: after the commit point)
    outcomes: list[str] = Field(default_factory=list)
    #: start the script again when it is used up (for a provider that keeps failing)
    repeat: bool = False
    #: seconds each send takes
    latency: float = Field(default=0.0, ge=0)
    #: DKIM-sign every message (a message's own ``dkim`` wins); see ``MemoryProvider.raw``
    dkim: DKIMOptions | None = Field(default=None, repr=False)
    #: the most recent messages kept in ``messages`` and ``raw`` (older ones are dropped)
    keep: int = Field(default=1000, ge=1)

    @field_validator("outcomes")
    @classmethod
    def _outcomes(cls, value: list[str]) -> list[str]:
        return [_check_outcome(spec) for spec in value]


class MemoryProvider(Provider[MemoryConfig]):
    Config = MemoryConfig
    config: MemoryConfig
    #: ``latency`` and the refusals come before the commit point; acceptance after it
    reports_commit_point = True

    def __init__(self, name: str = "memory", config: MemoryConfig | None = None) -> None:
        super().__init__(name, config or MemoryConfig())
        #: the last ``keep`` messages accepted, oldest first (lists, as tests compare and
        #: slice them; trimming the head of 1000 items costs a memmove of 8 KB)
        self.messages: list[Message] = []
        #: the bytes each of them went out as (DKIM-Signature first when signed)
        self.raw: list[bytes] = []
        #: every message accepted, the dropped ones included
        self.accepted = 0
        self._script: deque[Outcome] = deque(self.config.outcomes)
        self.calls = 0
        self.closed = False

    @classmethod
    def config_from_url(cls, url: SplitResult, params: dict[str, str]) -> dict[str, Any]:
        """``memory://?outcomes=transient,ok&repeat=true``"""
        config: dict[str, Any] = {}
        if params.get("outcomes"):
            config["outcomes"] = params.pop("outcomes").split(",")
        config.update(params)
        return config

    def script(self, *outcomes: Outcome) -> None:
        """Queue outcomes: names as in config, DeliveryError instances, or callables."""
        for o in outcomes:
            if isinstance(o, str):
                _check_outcome(o)
            self._script.append(o)

    def _next(self) -> Outcome:
        if not self._script:
            return "ok"
        outcome = self._script.popleft()
        if self.config.repeat:
            self._script.append(outcome)
        return outcome

    async def _send(self, message: Message) -> SendResult:
        self.calls += 1
        dkim = choose(message, self.config.dkim)
        signature = await sign(message, dkim) if dkim is not None else b""
        outcome = self._next()
        if self.config.latency:
            await anyio.sleep(self.config.latency)
        if callable(outcome) and not isinstance(outcome, MailerError):
            outcome = outcome(message) or "ok"
        if isinstance(outcome, MailerError):
            raise outcome
        assert isinstance(outcome, str)
        kind, _, arg = outcome.partition(":")
        rejected: dict[str, str] = {}
        if kind == "hang":  # accepts the connection, never answers: before the commit point
            await anyio.sleep_forever()
        if kind == "transient":
            raise TransientError("scripted transient failure", code=451)
        if kind == "rate_limited":
            raise RateLimited(
                "scripted rate limit", code=429, retry_after=float(arg) if arg else None
            )
        if kind == "auth":
            raise AuthError("scripted auth failure", code=535)
        if kind == "permanent":
            raise PermanentError("scripted permanent failure", code=550)
        await self.commit_point()  # from here on, the message "leaves"
        if kind == "uncertain":
            # The message "left": it is recorded, as a real server may have kept it.
            self._accept(message, signature)
            raise DeliveryUncertain("scripted uncertain outcome")
        if kind == "stall":  # the message left, no answer ever comes: after the commit point
            self._accept(message, signature)
            await anyio.sleep_forever()
        if kind == "refuse":
            refused = {a.strip() for a in arg.split(",") if a.strip()}
            rejected = {
                r: "550 5.1.1 scripted refusal" for r in message.envelope_recipients if r in refused
            }
            if len(rejected) == len(message.envelope_recipients):
                raise RecipientsRefused("all recipients refused", refused=rejected, code=550)
        self._accept(message, signature)
        accepted = [r for r in message.envelope_recipients if r not in rejected]
        return SendResult(
            provider=self.name, message_id=message.message_id, accepted=accepted, rejected=rejected
        )

    def _accept(self, message: Message, signature: bytes) -> None:
        self.accepted += 1
        self.messages.append(message)
        self.raw.append(signature + message.as_bytes() if signature else message.as_bytes())
        if len(self.messages) > self.config.keep:
            del self.messages[0], self.raw[0]
        if _recording:
            outbox.append(message)

    async def aclose(self) -> None:
        """Closed with its Mailer; what it kept stays readable (tests look after the
        ``async with``) and goes when the provider does."""
        self.closed = True
