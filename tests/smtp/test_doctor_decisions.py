"""`mailer doctor`'s decisions, tested directly on what a probe saw (no server needed)."""

from __future__ import annotations

import pytest

from mailer.providers._smtp.doctor import (
    CertInfo,
    Diagnosis,
    Probe,
    check_settings,
    conclude,
    suggest_auth,
)


def _starttls(auth: str, host: str = "smtp.example.com", port: int = 587) -> Diagnosis:
    diag = Diagnosis(host, port, host, reachable=True)
    cert = CertInfo(verified=True, checked_name=host, names=[host])
    diag.probes = [
        Probe("implicit-tls", failure="no TLS handshake"),
        Probe(
            "plaintext",
            ok=True,
            greeting="220 hi",
            extensions={"STARTTLS": ""},
            starttls=True,
            tls_extensions={"AUTH": auth} if auth else {},
            cert=cert,
        ),
    ]
    conclude(diag)
    return diag


def _plaintext(host: str, auth: str) -> Diagnosis:
    diag = Diagnosis(host, 1025, host, reachable=True)
    diag.probes = [
        Probe("implicit-tls", failure="no TLS handshake"),
        Probe("plaintext", ok=True, greeting="220 hi", extensions={"AUTH": auth} if auth else {}),
    ]
    conclude(diag)
    return diag


def test_xoauth2_only_server_gets_oauth2_settings_not_a_password() -> None:
    diag = _starttls("XOAUTH2 OAUTHBEARER")
    auth = diag.settings["auth"]
    assert "password" not in auth and auth["oauth2"] == {"access_token": "${SMTP_ACCESS_TOKEN}"}
    assert any("only XOAUTH2" in note for note in diag.notes)
    assert diag.ok and check_settings(diag.settings) is None


def test_password_server_gets_password_settings() -> None:
    diag = _starttls("PLAIN LOGIN XOAUTH2")
    assert diag.settings["auth"]["password"] == "${SMTP_PASSWORD}"
    assert diag.settings["require_tls"] is True and check_settings(diag.settings) is None


def test_unsupported_mechanisms_are_a_problem() -> None:
    diag = _starttls("CRAM-MD5 NTLM")
    assert "auth" not in diag.settings
    assert any("CRAM-MD5 NTLM only" in p for p in diag.problems) and not diag.ok


def test_plaintext_only_loopback_with_auth_passes_our_own_check() -> None:
    # The old advice, ignore_tls with password auth, is a config we refuse.
    diag = _plaintext("127.0.0.1", "PLAIN LOGIN")
    settings = diag.settings
    assert settings["auth"]["password"] and settings["allow_plaintext_auth"] is True
    assert check_settings(settings) is None
    assert diag.ok


def test_plaintext_only_loopback_without_auth() -> None:
    diag = _plaintext("localhost", "")
    assert diag.settings == {"host": "localhost", "port": 1025, "ignore_tls": True}
    assert check_settings(diag.settings) is None and diag.ok


def test_plaintext_only_remote_server_is_a_problem_and_suggests_no_auth() -> None:
    diag = _plaintext("mail.example.com", "PLAIN LOGIN")
    assert "auth" not in diag.settings and "allow_plaintext_auth" not in diag.settings
    assert not diag.ok and any("in clear" in p for p in diag.problems)
    assert check_settings(diag.settings) is None


@pytest.mark.parametrize(
    ("mechanisms", "kind"),
    [([], None), (["LOGIN"], "password"), (["XOAUTH2"], "oauth2"), (["GSSAPI"], None)],
)
def test_suggest_auth(mechanisms: list[str], kind: str | None) -> None:
    auth, _, problem = suggest_auth(mechanisms)
    assert (auth is None) == (kind is None)
    if kind is not None:
        assert auth is not None and kind in auth
    assert (problem is not None) == (mechanisms == ["GSSAPI"])


def test_check_settings_names_what_we_refuse() -> None:
    refused = check_settings(
        {"host": "h", "ignore_tls": True, "auth": {"user": "u", "password": "p"}}
    )
    assert refused is not None and "plaintext" in refused
