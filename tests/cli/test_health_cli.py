"""``mailer health``: the shared state as Redis has it, and the memory store's note."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.cli.conftest import Runner
from tests.health.redis_kit import RedisServer

from mailer import Mailer, Message
from mailer.testing import ScriptedProvider, eventually


def _config(tmp_path: Path, store: str, prefix: str) -> Path:
    path = tmp_path / "mailer.toml"
    path.write_text(f"""
[health]
store = "{store}"
prefix = "{prefix}"
cooldown = 60

[[providers]]
type = "memory"
name = "primary"

[[providers]]
type = "memory"
name = "backup"
rate_limit = {{ messages = 5, per = 60 }}
""")
    return path


def test_health_shows_the_shared_state(
    mailer_cli: Runner, tmp_path: Path, redis_server: RedisServer, prefix: str
) -> None:
    async def rest_the_primary() -> None:
        primary = ScriptedProvider("primary", ["rate_limited:45"])
        backup = ScriptedProvider("backup", rate_limit={"messages": 5, "per": 60})
        store = {"store": redis_server.url, "prefix": prefix}
        async with Mailer([primary, backup], health=store) as m:
            await m.send(Message(sender="a@example.com", to=["b@example.org"], text="x"))
            # The send does not await the breaker's write to Redis, and closing cancels a
            # write still under way: wait for it to be done (not a guessed 0.2 s, which a
            # loaded machine's Redis round trip could outlast)
            shared = m._runtime.shared
            assert shared is not None
            assert await eventually(lambda: not shared._writes, timeout=10)

    asyncio.run(rest_the_primary())
    _config(tmp_path, redis_server.url, prefix)
    result = mailer_cli("health", "--json")
    assert result.code == 0, result.output
    data = json.loads(result.stdout)
    rows = {p["name"]: p for p in data["providers"]}
    assert rows["primary"]["state"] == "open"
    assert 40 < rows["primary"]["next_probe_in"] <= 45
    assert rows["backup"]["state"] == "closed"
    assert rows["backup"]["rate_limit"]["slots_left"] == 4  # one slot taken by the send
    table = mailer_cli("health")
    assert table.code == 0
    assert "open" in table.stdout and "4/5 left" in table.stdout


def test_health_with_an_unreachable_store_says_so(
    mailer_cli: Runner, tmp_path: Path, prefix: str
) -> None:
    from mailer.testing import closed_port

    _config(tmp_path, f"redis://:pw-secret@127.0.0.1:{closed_port()}/0", prefix)
    result = mailer_cli("health")
    assert result.code == 1
    assert "cannot read the health store" in result.output
    assert "pw-secret" not in result.output


def test_health_with_the_memory_store(mailer_cli: Runner, tmp_path: Path) -> None:
    _config(tmp_path, "memory", "x")
    result = mailer_cli("health")
    assert result.code == 0, result.output
    assert "each process keeps its own breakers" in result.output
