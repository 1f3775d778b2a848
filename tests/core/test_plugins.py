"""Entry-point discovery, with a real installed plugin (tests/fixtures/mailer-testplugin)."""

from __future__ import annotations

import pytest

from mailer import Mailer, Message
from mailer._plugins import discover, load_provider_class

pytestmark = pytest.mark.anyio


def test_discover_lists_builtins_and_installed_plugin() -> None:
    infos = {i.type: i for i in discover()}
    for builtin in ("memory", "file"):
        assert infos[builtin].ok and infos[builtin].distribution == "mailer-failover"
    assert infos["echo"].ok and infos["echo"].distribution == "mailer-testplugin"
    broken = infos["broken"]
    assert not broken.ok and broken.error is not None
    assert "mailer_testplugin_missing_dependency" in broken.error


async def test_plugin_used_through_config_only() -> None:
    cls = load_provider_class("echo")
    assert cls.__module__ == "mailer_testplugin"
    m = Mailer.from_config(
        {
            "providers": [
                {"type": "broken", "enabled": False},
                {"type": "echo", "config": {"token": "t0k3n"}},
            ]
        }
    )
    result = await m.send(Message(sender="a@example.com", to=["b@example.org"], text="x"))
    assert result.provider == "echo"
    assert cls.sent[-1].message_id == result.message_id  # type: ignore[attr-defined]


def test_broken_plugin_does_not_break_others() -> None:
    # loading the broken one fails clearly, the others still load
    from mailer import ConfigError

    with pytest.raises(ConfigError, match="broken"):
        load_provider_class("broken")
    assert load_provider_class("memory").__name__ == "MemoryProvider"
