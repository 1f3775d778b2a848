"""Config: files, env interpolation, DSNs, and clear errors that never echo secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailer import ConfigError, Mailer, Message, Route
from mailer.providers._file import FileProvider
from mailer.providers._memory import MemoryProvider

pytestmark = pytest.mark.anyio


def test_from_mapping_orders_by_priority() -> None:
    m = Mailer.from_config(
        {
            "providers": [
                {"type": "memory", "name": "backup", "priority": 5},
                {"type": "memory", "name": "primary", "priority": 1, "weight": 2},
                {"type": "memory", "name": "off", "enabled": False},
            ],
            "on_uncertain": "failover",
            "send_timeout": 12.5,
            "health": {"failure_threshold": 4, "cooldown": 3},
            "retry": {"attempts": 1},
        }
    )
    assert [p.name for p in m.providers] == ["backup", "primary"]
    assert [c.name for c in m.root.children] == ["primary", "backup"]  # priority order
    assert m.on_uncertain == "failover" and m.send_timeout == 12.5
    assert m.health_config.failure_threshold == 4 and m.retry_config.attempts == 1


def test_from_toml_and_json_files_with_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_OUT", str(tmp_path / "out"))
    toml = tmp_path / "mailer.toml"
    toml.write_text(
        """
send_timeout = 30
[defaults]
from = "App <app@example.com>"

[[providers]]
type = "file"
name = "disk"
[providers.config]
directory = "${MAILER_OUT}"

[[providers]]
type = "memory"
config = { outcomes = ["${OUTCOME:-ok}"] }
"""
    )
    m = Mailer.from_config(toml)
    disk = m.providers[0]
    assert isinstance(disk, FileProvider) and disk.config.directory == tmp_path / "out"
    assert m.defaults["sender"].email == "app@example.com"
    js = tmp_path / "mailer.json"
    js.write_text(
        json.dumps({"providers": ["memory://?outcomes=transient,ok&priority=2&name=mem"]})
    )
    m2 = Mailer.from_config(str(js))
    mem = m2.providers[0]
    assert isinstance(mem, MemoryProvider) and mem.name == "mem"
    assert mem.config.outcomes == ["transient", "ok"]
    assert m2.health()["mem"]["priority"] == 2


def test_dsn_file_provider(tmp_path: Path) -> None:
    m = Mailer.from_config({"providers": [f"file://{tmp_path}/mail?name=dev"]})
    p = m.providers[0]
    assert isinstance(p, FileProvider) and p.config.directory == tmp_path / "mail"


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (
            {"providers": [{"type": "mailjetx"}]},
            "unknown provider type 'mailjetx'; did you mean 'mailjet'? (if not: pip install "
            "mailer-mailjetx",
        ),
        ({"providers": [{"type": "nosuchthing"}]}, "'nosuchthing'; pip install mailer-nosuch"),
        ({"providers": [{"type": "broken"}]}, "'broken' (from mailer-testplugin) failed to load"),
        ({"providers": []}, "providers"),
        ({}, "providers: Field required"),
        ({"providers": [{"type": "memory"}], "on_uncertain": "maybe"}, "on_uncertain"),
        ({"providers": [{"type": "memory"}], "send_timeout": -1}, "send_timeout"),
        ({"providers": [{"type": "memory"}], "health": {"cooldown": 0}}, "health.cooldown"),
        ({"providers": [{"type": "memory"}], "bogus": 1}, "bogus: unknown option"),
        ({"providers": [{"type": "memory", "config": {"latency": "x"}}]}, "latency"),
        ({"providers": [{"type": "memory", "config": {"outcomes": ["nope"]}}]}, "unknown outcome"),
        ({"providers": [{"type": "memory"}, {"type": "memory"}]}, "unique name"),
        (
            {"providers": [{"type": "memory"}], "defaults": {"sender": "bad\r\n@x"}},
            "invalid defaults",
        ),
        ({"providers": [{"type": "memory"}], "defaults": {"subject": "x"}}, "unknown defaults"),
        (
            {"providers": [{"type": "memory"}], "defaults": {"headers": {"Bad Name": "1"}}},
            "invalid defaults: invalid message: headers: invalid header name",
        ),
        (
            {"providers": [{"type": "memory"}], "defaults": {"cc": ["not an address"]}},
            "invalid defaults",
        ),
        (
            {"providers": [{"type": "memory"}], "defaults": {"headers": {"Received": "x"}}},
            "invalid defaults",
        ),
        ({"providers": [{"type": "Bad Type"}]}, "provider type must be"),
        ({"providers": ["nourl"]}, "has no scheme"),
        (
            {"providers": [{"type": "memory", "config": {"x": "${NOT_SET_ANYWHERE}"}}]},
            "NOT_SET_ANYWHERE is not set",
        ),
    ],
)
def test_config_errors_are_clear(config: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        Mailer.from_config(config)
    assert needle in str(info.value)
    assert "\n" not in str(info.value).strip() or needle in str(info.value)


def test_config_errors_never_echo_values() -> None:
    secret = "sk_live_CANARY_7f3a9"
    with pytest.raises(ConfigError) as info:
        Mailer.from_config(
            {"providers": [{"type": "echo", "config": {"token": 5, "extra": secret}}]}
        )
    assert secret not in str(info.value) and "extra: unknown option" in str(info.value)
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Mailer.from_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("providers = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Mailer.from_config(bad)
    badj = tmp_path / "bad.json"
    badj.write_text("[1]")
    with pytest.raises(ConfigError, match="table/object"):
        Mailer.from_config(badj)


def test_constructor_checks() -> None:
    with pytest.raises(ConfigError):
        Mailer([])
    with pytest.raises(ConfigError, match="on_uncertain"):
        Mailer([MemoryProvider("a")], on_uncertain="sometimes")  # type: ignore[arg-type]
    m = Mailer([Route(MemoryProvider("a"), priority=3)])
    assert m.health()["a"]["priority"] == 3


async def test_file_provider_writes_eml(tmp_path: Path) -> None:
    m = Mailer.from_config(
        {"providers": [{"type": "file", "config": {"directory": str(tmp_path)}}]}
    )
    msg = Message(sender="a@example.com", to=["b@example.org"], subject="Hello", text="x")
    result = await m.send(msg)
    files = list(tmp_path.glob("*.eml"))
    assert len(files) == 1 and files[0].read_bytes() == msg.as_bytes()
    assert result.response == str(files[0])
    assert not list(tmp_path.glob("*.tmp"))
