"""`mailer doctor`: tells STARTTLS from implicit TLS, checks the certificate name (SNI),
lists AUTH, and names the fix; against real servers on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

#: the only name in the test certificate (see conftest.TLS_NAME)
TLS_NAME = "localhost"


def _diagnosis(result: Any) -> dict[str, Any]:
    found = json.loads(result.stdout)
    assert len(found) == 1
    return dict(found[0])


def test_starttls_server(mailer_cli: Any, starttls_server: Any, certs: Any) -> None:
    port, ca_file = starttls_server.port, certs[1]
    result = mailer_cli(
        "doctor",
        "127.0.0.1",
        "--port",
        str(port),
        "--ca-file",
        str(ca_file),
        "--servername",
        TLS_NAME,
    )
    assert result.code == 0, result.output
    assert "mode          STARTTLS" in result.stdout
    assert f"valid for {TLS_NAME}" in result.stdout
    assert "AUTH          LOGIN PLAIN" in result.stdout or "PLAIN LOGIN" in result.stdout
    assert "require_tls = true" in result.stdout
    assert "\n  secure = true\n" not in result.stdout  # not among the settings
    assert "TLS on 587" in result.stdout  # the mistake to avoid on a STARTTLS port

    data = _diagnosis(
        mailer_cli(
            "doctor",
            "127.0.0.1",
            "-p",
            str(port),
            "--ca-file",
            str(ca_file),
            "--servername",
            TLS_NAME,
            "--json",
        )
    )
    assert data["mode"] == "STARTTLS" and data["ok"] is True
    implicit, plain = data["probes"]
    assert implicit["mode"] == "implicit-tls" and not implicit["ok"]
    assert plain["starttls"] is True
    assert "AUTH" not in plain["extensions"]  # AUTH only after TLS on this server
    assert set(data["auth"]) == {"LOGIN", "PLAIN"}
    assert plain["cert"]["verified"] is True and TLS_NAME in plain["cert"]["names"]
    assert data["settings"]["tls"] == {"ca_file": str(ca_file), "servername": TLS_NAME}


def test_implicit_tls_server(mailer_cli: Any, implicit_tls_server: Any, certs: Any) -> None:
    port, ca_file = implicit_tls_server.port, certs[1]
    result = mailer_cli(
        "doctor", "127.0.0.1", "-p", str(port), "--ca-file", str(ca_file), "--servername", TLS_NAME
    )
    assert result.code == 0, result.output
    assert "mode          implicit TLS" in result.stdout
    assert "\n  secure = true\n" in result.stdout
    assert "require_tls" not in result.stdout

    data = _diagnosis(
        mailer_cli(
            "doctor",
            "127.0.0.1",
            "-p",
            str(port),
            "--ca-file",
            str(ca_file),
            "--servername",
            TLS_NAME,
            "--json",
        )
    )
    assert data["mode"] == "implicit TLS" and data["ok"] is True
    assert len(data["probes"]) == 1  # no plaintext probe: it would only wait for a greeting
    assert data["probes"][0]["cert"]["tls_version"] in ("TLSv1.2", "TLSv1.3")
    assert data["settings"]["secure"] is True


def test_certificate_without_the_host_name_suggests_servername(
    mailer_cli: Any, implicit_tls_server: Any, certs: Any
) -> None:
    # The certificate carries only TLS_NAME, not 127.0.0.1: the classic SNI mistake.
    result = mailer_cli(
        "doctor", "127.0.0.1", "-p", str(implicit_tls_server.port), "--ca-file", str(certs[1])
    )
    assert result.code == 1
    assert "NOT valid for 127.0.0.1" in result.stdout
    assert f"tls.servername = '{TLS_NAME}'" in result.stdout
    assert "error: no port probed on 127.0.0.1 is ready" in result.stderr


def test_untrusted_certificate_is_named(mailer_cli: Any, starttls_server: Any) -> None:
    result = mailer_cli(
        "doctor", "127.0.0.1", "-p", str(starttls_server.port), "--servername", TLS_NAME, "--json"
    )
    assert result.code == 1
    data = json.loads(result.stdout)[0]
    assert data["mode"] == "STARTTLS"
    cert = data["probes"][1]["cert"]
    assert cert["verified"] is False and cert["problem"]  # e.g. "unable to get local issuer"
    assert any("tls.ca_file" in p for p in data["problems"])


def test_plaintext_only_server(mailer_cli: Any, smtp_server: Any) -> None:
    result = mailer_cli("doctor", "127.0.0.1", "-p", str(smtp_server.port), "--json")
    assert result.code == 0, result.output
    data = json.loads(result.stdout)[0]
    assert data["mode"] == "plaintext only"
    assert data["settings"]["ignore_tls"] is True  # loopback only; see the problems otherwise


def test_nothing_listening(mailer_cli: Any, closed_port: int) -> None:
    result = mailer_cli("doctor", "127.0.0.1", "-p", str(closed_port), "--timeout", "2")
    assert result.code == 1
    assert "connection refused" in result.stdout
    assert "Traceback" not in result.output
