"""When every breaker is open, the error names each provider and why it was skipped
(issue 21, item 9), against real refused ports on 127.0.0.1 and the CLI's one line."""

from __future__ import annotations

import re

import pytest

from mailer import AllProvidersFailed, Mailer, Message
from mailer.testing import closed_port

pytestmark = pytest.mark.anyio


def _message() -> Message:
    return Message(sender="app@example.com", to=["ann@example.org"], subject="s", text="t")


async def test_every_provider_is_named_with_why_it_was_skipped() -> None:
    config = {
        "retry": {"attempts": 1},
        "health": {"failure_threshold": 1, "cooldown": 60, "probe": "send"},
        "providers": [f"smtp://127.0.0.1:{closed_port()}?name=primary",
                      f"smtp://127.0.0.1:{closed_port()}?name=backup",
                      f"smtp://127.0.0.1:{closed_port()}?name=spare"],
    }  # fmt: skip
    async with Mailer.from_config(config) as mailer:
        with pytest.raises(AllProvidersFailed):
            await mailer.send(_message())  # each refused: each breaker opens
        with pytest.raises(AllProvidersFailed) as info:
            await mailer.send(_message())  # every one resting: one tried early
    errors = info.value.errors
    assert set(errors) == {"primary", "backup", "spare"}
    skipped = {name: str(e) for name, e in errors.items() if "not tried" in str(e)}
    assert len(skipped) == 2, errors  # the third was tried early, with its own error
    for why in skipped.values():
        assert re.search(r"not tried: resting until \d\d:\d\d:\d\d \(\d+(\.\d+)?s more\) "
                         r"after TransientError: connection refused", why), why  # fmt: skip
    text = str(info.value)
    assert all(name in text for name in ("primary", "backup", "spare"))
    assert not info.value.possibly_delivered
