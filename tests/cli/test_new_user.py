"""What a new user ran into at the command line and in a plain script (issue 21, items
2, 3, 10, 13 and 14), against real servers on 127.0.0.1."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from mailer.flask import Mail
from mailer.testing import SMTPTestServer, closed_port

from .conftest import Runner, Server, smtp_entry

SEND = ("send", "--from", "app@example.com", "--to", "ann@example.org", "--subject", "hi")


def _enqueue_config(tmp_path: Path) -> str:
    outbox = f"sqlite:///{tmp_path / 'outbox.db'}"
    return (
        f'on_all_failed = "enqueue"\nretry = {{ attempts = 1 }}\n'
        f'outbox = {{ url = "{outbox}" }}\n\n' + smtp_entry("primary", closed_port(), 1)
    )


def test_a_queued_message_is_not_reported_as_sent(
    mailer_cli: Runner, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    config = write_config(_enqueue_config(tmp_path))
    result = mailer_cli(*SEND, "--text", "body", "-c", str(config))
    assert result.code == 3, result.output
    assert "sent" not in result.stdout.split("\n")[0]
    first = result.stdout.splitlines()[0]
    assert first.startswith("queued in the outbox  outbox-id <"), result.stdout
    assert "failed at primary" in result.stdout
    outbox_id = first.split("outbox-id ")[1].split()[0]
    listed = mailer_cli("outbox", "list", "-c", str(config))
    assert outbox_id in listed.stdout and "queued" in listed.stdout

    data = mailer_cli(*SEND, "--text", "body", "-c", str(config), "--json")
    assert data.code == 3, data.output
    parsed = json.loads(data.stdout)
    assert parsed["status"] == "queued" and parsed["provider"] == "outbox"
    assert parsed["message_id"].startswith("<")


def test_sent_says_sent_with_status_and_exit_0(
    mailer_cli: Runner, write_config: Callable[[str], Path], smtp_server: Server
) -> None:
    config = write_config(smtp_entry("primary", smtp_server.port, 1))
    data = mailer_cli(*SEND, "--text", "body", "-c", str(config), "--json")
    assert data.code == 0, data.output
    assert json.loads(data.stdout)["status"] == "sent"


def test_failed_over_is_printed_once_per_provider_left(
    mailer_cli: Runner, write_config: Callable[[str], Path], smtp_server: Server
) -> None:
    """Three tries at a refused port are one failover, not three."""
    config = write_config(
        "retry = { attempts = 3, backoff = 0.01 }\n\n"
        + smtp_entry("primary", closed_port(), 1)
        + smtp_entry("backup", smtp_server.port, 2)
    )
    result = mailer_cli(*SEND, "--text", "body", "-c", str(config))
    assert result.code == 0, result.output
    assert result.stdout.count("failed over from primary") == 1, result.stdout
    assert "failed over from primary (3 attempts)" in result.stdout
    assert len(smtp_server.messages) == 1


def test_send_without_a_body_refuses_before_any_io(
    mailer_cli: Runner, write_config: Callable[[str], Path], smtp_server: Server
) -> None:
    config = write_config(smtp_entry("primary", smtp_server.port, 1))
    result = mailer_cli(*SEND, "-c", str(config))
    assert result.code == 2
    assert "error: message: no body: give --text or --html" in result.stderr
    assert "reads the body from stdin" in result.stderr
    data = mailer_cli(*SEND, "-c", str(config), "--json")
    assert data.code == 2 and "no body" in json.loads(data.stdout)["error"]["message"]
    assert smtp_server.server.state.connections == 0


def test_a_plain_script_prints_nothing_on_failover(tmp_path: Path, smtp_server: Server) -> None:
    """The library's NullHandler: failover warnings reach no last-resort handler."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            from mailer import Message, SyncMailer

            config = {{"retry": {{"attempts": 1}}, "providers": [
                "smtp://127.0.0.1:{closed_port()}?name=a",
                "smtp://127.0.0.1:{smtp_server.port}?name=b",
            ]}}
            with SyncMailer(config) as mailer:
                result = mailer.send(Message(sender="app@example.com",
                                             to=["ann@example.org"], subject="s", text="t"))
            print(result.provider)
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "b\n", "")
    # the records are still there for an app that configures logging
    configured = script.read_text().replace(
        "from mailer", "import logging\nlogging.basicConfig()\nfrom mailer", 1
    )
    script.write_text(configured)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and "failover of" in proc.stderr, proc.stderr


