"""Pure parts of the SMTP provider: classification table, wire encoding, config, URLs."""

from __future__ import annotations

import re
import socket
import ssl
from urllib.parse import urlsplit

import pytest
from aiosmtplib import errors as smtp_errors

from mailer._errors import (
    AuthError,
    ConfigError,
    DeliveryUncertain,
    MessageError,
    PermanentError,
    RecipientsDeferred,
    RecipientsRefused,
    TransientError,
)
from mailer.providers._smtp import SMTPConfig, SMTPProvider
from mailer.providers._smtp.auth import choose_mechanism
from mailer.providers._smtp.classify import (
    Endpoint,
    Phase,
    classify_recipients,
    classify_reply,
    enhanced_status,
    map_exception,
    too_many_recipients,
)
from mailer.providers._smtp.config import AuthOptions
from mailer.providers._smtp.wire import (
    command_line,
    data_pieces,
    declared_size,
    encode_data,
    mail_command,
    rcpt_command,
)

from .kit import SMUGGLING

EP = Endpoint(host="smtp.example.com", port=587, secure=False, tls_name="smtp.example.com")
EP465 = Endpoint(host="smtp.example.com", port=465, secure=False, tls_name="smtp.example.com")
EPS = Endpoint(host="smtp.example.com", port=587, secure=True, tls_name="smtp.example.com")

# -- reply classification -----------------------------------------------------------------

TABLE = [
    (Phase.GREETING, 421, "4.3.2 too busy", TransientError),
    (Phase.GREETING, 554, "no SMTP service here", TransientError),
    (Phase.EHLO, 421, "closing", TransientError),
    (Phase.STARTTLS, 454, "4.7.0 TLS not available", TransientError),
    (Phase.AUTH, 535, "5.7.8 Username and Password not accepted", AuthError),
    (Phase.AUTH, 534, "5.7.9 Application-specific password required", AuthError),
    (Phase.AUTH, 454, "4.7.0 Temporary authentication failure", TransientError),
    (Phase.MAIL, 451, "4.3.0 try later", TransientError),
    (Phase.MAIL, 421, "4.4.2 idle timeout", TransientError),
    (Phase.MAIL, 553, "5.1.8 bad sender domain", PermanentError),
    (Phase.MAIL, 530, "5.7.0 Authentication required", AuthError),
    (Phase.MAIL, 552, "5.3.4 message size exceeds limit", PermanentError),
    (Phase.RCPT, 530, "5.7.0 Authentication required", AuthError),
    (Phase.RCPT, 421, "4.7.0 closing", TransientError),
    (Phase.DATA, 554, "5.5.1 no valid recipients", PermanentError),
    (Phase.DATA, 451, "4.3.0 local error", TransientError),
    (Phase.MESSAGE, 451, "4.7.1 greylisted", TransientError),
    (Phase.MESSAGE, 550, "5.7.1 spam detected", PermanentError),
    (Phase.MESSAGE, 354, "odd", DeliveryUncertain),
]


@pytest.mark.parametrize(("phase", "code", "text", "kind"), TABLE)
def test_reply_classification(phase: Phase, code: int, text: str, kind: type) -> None:
    error = classify_reply(phase, code, text, EP)
    assert type(error) is kind
    assert error.code == code
    assert error.response == text
    assert str(code) in str(error)


def test_enhanced_status() -> None:
    assert enhanced_status("5.7.8 Username and Password not accepted") == (5, 7, 8)
    assert enhanced_status("  4.4.2 timeout") == (4, 4, 2)
    assert enhanced_status("Username and Password not accepted") is None


def test_some_recipients_refused_is_not_an_error() -> None:
    assert classify_recipients(["a@x.org"], {"b@x.org": (550, "5.1.1 no such user")}) is None


def test_all_recipients_refused_permanently() -> None:
    error = classify_recipients([], {"a@x.org": (550, "5.1.1 no"), "b@x.org": (553, "5.1.3 bad")})
    assert isinstance(error, RecipientsRefused)
    assert error.refused == {"a@x.org": "550 5.1.1 no", "b@x.org": "553 5.1.3 bad"}
    assert error.code == 550


