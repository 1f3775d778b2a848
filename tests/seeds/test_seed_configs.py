"""Config blocks from the pages our users come from, pasted as written, send real mail.

Each block below is copied key for key from NexoMailer's SMTP provider page, Nodemailer's
SMTP transport and OAuth2 pages, Courier's SMTP integration and a custom-SMTP guide. Only
what *must* change to reach a local server is overlaid: ``host`` and ``port`` (an aiosmtpd
server on 127.0.0.1), ``tls.ca_file`` (its private CA) and an OAuth2 ``accessUrl`` (a local
token endpoint). Every block is tried as a Python dict, a JSON file and a TOML file, and the
test checks what the *server* saw: the settings the block says (STARTTLS, implicit TLS,
SNI name, EHLO name, AUTH mechanism, token) and the message itself.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer import ConfigError, Mailer, Message
from mailer.testing import TLS_NAME, USERS, Certs, SMTPTestServer, TokenEndpoint, make_certs

pytestmark = pytest.mark.anyio

SEED_USER = "admin@yourcompany.com"
SEED_PASS = "your_super_secret_password"
SEED_TOKEN = "ya29.A0AR-seed-token"


@pytest.fixture(scope="module")
def seed_certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A server certificate for 127.0.0.1 and the names the seed pages use."""
    names = ("127.0.0.1", "smtp.yourdomain.com", TLS_NAME)
    return make_certs(Path(tmp_path_factory.mktemp("seed-certs")), names)


@pytest.fixture
def server(seed_certs: Certs) -> Iterator[Callable[..., Any]]:
    started: list[SMTPTestServer] = []

    def make(**kwargs: Any) -> SMTPTestServer:
        kwargs.setdefault("users", {**USERS, SEED_USER: SEED_PASS})
        s = SMTPTestServer(seed_certs, **kwargs).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


# -- the blocks, as written on their pages (JavaScript objects, keys quoted) -------------

NEXO_BASIC = {  # NexoMailer "Basic Configuration": one entry of `providers`
    "type": "smtp",
    "priority": 2,
    "config": {
        "host": "smtp.gmail.com",
        "port": 587,
        "auth": {"user": SEED_USER, "pass": SEED_PASS},
    },
}
NEXO_BASIC_TOML = f"""
[[providers]]
type = "smtp"
priority = 2
[providers.config]
host = "smtp.gmail.com"
port = 587
auth = {{ user = "{SEED_USER}", pass = "{SEED_PASS}" }}
"""

NEXO_ENTERPRISE = {  # NexoMailer "Advanced Enterprise Setup": the `config` object
    "host": "smtp.enterprise.com",
    "port": 587,
    "pool": True,
    "maxConnections": 10,
    "connectionTimeout": 5000,
    "socketTimeout": 10000,
    "secure": False,
    "tls": {"rejectUnauthorized": True, "servername": "smtp.yourdomain.com"},
    "name": "my-custom-app",
}
NEXO_ENTERPRISE_TOML = """
[[providers]]
type = "smtp"
[providers.config]
host = "smtp.enterprise.com"
port = 587
pool = true
maxConnections = 10
connectionTimeout = 5000
socketTimeout = 10000
secure = false
tls = { rejectUnauthorized = true, servername = "smtp.yourdomain.com" }
name = "my-custom-app"
"""

NEXO_OAUTH2 = {  # NexoMailer "Authentication Methods: 2. OAuth2 (XOAUTH2)", with host/port
    "host": "smtp.gmail.com",
    "port": 587,
    "auth": {"type": "oauth2", "user": SEED_USER, "accessToken": SEED_TOKEN},
}
NEXO_OAUTH2_TOML = f"""
[[providers]]
type = "smtp"
[providers.config]
host = "smtp.gmail.com"
port = 587
[providers.config.auth]
type = "oauth2"
user = "{SEED_USER}"
accessToken = "{SEED_TOKEN}"
"""

COURIER = {  # Courier's table row "Office 365", in its option names
    "host": "smtp.office365.com",
    "port": 587,
    "secure": False,
    "requireTLS": True,
    "auth": {"user": SEED_USER, "pass": SEED_PASS},
    "connectionTimeout": 5000,
    "socketTimeout": 10000,
}
COURIER_TOML = f"""
[[providers]]
type = "smtp"
[providers.config]
host = "smtp.office365.com"
port = 587
secure = false
requireTLS = true
auth = {{ user = "{SEED_USER}", pass = "{SEED_PASS}" }}
connectionTimeout = 5000
socketTimeout = 10000
"""

