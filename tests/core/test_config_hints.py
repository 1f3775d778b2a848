"""Errors that say what to change: did-you-mean, ms-looking durations, secret-safe DSNs."""

from __future__ import annotations

from typing import Any

import pytest

from mailer import ConfigError, Mailer
from mailer._config import interpolate_dsn, load_config, parse_dsn


def _error(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        Mailer.from_config(config)
    assert info.value.__context__ is None and info.value.__cause__ is None
    return str(info.value)


def _smtp(**config: Any) -> dict[str, Any]:
    return {"providers": [{"type": "smtp", "config": config}]}


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"providers": [{"type": "smpt"}]}, "unknown provider type 'smpt'; did you mean 'smtp'?"),
        (_smtp(max_conection=3), "max_conection: unknown option; did you mean max_connections?"),
        (_smtp(conection_timeout=3), "did you mean connection_timeout?"),
        (_smtp(tls={"rejectUnauthorised": False}), "did you mean rejectUnauthorized (our name"),
        (_smtp(auth={"user": "u", "passwrd": "x"}), "auth.passwrd: unknown option; did you mean"),
        ({"providers": [{"type": "memory"}], "send_timout": 3}, "did you mean send_timeout?"),
        (_smtp(rateDelta=500), "rateDelta needs rateLimit"),
        (_smtp(service="gmail"), "service is not offered: well-known service names"),
        (_smtp(tls={"ca": "-----BEGIN"}), "save it to a file and set tls.ca_file"),
        (_smtp(auth={"type": "ntlm", "user": "u"}), "auth.type must be 'login'"),
        (_smtp(connectionTimeout="soon"), "connectionTimeout must be a number of milliseconds"),
    ],
)
def test_errors_say_what_to_change(config: dict[str, Any], needle: str) -> None:
    assert needle in _error(config)


@pytest.mark.parametrize("key", ["connection_timeout", "greeting_timeout", "socket_timeout"])
def test_seconds_that_look_like_milliseconds_are_refused(key: str) -> None:
    text = _error(_smtp(**{key: 10000}))
    assert f"{key} = 10000 is in seconds" in text and f"write {key} = 10" in text
    assert Mailer.from_config(_smtp(**{key: 600})).providers[0].config  # 10 minutes: fine


def test_aliases_in_milliseconds_are_not_mistaken() -> None:
    # Nodemailer's own 2-minute default, in its unit, is 120 s for us: not "ms-looking"
    mailer = Mailer.from_config(_smtp(connectionTimeout=120000, socketTimeout=600000))
    config = mailer.providers[0].config
    assert (config.connection_timeout, config.socket_timeout) == (120.0, 600.0)


def test_smtp_url_takes_aliases_and_suggests() -> None:
    entry = parse_dsn("smtp://mail.example.com?connectionTimeout=5000&requireTLS=true")
    config = Mailer.from_config({"providers": [entry]}).providers[0].config
    assert (config.connection_timeout, config.require_tls) == (5.0, True)
    with pytest.raises(ConfigError, match="did you mean 'max_connections'"):
        parse_dsn("smtp://mail.example.com?max_conections=3")


SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


@pytest.mark.parametrize(
    "dsn",
    [
        f"ses://AKIAIOSFODNN7EXAMPLE:{SECRET}@default",
        f"smtp://user:{SECRET}@mail.example.com:587",
        f"smtp://user:{SECRET.replace('/', '#')}@mail.example.com",
        f"resend://{SECRET}@default",
    ],
)
def test_dsn_errors_never_echo_a_secret(dsn: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config({"providers": [dsn]})
    text = str(info.value)
    for piece in (SECRET, *SECRET.split("/"), "AKIAIOSFODNN7EXAMPLE", "wJalr"):
        assert piece not in text
    assert info.value.__context__ is None


@pytest.mark.parametrize("dsn", ["smtp.example.com:587", "user:pass@host", "mail.example.com"])
def test_dsn_without_a_scheme(dsn: str) -> None:
    text = _error({"providers": [dsn]})
    assert "has no scheme" in text and "pass" not in text


@pytest.mark.parametrize("password", ["2525/xyz", "p@ss:w#rd?x=1", "50%off", "a b"])
def test_env_in_dsn_user_info_is_percent_encoded(
    password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_USER", "mail@user")
    monkeypatch.setenv("SMTP_PASSWORD", password)
    mailer = Mailer.from_config(
        {"providers": ["smtp://${SMTP_USER}:${SMTP_PASSWORD}@mail.example.com:2500?pool=true"]}
    )
    config = mailer.providers[0].config
    assert (config.host, config.port, config.pool) == ("mail.example.com", 2500, True)
    assert config.auth.user == "mail@user"
    assert config.auth.password.get_secret_value() == password


def test_interpolate_dsn_leaves_host_and_whole_url_variables_alone() -> None:
    env = {"HOST": "mx.example.com", "URL": "smtp://a:b@c.example"}
    assert interpolate_dsn("smtp://u:p@${HOST}:25", env) == "smtp://u:p@mx.example.com:25"
    assert interpolate_dsn("${URL}", env) == "smtp://a:b@c.example"
    assert interpolate_dsn("smtp://${HOST}/x?y=${HOST}", env) == (
        "smtp://mx.example.com/x?y=mx.example.com"
    )