def test_all_recipients_refused_some_temporarily_is_transient() -> None:
    error = classify_recipients([], {"a@x.org": (550, "5.1.1 no"), "b@x.org": (452, "4.2.2 full")})
    assert type(error) is RecipientsDeferred
    assert isinstance(error, TransientError)
    # the code is the temporary one, although the 5xx came first
    assert error.code == 452 and error.response == "4.2.2 full"
    assert error.refused == {"a@x.org": "550 5.1.1 no", "b@x.org": "452 4.2.2 full"}


def test_too_many_recipients_counts_as_temporary() -> None:
    # RFC 5321 4.5.3.1.10: read the 552 that RFC 821 listed for "too many" as temporary
    error = classify_recipients([], {"a@x.org": (552, "5.5.3 too many recipients")})
    assert type(error) is RecipientsDeferred and error.code == 552


@pytest.mark.parametrize(
    ("code", "text", "expected"),
    [
        (452, "4.5.3 Error: too many recipients", True),  # Postfix
        (452, "too many recipients", True),  # Exim
        (452, "Too many recipients", True),
        (452, "", True),  # RFC 5321's bare 452 to RCPT
        (552, "5.5.3 too many recipients", True),
        (552, "Too many recipients", True),
        (452, "4.2.2 mailbox full", False),
        (452, "4.3.1 insufficient system storage", False),
        (552, "5.2.2 mailbox full", False),
        (552, "message size exceeds limit", False),
        (451, "4.5.3 too many recipients", False),
        (550, "5.5.3 too many recipients", False),
    ],
)
def test_too_many_recipients(code: int, text: str, expected: bool) -> None:
    assert too_many_recipients(code, text) is expected


# -- exception mapping --------------------------------------------------------------------