def test_flask_close_outside_an_app_context(smtp_server: Server) -> None:
    app = Flask("close_outside")
    app.config["MAILER"] = f"smtp://127.0.0.1:{smtp_server.port}?pool=true"
    mail = Mail(app)
    server: SMTPTestServer = smtp_server.server
    from mailer import Message

    result = mail.send(Message(sender="app@example.com", to=["a@example.org"], subject="s",
                               text="t"))  # fmt: skip
    assert result.status == "sent"
    assert server.state.current == 1  # the pooled connection stays open
    mail.close()  # no app context: Mail(app) knows its app
    assert server.wait_for(lambda: server.state.current == 0, timeout=10)
    assert "QUIT" in server.state.verbs()


#: a duration shown with more than 3 significant digits ("2.9987s", "0.1284s"); "3s",
#: "2.99s" and "0.128s" are what ``:.3g`` prints (sub-second when a stalled run spent most
#: of the budget before the greeting wait began: "after 0.128s" failed ``\.\d{3,}s``)
_OVERPRECISE = r"(?:[1-9]\d*\.\d{3,}|0\.0*[1-9]\d{3,})s"


def test_verify_is_held_to_the_send_budget_and_says_what_it_waits_for(
    mailer_cli: Runner, write_config: Callable[[str], Path], implicit_tls_server: Server
) -> None:
    """A port that expects implicit TLS, configured with secure=false: the greeting never
    comes. verify gives up when a send would (budget.pre_commit, 3 s by default), not
    after greeting_timeout (10 s), and names the step."""
    config = write_config(
        f'[[providers]]\ntype = "smtp"\nname = "p"\n[providers.config]\nhost = "127.0.0.1"\n'
        f"port = {implicit_tls_server.port}\nsecure = false\n"
    )
    started = time.monotonic()
    result = mailer_cli("verify", "-c", str(config))
    took = time.monotonic() - started
    assert result.code == 1, result.output
    assert took < 6, took
    assert "each within 3s (the pre-commit budget)" in result.stderr
    assert "waiting for the greeting" in result.stdout
    assert "cut short by the pre-commit budget" in result.stdout
    assert "set secure=True" in result.stdout
    assert not re.search(rf"(within|after) {_OVERPRECISE}", result.output)
    assert result.stderr.count("more: ") <= 1
    sent = mailer_cli(*SEND, "--text", "x", "-c", str(config))
    assert sent.code == 1
    assert not re.search(rf"after {_OVERPRECISE}", sent.stderr), sent.stderr
    assert sent.stderr.count("(more: ") == 1


def test_doctor_warns_that_credentials_cross_in_clear_on_loopback(mailer_cli: Runner) -> None:
    """A loopback server offering AUTH without TLS (MailHog, a dev relay): usable, so
    exit 0, but the settings it prints send the password unencrypted, and it says so."""
    with SMTPTestServer(None, users=None, auth_mechanisms=("PLAIN", "LOGIN")) as server:
        result = mailer_cli("doctor", "127.0.0.1", "-p", str(server.port))
        data = mailer_cli("doctor", "127.0.0.1", "-p", str(server.port), "--json")
    assert result.code == 0, result.output
    assert "allow_plaintext_auth = true" in result.stdout
    assert "warning: credentials will cross in clear" in " ".join(result.stdout.split())
    (diag,) = json.loads(data.stdout)
    assert diag["ok"] is True and diag["settings"]["allow_plaintext_auth"] is True
    assert any("credentials will cross in clear" in w for w in diag["warnings"])
