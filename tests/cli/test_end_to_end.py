"""The `mailer` command as scripts use it: --version, --json, a hanging provider, paths.

Most run in-process (``mailer_cli``); the few marked end-to-end run ``python -m mailer``
as a subprocess, so exit codes and streams are also checked as a shell sees them.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mailer


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections and never says a word (greeting hang)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.1)
    stop = threading.Event()
    clients: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                clients.append(listener.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    thread.join(timeout=2)
    for client in clients:
        client.close()
    listener.close()


def test_version_end_to_end(mailer_cli_subprocess: Any) -> None:
    result = mailer_cli_subprocess("--version")
    assert result.code == 0 and result.stdout.strip() == f"mailer-failover {mailer.__version__}"


def test_send_end_to_end(
    mailer_cli_subprocess: Any, write_config: Any, smtp_toml: Any, smtp_server: Any
) -> None:
    config = write_config(smtp_toml("primary", smtp_server.port, 1))
    result = mailer_cli_subprocess(
        "send",
        "-c",
        str(config),
        "--from",
        "app@example.com",
        "--to",
        "u@example.org",
        "--text",
        "x",
        "--json",
    )
    assert result.code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["provider"] == "primary"
    assert len(smtp_server.messages) == 1
    assert data["message_id"].encode() in smtp_server.messages[0].data


def test_bad_config_end_to_end(mailer_cli_subprocess: Any, write_config: Any) -> None:
    path = write_config('[[providers]]\ntype = "smpt"\n')
    result = mailer_cli_subprocess("verify", "-c", str(path))
    assert result.code == 2
    assert result.stderr.startswith("error: config: unknown provider type 'smpt'; did you mean")
    assert "Traceback" not in result.output


def test_send_json_failure_has_every_reason_uncut(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, closed_port: int
) -> None:
    config = write_config(
        smtp_toml("primary", closed_port, 1) + smtp_toml("backup", closed_port, 2)
    )
    result = mailer_cli(
        "send",
        "-c",
        str(config),
        "--from",
        "app@example.com",
        "--to",
        "u@example.org",
        "--text",
        "x",
        "--json",
    )
    assert result.code == 1
    data = json.loads(result.stdout)
    error = data["error"]
    assert data["ok"] is False and error["type"] == "AllProvidersFailed"
    assert error["possibly_delivered"] is False and set(error["errors"]) == {"primary", "backup"}
    reason = error["errors"]["backup"]["message"]
    assert "connection refused" in reason and not reason.endswith("...")
    assert error["errors"]["backup"]["type"] == "TransientError"


def test_send_json_config_error(mailer_cli: Any, write_config: Any) -> None:
    path = write_config('[[providers]]\ntype = "smtp"\nconfig = { max_conection = 3 }\n')
    result = mailer_cli("send", "-c", str(path), "--to", "u@example.org", "--json")
    assert result.code == 2
    error = json.loads(result.stdout)["error"]
    assert error["type"] == "ConfigError" and "did you mean max_connections?" in error["message"]


def test_verify_json_and_a_hanging_provider_is_named(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any, silent_port: int
) -> None:
    hanging = smtp_toml("stuck", silent_port, 2).replace(
        "greeting_timeout = 2.0", "greeting_timeout = 60.0"
    )
    config = write_config(smtp_toml("primary", smtp_server.port, 1) + hanging)
    result = mailer_cli("verify", "-c", str(config), "--timeout", "1", "--json")
    assert result.code == 1, result.output
    data = json.loads(result.stdout)
    rows = {p["name"]: p for p in data["providers"]}
    assert rows["primary"]["ok"] is True and rows["primary"]["type"] == "smtp"
    assert rows["stuck"]["ok"] is False
    # the deadline cuts the provider's own timeout short, so the step is named
    assert "waiting for the greeting" in rows["stuck"]["error"]["message"]
    assert "cut short by the pre-commit budget" in rows["stuck"]["error"]["message"]
    # and in the table, by name, while the healthy one still reports
    text = mailer_cli("verify", "-c", str(config), "--timeout", "1")
    stuck = next(line for line in text.stdout.splitlines() if "stuck" in line)
    assert "FAILED" in stuck and "waiting for the greeting" in stuck
    assert "error: 1 of 2 provider(s) failed: stuck" in text.stderr


def test_relative_paths_resolve_against_the_config_file(
    mailer_cli: Any, tmp_path: Path, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "conf"
    folder.mkdir()
    (folder / "mailer.toml").write_text(
        '[[providers]]\ntype = "file"\nname = "spool"\nconfig = { directory = "outbox" }\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    from mailer import Mailer

    spool = Mailer.from_config(folder / "mailer.toml").providers[0]
    assert spool.config.directory == folder / "outbox"
    # a Python mapping keeps meaning the working directory
    mapping = {"providers": [{"type": "file", "config": {"directory": "outbox"}}]}
    assert Mailer.from_config(mapping).providers[0].config.directory == Path("outbox")


def test_relative_ca_file_resolves_against_the_config_file(tmp_path: Path) -> None:
    from mailer._config import load_config
    from mailer.providers._smtp.config import SMTPConfig

    path = tmp_path / "conf" / "mailer.json"
    path.parent.mkdir()
    path.write_text(
        json.dumps(
            {
                "providers": [
                    {
                        "type": "smtp",
                        "config": {"host": "mx.example.com", "tls": {"ca_file": "certs/ca.pem"}},
                    }
                ]
            }
        )
    )
    config = SMTPConfig.model_validate(load_config(path).providers[0].config)
    assert config.tls.ca_file == path.parent / "certs" / "ca.pem"
