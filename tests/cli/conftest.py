"""Real servers on 127.0.0.1 for the CLI tests, and a runner for the `mailer` command.

Commands run in-process through Typer's CliRunner (``mailer_cli``): fast, and a failure
shows the traceback. A few end-to-end tests use ``mailer_cli_subprocess`` instead
(``python -m mailer``, the way a person runs it), so exit codes, stdout and stderr are also
checked exactly as a shell sees them. The servers are the test kit's
(``mailer.testing.SMTPTestServer``, any login accepted) with trustme certificates for TLS.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailer.testing import Certs, SMTPTestServer, closed_port, make_certs

#: the only name in the test certificate: an IP host needs --servername to match it
TLS_NAME = "localhost"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class Server:
    """A started server, and what it received as (sender, recipients, bytes)."""

    server: SMTPTestServer

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def messages(self) -> list[Received]:
        with self.server.state.lock:
            envelopes = list(self.server.state.messages)
        return [
            Received(e.mail_from or "", list(e.rcpt_tos), e.original_content or b"")
            for e in envelopes
        ]


def _serve(certs: Certs | None = None, **options: Any) -> Iterator[Server]:
    options.setdefault("auth_mechanisms", ("PLAIN", "LOGIN"))
    server = SMTPTestServer(certs, users=None, **options)
    with server:
        yield Server(server)


@pytest.fixture
def smtp_server() -> Iterator[Server]:
    """A plaintext SMTP server without STARTTLS (like a loopback relay)."""
    yield from _serve(auth=False)


@pytest.fixture
def tls_certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path, (TLS_NAME,))


@pytest.fixture
def certs(tls_certs: Certs) -> tuple[Any, Path, ssl.SSLContext]:
    """(CA, its PEM file, a server context with a certificate for TLS_NAME only)."""
    return tls_certs.ca, tls_certs.ca_file, tls_certs.server_context()


@pytest.fixture
def starttls_server(tls_certs: Certs) -> Iterator[Server]:
    """Plaintext greeting, STARTTLS offered, AUTH only after TLS (a port-587 server)."""
    yield from _serve(tls_certs, tls="starttls", auth_require_tls=True)


@pytest.fixture
def implicit_tls_server(tls_certs: Certs) -> Iterator[Server]:
    """TLS from the first byte (a port-465 server)."""
    yield from _serve(tls_certs, tls="implicit")


@pytest.fixture(name="closed_port")
def closed_port_fixture() -> int:
    """A port nothing listens on: connecting to it is refused at once."""
    return closed_port()


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


Runner = Callable[..., Result]


@pytest.fixture
def mailer_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    """Run the ``mailer`` command in-process, in ``tmp_path``, as CliRunner sees it."""
    from typer.testing import CliRunner

    from mailer._cli import app

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MAILER_CONFIG", raising=False)

    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Result:
        environ = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **(env or {})}
        result = CliRunner().invoke(app, list(args), env=environ, prog_name="mailer")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception  # a bug in the command, not an error it reports
        return Result(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.fixture
def mailer_cli_subprocess(tmp_path: Path) -> Runner:
    """Run ``python -m mailer ARGS`` in ``tmp_path``; bounded by ``timeout`` seconds."""

    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> Result:
        environ = {k: v for k, v in os.environ.items() if k != "MAILER_CONFIG"}
        environ.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb",
                        "PYTHONIOENCODING": "utf-8"})  # fmt: skip
        environ.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "mailer", *args],
            capture_output=True, text=True, timeout=timeout, cwd=tmp_path, env=environ,
            check=False,
        )  # fmt: skip
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def smtp_entry(name: str, port: int, priority: int) -> str:
    """One TOML [[providers]] table for a loopback SMTP server without TLS."""
    return (
        f'[[providers]]\ntype = "smtp"\nname = "{name}"\npriority = {priority}\n'
        f'[providers.config]\nhost = "127.0.0.1"\nport = {port}\nignore_tls = true\n'
        "connection_timeout = 2.0\ngreeting_timeout = 2.0\nsocket_timeout = 5.0\n\n"
    )


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str, name: str = "mailer.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def smtp_toml() -> Callable[[str, int, int], str]:
    return smtp_entry