NODEMAILER_OAUTH2 = {  # Nodemailer's OAuth2 page: 3-legged, with an access token that expired
    "host": "smtp.gmail.com",
    "port": 465,
    "secure": True,
    "auth": {
        "type": "OAuth2",
        "user": SEED_USER,
        "clientId": "000000000000-xxx.apps.googleusercontent.com",
        "clientSecret": "XxxxxXXxX0xxxxxxxx0XXxX0",
        "refreshToken": "1/XXxXxsss-xxxXXXXXxXxx0XXXxxXXx0x00xxx",
        "accessToken": "ya29.Xx_XX0xxxxx-xX0X0XxXXxXxXXXxX0x",
        "expires": 1484314697598,
        "accessUrl": "https://oauth2.googleapis.com/token",
    },
}
NODEMAILER_OAUTH2_TOML = """
[[providers]]
type = "smtp"
[providers.config]
host = "smtp.gmail.com"
port = 465
secure = true
[providers.config.auth]
type = "OAuth2"
user = "admin@yourcompany.com"
clientId = "000000000000-xxx.apps.googleusercontent.com"
clientSecret = "XxxxxXXxX0xxxxxxxx0XXxX0"
refreshToken = "1/XXxXxsss-xxxXXXXXxXxx0XXXxxXXx0x00xxx"
accessToken = "ya29.Xx_XX0xxxxx-xX0X0XxXXxXxXXXxX0x"
expires = 1484314697598
accessUrl = "https://oauth2.googleapis.com/token"
"""

NODEMAILER_POOLED_465 = {  # Nodemailer "2. Pooled connections"
    "pool": True,
    "host": "smtp.example.com",
    "port": 465,
    "secure": True,
    "auth": {"user": SEED_USER, "pass": SEED_PASS},
}
NODEMAILER_POOLED_465_TOML = f"""
[[providers]]
type = "smtp"
[providers.config]
pool = true
host = "smtp.example.com"
port = 465
secure = true
auth = {{ user = "{SEED_USER}", pass = "{SEED_PASS}" }}
"""

NODEMAILER_SELF_SIGNED = {  # Nodemailer "3. Allow self-signed certificates"
    "host": "my.smtp.host",
    "port": 465,
    "secure": True,
    "auth": {"user": SEED_USER, "pass": SEED_PASS},
    "tls": {"rejectUnauthorized": False},
}
NODEMAILER_SELF_SIGNED_TOML = f"""
[[providers]]
type = "smtp"
[providers.config]
host = "my.smtp.host"
port = 465
secure = true
auth = {{ user = "{SEED_USER}", pass = "{SEED_PASS}" }}
tls = {{ rejectUnauthorized = false }}
"""

MAILHOG = {"host": "localhost", "port": 1025}  # the custom-SMTP guide's Mailhog row
MAILHOG_TOML = """
[[providers]]
type = "smtp"
[providers.config]
host = "localhost"
port = 1025
"""


def _entry(block: dict[str, Any]) -> dict[str, Any]:
    return block if "type" in block else {"type": "smtp", "config": block}


def _overlay(entry: dict[str, Any], server: SMTPTestServer, trust: bool) -> None:
    """Point a pasted block at the local server: host, port, and our CA (if it checks)."""
    config = entry["config"]
    config["host"], config["port"] = "127.0.0.1", server.port
    if trust and server.certs is not None:
        config.setdefault("tls", {})["ca_file"] = str(server.certs.ca_file)


def _sources(
    block: dict[str, Any], toml: str, server: SMTPTestServer, tmp_path: Path, trust: bool = True
) -> Iterator[tuple[str, Any]]:
    """The block as a Python dict, a JSON file and a TOML file (same overlay on each)."""
    entry = copy.deepcopy(_entry(block))
    _overlay(entry, server, trust)
    yield "dict", {"providers": [entry]}
    path = tmp_path / "mailer.json"
    path.write_text(json.dumps({"providers": [entry]}))
    yield "json", path
    import tomllib

    parsed = tomllib.loads(toml)
    assert parsed["providers"][0] == _entry(block), "the TOML must say what the page says"
    overlaid = copy.deepcopy(parsed["providers"][0])
    _overlay(overlaid, server, trust)
    # the page's TOML, with the same overlay (TOML cannot re-set a key, so it is rewritten)
    path = tmp_path / "mailer.toml"
    path.write_text(_to_toml({"providers": [overlaid]}))
    yield "toml", path


