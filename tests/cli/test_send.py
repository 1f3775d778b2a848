"""`mailer send`: delivery that the server confirms, failover, and failures in one line."""

from __future__ import annotations

import re
from email import message_from_bytes
from typing import Any


def test_send_delivers_and_prints_provider_and_message_id(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any
) -> None:
    config = write_config(smtp_toml("primary", smtp_server.port, 1))
    result = mailer_cli(
        "send",
        "--config",
        str(config),
        "--from",
        "App <app@example.com>",
        "--to",
        "user@example.org",
        "--to",
        "second@example.org",
        "--subject",
        "Hello from the CLI",
        "--text",
        "plain body",
        "--html",
        "<p>html</p>",
    )
    assert result.code == 0, result.output
    match = re.search(r"sent via primary\s+message-id (<[^>]+>)", result.stdout)
    assert match, result.stdout
    assert len(smtp_server.messages) == 1
    received = smtp_server.messages[0]
    assert received.mail_from == "app@example.com"
    assert received.rcpt_tos == ["user@example.org", "second@example.org"]
    parsed = message_from_bytes(received.data)
    assert parsed["Message-ID"] == match.group(1)
    assert parsed["Subject"] == "Hello from the CLI"


def test_send_attachment_and_text_from_a_file(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any, tmp_path: Any
) -> None:
    config = write_config(smtp_toml("primary", smtp_server.port, 1))
    body = tmp_path / "body.txt"
    body.write_text("body from a file\n", encoding="utf-8")
    report = tmp_path / "report.csv"
    report.write_bytes(b"a,b\n1,2\n")
    result = mailer_cli(
        "send",
        "-c",
        str(config),
        "--from",
        "app@example.com",
        "--to",
        "u@example.org",
        "--subject",
        "Report",
        "--text",
        f"@{body}",
        "--attach",
        str(report),
    )
    assert result.code == 0, result.output
    parsed = message_from_bytes(smtp_server.messages[0].data)
    parts = {p.get_filename(): p for p in parsed.walk() if p.get_filename()}
    assert parts["report.csv"].get_payload(decode=True) == b"a,b\n1,2\n"
    text = next(p for p in parsed.walk() if p.get_content_type() == "text/plain")
    assert text.get_payload(decode=True).rstrip() == b"body from a file"


def test_send_fails_over_and_says_so(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any, closed_port: int
) -> None:
    config = write_config(
        smtp_toml("primary", closed_port, 1) + smtp_toml("backup", smtp_server.port, 2)
    )
    result = mailer_cli(
        "send",
        "-c",
        str(config),
        "--from",
        "app@example.com",
        "--to",
        "u@example.org",
        "--subject",
        "Failover",
        "--text",
        "x",
    )
    assert result.code == 0, result.output
    assert "sent via backup" in result.stdout
    assert "failed over from primary" in result.stdout
    assert len(smtp_server.messages) == 1


def test_send_when_every_provider_is_down_is_one_line_and_exit_1(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, closed_port: int
) -> None:
    config = write_config(smtp_toml("primary", closed_port, 1))
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
    )
    assert result.code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: all providers failed")
    assert "primary" in lines[0]
    assert lines[1].startswith("hint:") and "mailer verify" in lines[1]
    assert "Traceback" not in result.output


def test_send_refuses_header_injection_before_any_io(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any
) -> None:
    config = write_config(smtp_toml("primary", smtp_server.port, 1))
    result = mailer_cli(
        "send",
        "-c",
        str(config),
        "--from",
        "app@example.com",
        "--to",
        "u@example.org",
        "--subject",
        "Hi\r\nBcc: victim@example.net",
        "--text",
        "x",
    )
    assert result.code == 2
    assert result.stderr.startswith("error: message:")
    assert "control character" in result.stderr
    assert smtp_server.messages == []


def test_send_without_recipient_is_a_usage_error(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any
) -> None:
    config = write_config(smtp_toml("primary", smtp_server.port, 1))
    result = mailer_cli("send", "-c", str(config), "--from", "app@example.com", "--text", "x")
    assert result.code == 2
    assert "no recipient" in result.stderr


def test_debug_shows_the_smtp_transcript_without_secrets(
    mailer_cli: Any, write_config: Any, smtp_toml: Any, smtp_server: Any
) -> None:
    config = write_config(smtp_toml("primary", smtp_server.port, 1))
    args = (
        "send",
        "--config",
        str(config),
        "--from",
        "app@example.com",
        "--to",
        "user@example.org",
        "--subject",
        "S",
        "--text",
        "the secret body",
    )
    result = mailer_cli("--debug", *args)
    assert result.code == 0, result.output
    assert "C: MAIL FROM:<app@example.com>" in result.stderr
    assert "S: 250" in result.stderr and "the secret body" not in result.stderr
    quiet = mailer_cli(*args)  # without --debug: no transcript (the logger is reset)
    assert quiet.code == 0 and "MAIL FROM" not in quiet.stderr