def _caused(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


def test_connect_refused() -> None:
    error = map_exception(ConnectionRefusedError(111, "refused"), Phase.CONNECT, EP)
    assert type(error) is TransientError
    assert str(error).startswith("connection refused by smtp.example.com:587")


def test_connect_timeout_names_the_setting() -> None:
    error = map_exception(
        TimeoutError(), Phase.CONNECT, EP, timeout=2.5, timeout_name="connection_timeout"
    )
    assert (
        str(error) == "timed out after 2.5s connecting to smtp.example.com:587 (connection_timeout)"
    )


def test_dns_failure() -> None:
    error = map_exception(socket.gaierror(-2, "Name or service not known"), Phase.CONNECT, EP)
    assert "cannot resolve host 'smtp.example.com'" in str(error)


def test_greeting_stall_on_465_says_set_secure() -> None:
    exc = smtp_errors.SMTPConnectTimeoutError("Timed out waiting for server ready message")
    error = map_exception(exc, Phase.GREETING, EP465, timeout=10, timeout_name="greeting_timeout")
    assert type(error) is TransientError
    assert str(error).startswith("port 465 expects implicit TLS: set secure=True")


def test_greeting_stall_elsewhere_hints_at_secure() -> None:
    exc = smtp_errors.SMTPConnectTimeoutError("Timed out waiting for server ready message")
    error = map_exception(exc, Phase.GREETING, EP, timeout=10, timeout_name="greeting_timeout")
    assert str(error).startswith(
        "timed out after 10s waiting for the greeting from smtp.example.com:587 (greeting_timeout)"
    )
    assert "set secure=True" in str(error)


def test_bare_ssl_certificate_error_names_tls() -> None:
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    cert.verify_message = "unable to get local issuer certificate"
    error = map_exception(cert, Phase.STARTTLS, EP)
    assert type(error) is TransientError
    assert str(error).startswith("TLS certificate verification failed for 'smtp.example.com'")
    assert "unable to get local issuer certificate" in str(error)


def test_implicit_tls_against_plaintext_port() -> None:
    inner = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    exc = _caused(smtp_errors.SMTPConnectError("Error connecting"), inner)
    error = map_exception(exc, Phase.GREETING, EPS)
    assert "the server answered in plaintext" in str(error)
    assert "set secure=False" in str(error)


def test_reply_errors_inside_aiosmtplib_exceptions() -> None:
    exc = smtp_errors.SMTPAuthenticationError(535, "5.7.8 Bad credentials")
    error = map_exception(exc, Phase.AUTH, EP)
    assert type(error) is AuthError
    assert (error.code, error.response) == (535, "5.7.8 Bad credentials")


@pytest.mark.parametrize(
    "exc",
    [
        smtp_errors.SMTPServerDisconnected("Connection lost"),
        smtp_errors.SMTPReadTimeoutError("Timed out waiting for server response"),
        ConnectionResetError(),
    ],
)
def test_anything_but_a_reply_after_the_dot_is_uncertain(exc: Exception) -> None:
    assert type(map_exception(exc, Phase.MESSAGE, EP, timeout=3)) is DeliveryUncertain


@pytest.mark.parametrize("phase", [Phase.MAIL, Phase.RCPT, Phase.DATA])
def test_lost_before_the_dot_is_transient(phase: Phase) -> None:
    error = map_exception(smtp_errors.SMTPServerDisconnected("lost"), phase, EP)
    assert type(error) is TransientError
    error = map_exception(TimeoutError(), phase, EP, timeout=3)
    assert type(error) is TransientError
    assert "timed out after 3s" in str(error)


# -- wire --------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", SMUGGLING)
def test_no_end_of_data_but_ours(payload: bytes) -> None:
    data = encode_data(payload)
    assert data.endswith(b"\r\n.\r\n")
    body = data[:-3]
    # CRLF only: no bare CR or LF anywhere
    assert body.count(b"\r") == body.count(b"\n") == body.count(b"\r\n")
    # no line that is a lone "." (what any lenient server would take as end of data)
    assert b".\r\n" not in [line + b"\r\n" for line in body.split(b"\r\n")]
    for line in body.split(b"\r\n"):
        assert not line.startswith(b".") or line.startswith(b"..")


def test_dot_stuffing_is_reversible() -> None:
    original = b"Subject: x\r\n\r\n.leading\r\n..two\r\nend"
    stuffed = encode_data(original)[:-3]
    unstuffed = re.sub(rb"(?m)^\.", b"", stuffed)
    assert unstuffed == original + b"\r\n"


@pytest.mark.parametrize(
    "address", ["a@x.org\r\nRCPT TO:<b@y.org>", "a b@x.org", "a@x.org>", "", "é@x.org", "a\x00@x"]
)
def test_envelope_addresses_cannot_break_commands(address: str) -> None:
    with pytest.raises(MessageError):
        mail_command(address)
    with pytest.raises(MessageError):
        rcpt_command(address)


def test_commands() -> None:
    assert command_line(mail_command("a@x.org", size=12)) == b"MAIL FROM:<a@x.org> SIZE=12\r\n"
    assert command_line(rcpt_command("b@y.org")) == b"RCPT TO:<b@y.org>\r\n"


@pytest.mark.parametrize(
    "payload", [b"", b"a\r\n", b".\r\n..x\r\n.\r\nend", b"x\n.y\r.z\r\n", b"..\r\n." * 50]
)
def test_declared_size_counts_the_message_not_the_stuffing(payload: bytes) -> None:
    """SIZE= (RFC 1870 section 4): CRLF line endings, no terminator, no stuffed dots."""
    crlf = re.sub(rb"\r\n|\r|\n", b"\r\n", payload)
    if crlf and not crlf.endswith(b"\r\n"):
        crlf += b"\r\n"
    assert declared_size(data_pieces(payload)) == len(crlf)


# -- config --------------------------------------------------------------------------------


def test_defaults() -> None:
    cfg = SMTPConfig()
    assert (cfg.port, cfg.secure, cfg.pool, cfg.max_connections, cfg.max_messages) == (
        587,
        False,
        False,
        5,
        100,
    )
    assert (cfg.connection_timeout, cfg.greeting_timeout, cfg.socket_timeout) == (10, 10, 30)
    assert SMTPConfig(port=465).secure is True
    assert SMTPConfig(secure=True).port == 465
    assert SMTPConfig(port=465, secure=False).secure is False


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"name": "bad name"}, "name"),
        ({"name": "host\r\nMAIL FROM:<x@y>"}, "name"),
        ({"host": "smtp.example.com\r\n"}, "host"),
        ({"require_tls": True, "ignore_tls": True}, "contradict"),
        ({"secure": True, "ignore_tls": True}, "ignore_tls"),
        ({"ignore_tls": True, "auth": {"user": "u", "password": "p"}}, "allow_plaintext_auth"),
        ({"auth": {"user": "u"}}, "exactly one of password or oauth2"),
        ({"auth": {"user": "u", "oauth2": {"token_url": "https://t"}}}, "client_id"),
        ({"auth": {"user": "u", "oauth2": {}}}, "access_token"),
        ({"max_connections": 0}, "max_connections"),
        ({"connection_timeout": -1}, "connection_timeout"),
        ({"pol": True}, "unknown option"),
        ({"tls": {"ca_file": "/nonexistent/ca.pem"}}, "tls.ca_file"),
    ],
)
def test_config_errors(config: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        SMTPProvider.from_config("p", config)
    assert fragment in str(info.value)


def test_secrets_never_in_repr_or_errors() -> None:
    provider = SMTPProvider.from_config(
        "p",
        {
            "auth": {
                "user": "u",
                "oauth2": {
                    "access_token": "tok-SECRET-1",
                    "token_url": "https://t.example/token",
                    "client_id": "cid",
                    "client_secret": "cs-SECRET-2",
                    "refresh_token": "rt-SECRET-3",
                },
            }
        },
    )
    text = repr(provider) + repr(provider.config) + str(provider.config.model_dump())
    assert "SECRET" not in text
    with pytest.raises(ConfigError) as info:
        SMTPProvider.from_config("p", {"auth": {"user": "u", "password": "pw-SECRET", "x": 1}})
    assert "SECRET" not in str(info.value)


def test_mechanism_choice() -> None:
    password = AuthOptions(user="u", password="p")  # type: ignore[arg-type]
    assert choose_mechanism(password, ["login", "plain"]) == "PLAIN"
    assert choose_mechanism(password, ["login", "cram-md5"]) == "LOGIN"
    with pytest.raises(AuthError, match="offered: CRAM-MD5"):
        choose_mechanism(password, ["cram-md5"])
    forced = AuthOptions(user="u", password="p", method="LOGIN")  # type: ignore[arg-type]
    assert choose_mechanism(forced, ["login", "plain"]) == "LOGIN"


# -- URLs ------------------------------------------------------------------------------------


def test_url_form() -> None:
    url = urlsplit(
        "smtp://app%40example.com:p%40ss@smtp.example.com:587?pool=true&max_connections=10"
    )
    config = SMTPProvider.config_from_url(url, {"pool": "true", "max_connections": "10"})
    provider = SMTPProvider.from_config("p", config)
    cfg = provider.config
    assert (cfg.host, cfg.port, cfg.secure, cfg.pool, cfg.max_connections) == (
        "smtp.example.com",
        587,
        False,
        True,
        10,
    )
    assert cfg.auth.user == "app@example.com"
    assert cfg.auth.password.get_secret_value() == "p@ss"


def test_smtps_url_is_implicit_tls_on_465() -> None:
    url = urlsplit("smtps://u:p@smtp.example.com?tls.servername=mx.example.com")
    config = SMTPProvider.config_from_url(url, {"tls.servername": "mx.example.com"})
    cfg = SMTPProvider.from_config("p", config).config
    assert (cfg.secure, cfg.port, cfg.tls.servername) == (True, 465, "mx.example.com")


def test_url_errors() -> None:
    with pytest.raises(ConfigError, match="unknown SMTP URL option 'bogus'"):
        SMTPProvider.config_from_url(urlsplit("smtp://h?bogus=1"), {"bogus": "1"})
    with pytest.raises(ConfigError, match="implicit TLS"):
        SMTPProvider.config_from_url(urlsplit("smtps://h?secure=false"), {"secure": "false"})
