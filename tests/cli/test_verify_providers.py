"""`mailer verify` and `mailer providers`."""

from __future__ import annotations

from typing import Any


def test_verify_healthy_config_exits_0(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any, tmp_path: Any
) -> None:
    config = write_config(
        smtp_toml("primary", smtp_server.port, 1)
        + f'[[providers]]\ntype = "file"\nname = "spool"\nconfig = {{ directory = '
        f'"{tmp_path / "spool"}" }}\n'
    )
    result = mailer_cli("verify", "--config", str(config))
    assert result.code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if "primary" in line or "spool" in line]
    assert len(rows) == 2 and all(" ok" in row for row in rows), result.stdout
    assert "all 2 provider(s) ok" in result.stdout
    assert smtp_server.messages == []  # verify sends nothing


def test_verify_names_the_provider_that_is_down_and_exits_1(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any, closed_port: int
) -> None:
    config = write_config(
        smtp_toml("primary", smtp_server.port, 1) + smtp_toml("backup", closed_port, 2)
    )
    result = mailer_cli("verify", "--config", str(config))
    assert result.code == 1, result.output
    backup_row = next(line for line in result.stdout.splitlines() if "backup" in line)
    assert "FAILED" in backup_row
    primary_row = next(line for line in result.stdout.splitlines() if "primary" in line)
    assert "FAILED" not in primary_row and " ok" in primary_row
    first, error = result.stderr.splitlines()[:2]
    assert first.startswith("checking 2 provider(s)")  # what it waits for, up front
    assert error.startswith("error: 1 of 2 provider(s) failed: backup")


def test_verify_reads_json_config_with_env_values(
    mailer_cli: Any, write_config: Any, smtp_server: Any
) -> None:
    config = write_config(
        '{"providers": [{"type": "smtp", "name": "primary", "config": '
        '{"host": "127.0.0.1", "port": "${SMTP_PORT}", "ignore_tls": true}}]}',
        name="mailer.json",
    )
    result = mailer_cli("verify", "-c", str(config), env={"SMTP_PORT": str(smtp_server.port)})
    assert result.code == 0, result.output


def test_providers_lists_builtins_plugin_and_the_broken_one(mailer_cli: Any) -> None:
    result = mailer_cli("providers")
    assert result.code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line
        for line in result.stdout.splitlines()
        if line.startswith("│") and line.split("│")[1].strip()
    }
    for builtin in ("smtp", "resend", "sendgrid", "memory", "file"):
        assert "mailer-failover" in rows[builtin] and "built-in" in rows[builtin]
        assert " ok " in rows[builtin]
    assert "mailer-testplugin" in rows["echo"] and " ok " in rows["echo"]
    assert "mailer-testplugin" in rows["broken"]
    assert "failed to load" in rows["broken"] and "ModuleNotFoundError" in rows["broken"]
    assert "failed to load; the others work" in result.stdout
