"""A provider URL as the whole config (issue 21, item 1), at every entry point that takes
a config: it sends through a real SMTP server, and a bad one carrying a password never
shows the password in the error, the logs or stderr."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from typer.testing import CliRunner

from mailer import ConfigError, Mailer, Message, SyncMailer
from mailer.flask import Mail
from mailer.testing import SMTPTestServer

PASSWORD = "S3cret-url-9f3e"

#: bad URLs carrying PASSWORD: a port that is not a number, an unknown type, an unknown
#: option, an unknown scheme with the password in the host's place
BAD_URLS = [
    f"smtp://ann:{PASSWORD}@127.0.0.1:port",
    f"smpt://ann:{PASSWORD}@127.0.0.1:25",
    f"smtps://ann:{PASSWORD}@127.0.0.1:465?bogus={PASSWORD}",
    f"smtp://ann:{PASSWORD}/x@127.0.0.1:587",
]


def _message(to: str = "ann@example.org") -> Message:
    return Message(sender="app@example.com", to=[to], subject="url", text="hello")


@pytest.fixture
def server(smtp_server: Callable[..., SMTPTestServer]) -> SMTPTestServer:
    return smtp_server(auth=False)


@pytest.fixture
def flask_app() -> Iterator[Callable[[object], Mail]]:
    """``Mail(app)`` for an app whose MAILER is ``source``; closed after the test."""
    mails: list[tuple[Mail, Flask]] = []

    def make(source: object) -> Mail:
        app = Flask("url_config")
        app.config["MAILER"] = source
        mail = Mail(app)
        mails.append((mail, app))
        return mail

    yield make
    for mail, app in mails:
        mail.close(app)


def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    from mailer._cli import app

    environ = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", **(env or {})}
    result = CliRunner().invoke(app, list(args), env=environ, prog_name="mailer")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


SEND = ("send", "--from", "app@example.com", "--to", "ann@example.org", "--text", "hi")


def test_a_url_is_a_one_provider_config_everywhere(
    server: SMTPTestServer,
    use_mailer: Callable[[object], None],
    flask_app: Callable[[object], Mail],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from django.core.mail import send_mail

    monkeypatch.chdir(tmp_path)
    url = f"smtp://127.0.0.1:{server.port}?name=relay"
    with SyncMailer(url) as sync:
        assert sync.send(_message("a@example.org")).provider == "relay"

    async def from_config() -> str:
        async with Mailer.from_config(url) as mailer:
            return (await mailer.send(_message("b@example.org"))).provider

    import asyncio

    assert asyncio.run(from_config()) == "relay"
    code, stdout, stderr = _cli(*SEND, "--config", url)
    assert (code, stderr) == (0, ""), stdout + stderr
    assert "sent via relay" in stdout
    code, stdout, stderr = _cli(*SEND, env={"MAILER_CONFIG": url})
    assert (code, stderr) == (0, ""), stdout + stderr
    use_mailer(url)
    assert send_mail("s", "t", "app@example.com", ["c@example.org"]) == 1
    # no app context: Mail(app) knows its app (item 14)
    assert flask_app(url).mailer.send(_message("d@example.org")).provider == "relay"
    assert server.wait_for(lambda: len(server.state.messages) == 6, timeout=10)


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_bad_url_never_shows_its_password(
    url: str,
    use_mailer: Callable[[object], None],
    flask_app: Callable[[object], Mail],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from django.core.mail import send_mail

    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    errors: list[str] = []

    def refused(call: Callable[[], object]) -> None:
        with pytest.raises(ConfigError) as info:
            call()
        error: BaseException | None = info.value
        while error is not None:  # the chain too: a traceback prints every link
            errors.append(repr(error))
            error = error.__cause__ or error.__context__

    refused(lambda: SyncMailer(url))
    refused(lambda: Mailer.from_config(url))
    refused(lambda: Mailer.from_config(Path(url)))
    use_mailer(url)
    refused(lambda: send_mail("s", "t", "app@example.com", ["c@example.org"]))
    refused(lambda: flask_app(url))
    for args, env in [((*SEND, "--config", url), None), (SEND, {"MAILER_CONFIG": url})]:
        code, stdout, stderr = _cli(*args, env=env)
        assert code == 2, stdout + stderr
        assert "error: config:" in stderr
        errors.append(stdout + stderr)
    out, err = capfd.readouterr()
    for text in [*errors, caplog.text, out, err]:
        assert PASSWORD not in text
    assert len(errors) >= 7
