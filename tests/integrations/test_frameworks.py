"""The Flask extension and the FastAPI lifespan example, as docs/frameworks.md shows them,
against a real SMTP server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from flask import Flask

from mailer import ConfigError
from mailer.flask import Mail
from mailer.testing import SMTPTestServer

from .docs import doc_block

Servers = Callable[..., SMTPTestServer]


@pytest.fixture
def config_file(
    smtp_server: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> SMTPTestServer:
    """mailer.toml in the current folder (as the docs' examples read it), sending to a
    pooled SMTP server."""
    server = smtp_server()
    path = tmp_path / "mailer.toml"
    path.write_text(
        f"""
retry = {{ attempts = 1 }}

[[providers]]
type = "smtp"
name = "primary"
config = {{ host = "127.0.0.1", port = {server.port}, pool = true }}
"""
    )
    monkeypatch.chdir(tmp_path)
    return server


def run_doc(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs_{name.replace('-', '_')}"}
    exec(doc_block("frameworks.md", name), namespace)  # noqa: S102 - our own docs
    return namespace


def test_flask_extension(config_file: SMTPTestServer) -> None:
    server = config_file
    app_module = run_doc("flask-app")
    app: Flask = app_module["app"]
    mail: Mail = app_module["mail"]
    try:
        client = app.test_client()
        response = client.post("/signup", data={"email": "ann@example.org"})
        assert response.status_code == 200, response.text
        assert response.json is not None and response.json["provider"] == "primary"
        response = client.post("/signup-async", data={"email": "ben@example.org"})
        assert response.status_code == 200, response.text
        assert server.wait_for(lambda: len(server.state.messages) == 2, timeout=10)
        assert [m.rcpt_tos for m in server.state.messages] == [
            ["ann@example.org"], ["ben@example.org"]
        ]  # fmt: skip
        # One pooled connection served both requests: not closed per request.
        assert server.state.connections == 1 and server.state.current == 1
        with app.app_context():
            assert mail.mailer is mail.mailer
            mail.close()
        assert server.wait_for(lambda: server.state.current == 0, timeout=10)
        assert "QUIT" in server.state.verbs()
    finally:
        with app.app_context():
            mail.close()


def test_flask_refuses_a_missing_config() -> None:
    with pytest.raises(ConfigError, match=r'app.config\["MAILER"\]'):
        Mail(Flask("no_config"))


def test_fastapi_lifespan_example(config_file: SMTPTestServer) -> None:
    server = config_file
    app = run_doc("fastapi-app")["app"]
    with TestClient(app) as client:
        response = client.post("/signup", params={"email": "cat@example.org"})
        assert response.status_code == 200, response.text
        assert response.json()["provider"] == "primary"
        assert server.wait_for(lambda: len(server.state.messages) == 1, timeout=10)
        assert server.state.current == 1  # pooled, open while the app runs
    # the lifespan closed the Mailer on shutdown
    assert server.wait_for(lambda: server.state.current == 0, timeout=10)
    assert "QUIT" in server.state.verbs()