def _to_toml(data: dict[str, Any]) -> str:
    """A tiny TOML writer for the overlaid blocks (tables of scalars and tables)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, dict):
            return "{ " + ", ".join(f'"{k}" = {value(x)}' for k, x in v.items()) + " }"
        return json.dumps(v)

    out = []
    for entry in data["providers"]:
        out.append("[[providers]]")
        for key, v in entry.items():
            if key != "config":
                out.append(f"{key} = {value(v)}")
        out.append("[providers.config]")
        out.extend(f'"{k}" = {value(v)}' for k, v in entry["config"].items())
    return "\n".join(out) + "\n"


async def _send(source: Any) -> Mailer:
    mailer = Mailer.from_config(source)
    async with mailer:
        result = await mailer.send(
            Message(sender="app@example.com", to="ann@example.org", subject="seed", text="hi")
        )
    assert result.accepted == ["ann@example.org"]
    return mailer


def _delivered(server: SMTPTestServer, n: int) -> None:
    assert server.wait_for(lambda: len(server.state.messages) == n)
    assert server.state.messages[-1].rcpt_tos == ["ann@example.org"]


async def test_nexomailer_basic(server: Any, tmp_path: Path) -> None:
    smtp = server(tls="starttls")
    for n, (_, source) in enumerate(_sources(NEXO_BASIC, NEXO_BASIC_TOML, smtp, tmp_path), 1):
        mailer = await _send(source)
        _delivered(smtp, n)
        assert mailer.providers[0].config.auth.password.get_secret_value() == SEED_PASS
        assert mailer.health()["smtp"]["priority"] == 2
    verbs = smtp.state.verbs()
    assert verbs.index("STARTTLS") < verbs.index("AUTH")  # port 587: auto-STARTTLS, then AUTH


async def test_nexomailer_enterprise(server: Any, tmp_path: Path) -> None:
    smtp = server(tls="starttls", auth=False)
    sources = _sources(NEXO_ENTERPRISE, NEXO_ENTERPRISE_TOML, smtp, tmp_path)
    for n, (_, source) in enumerate(sources, 1):
        mailer = await _send(source)
        _delivered(smtp, n)
        config = mailer.providers[0].config
        assert (config.pool, config.max_connections) == (True, 10)
        assert (config.connection_timeout, config.socket_timeout) == (5.0, 10.0)  # ms -> s
        assert config.tls.verify is True and config.name == "my-custom-app"
        assert "connectionTimeout" not in repr(config) and "connection_timeout=5.0" in repr(config)
    assert set(smtp.state.sni) == {"smtp.yourdomain.com"}  # tls.servername went out as SNI
    assert "EHLO my-custom-app" in smtp.state.commands


async def test_nexomailer_oauth2(server: Any, tmp_path: Path) -> None:
    smtp = server(tls="starttls")
    smtp.state.valid_tokens.add(SEED_TOKEN)
    for n, (_, source) in enumerate(_sources(NEXO_OAUTH2, NEXO_OAUTH2_TOML, smtp, tmp_path), 1):
        await _send(source)
        _delivered(smtp, n)
    assert smtp.state.auth_tokens == [SEED_TOKEN] * 3
    assert [c for c in smtp.state.commands if c.startswith("AUTH")] == ["AUTH XOAUTH2"] * 3


async def test_courier_require_tls(server: Any, tmp_path: Path) -> None:
    smtp = server(tls="starttls")
    for n, (_, source) in enumerate(_sources(COURIER, COURIER_TOML, smtp, tmp_path), 1):
        mailer = await _send(source)
        _delivered(smtp, n)
        assert mailer.providers[0].config.require_tls is True
    # requireTLS is honoured: against a server without STARTTLS, nothing is sent
    plain = server()
    entry = copy.deepcopy(_entry(COURIER))
    entry["config"].update(host="127.0.0.1", port=plain.port)
    mailer = Mailer.from_config({"providers": [entry]})
    async with mailer:
        with pytest.raises(Exception, match="STARTTLS"):
            await mailer.send(Message(sender="app@example.com", to="ann@example.org"))
    assert plain.state.messages == [] and "AUTH" not in plain.state.verbs()


async def test_nodemailer_oauth2_refreshes_the_expired_token(
    server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smtp = server(tls="implicit")
    endpoint = TokenEndpoint(["fresh-token"]).start()
    try:
        smtp.state.valid_tokens.add("fresh-token")
        block = copy.deepcopy(NODEMAILER_OAUTH2)
        block["auth"]["accessUrl"] = endpoint.url  # type: ignore[index]
        toml = NODEMAILER_OAUTH2_TOML.replace("https://oauth2.googleapis.com/token", endpoint.url)
        for n, (_, source) in enumerate(_sources(block, toml, smtp, tmp_path), 1):
            await _send(source)
            _delivered(smtp, n)
        # `expires` (2017, in ms) said the access token was stale: it never went out
        assert smtp.state.auth_tokens == ["fresh-token"] * 3
        assert endpoint.requests[0]["grant_type"] == "refresh_token"
        assert endpoint.requests[0]["client_id"] == NODEMAILER_OAUTH2["auth"]["clientId"]  # type: ignore[index]
    finally:
        endpoint.stop()


async def test_nodemailer_pooled_465(server: Any, tmp_path: Path) -> None:
    smtp = server(tls="implicit")
    sources = _sources(NODEMAILER_POOLED_465, NODEMAILER_POOLED_465_TOML, smtp, tmp_path)
    for n, (_, source) in enumerate(sources, 1):
        mailer = await _send(source)
        _delivered(smtp, n)
        assert mailer.providers[0].config.implicit_tls and mailer.providers[0].config.pool
    assert "STARTTLS" not in smtp.state.verbs()


async def test_nodemailer_self_signed(server: Any, tmp_path: Path) -> None:
    smtp = server(tls="implicit")  # its CA is not given: the certificate is untrusted
    sources = _sources(
        NODEMAILER_SELF_SIGNED, NODEMAILER_SELF_SIGNED_TOML, smtp, tmp_path, trust=False
    )
    for n, (_, source) in enumerate(sources, 1):
        mailer = await _send(source)
        _delivered(smtp, n)
        assert mailer.providers[0].config.tls.verify is False


async def test_mailhog_on_localhost(server: Any, tmp_path: Path) -> None:
    smtp = server(auth=False)  # plaintext, no STARTTLS, no AUTH: what Mailhog is
    for n, (_, source) in enumerate(_sources(MAILHOG, MAILHOG_TOML, smtp, tmp_path), 1):
        await _send(source)
        _delivered(smtp, n)


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"requireTLS": True, "require_tls": True}, "requireTLS and require_tls are the same"),
        ({"auth": {"user": "u", "pass": "a", "password": "b"}}, "pass and password"),
        ({"tls": {"rejectUnauthorized": False, "verify": True}}, "rejectUnauthorized and verify"),
        ({"connectionTimeout": 5000, "connection_timeout": 5}, "connectionTimeout and"),
        (
            {"auth": {"type": "oauth2", "user": "u", "accessToken": "t", "access_token": "t"}},
            "accessToken and access_token",
        ),
    ],
)
def test_both_spellings_are_an_error(config: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        Mailer.from_config({"providers": [{"type": "smtp", "config": config}]})


def test_the_docs_table_lists_every_alias_and_refused_option() -> None:
    from mailer.providers._smtp.config import (
        AuthOptions,
        OAuth2Options,
        SMTPConfig,
        TLSOptions,
    )

    docs = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = docs.split("## Coming from Nodemailer / NexoMailer", 1)[1].split("\n## ", 1)[0]
    prefixes = {SMTPConfig: "", TLSOptions: "tls.", AuthOptions: "auth.", OAuth2Options: "auth."}
    for model, prefix in prefixes.items():
        for alias in model.option_aliases:
            assert f"`{prefix}{alias}`" in section, alias
        for refused in getattr(model, "refused_options", {}):
            assert refused in section, refused
