"""A worker that kills itself with SIGKILL at one phase of a send (for test_crash.py).

``python crash_worker.py CONFIG PHASE``; phases:

* ``claimed``: right after a claim committed, before any I/O
* ``before-io``: as a send starts
* ``committed``: right after the commit point was recorded, before the attempt crosses it
* ``before-result``: a provider accepted the message; its outcome is not yet recorded
* ``at-the-gate``: a claimed send finds the Mailer's admission gate full (the provider's
  pool busy with the sends admitted before it), with the configured concurrency
  (``auto`` by default) instead of 4
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from mailer import Mailer, Message, SendResult
from mailer._outbox.store import Claimed, Outcome


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def main(config: str, phase: str) -> None:
    mailer = Mailer.from_config(config)
    outbox = mailer.outbox
    store: Any = outbox.store
    claim, mark, finish, deliver = store.claim, store.mark_committing, store.finish, outbox._deliver

    async def claim_then_die(*args: Any, **kwargs: Any) -> list[Claimed]:
        got: list[Claimed] = await claim(*args, **kwargs)
        if got:
            die()
        return got

    async def deliver_dies(message: Message, providers: Sequence[str] | None) -> SendResult:
        die()
        return await deliver(message, providers)

    async def mark_then_die(*args: Any) -> bool:
        ok: bool = await mark(*args)
        die()
        return ok

    async def finish_dies(row: int, claim: str, outcome: Outcome) -> bool:
        if outcome.state == "sent":
            die()
        ok: bool = await finish(row, claim, outcome)
        return ok

    if phase == "claimed":
        store.claim = claim_then_die
    elif phase == "before-io":
        outbox._deliver = deliver_dies  # type: ignore[method-assign]
    elif phase == "committed":
        store.mark_committing = mark_then_die
    elif phase == "before-result":
        store.finish = finish_dies
    elif phase == "at-the-gate":
        from mailer._routing.admission import Admission

        assert mailer._admission is not None, "at-the-gate needs a provider with a bounded pool"

        async def enter_dies(self: Admission, deadline: float) -> None:
            die()

        # on the class (its instances have __slots__), in this throwaway process only
        Admission.enter = enter_dies  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown phase {phase}")
    async with mailer:
        await outbox.run(concurrency=None if phase == "at-the-gate" else 4)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], backend="asyncio")
