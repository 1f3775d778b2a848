"""``mailer doctor HOST`` and ``mailer doctor --domain DOMAIN``: rendering only; the probing
and its decisions live in ``mailer.providers._smtp.doctor`` and ``mailer._domain``, where
they are tested without a terminal."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from .common import EXIT_USAGE, app, fail, friendly, out, run

if TYPE_CHECKING:
    from .._domain import Finding
    from ..providers._smtp.doctor import Diagnosis

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "info": "cyan"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def _render_diagnosis(diag: Diagnosis) -> None:
    out().print(f"[bold]mailer doctor {escape(diag.host)}:{diag.port}[/]")

    def row(label: str, value: str) -> None:
        out().print(f"  {label:<13} {value}")

    if not diag.reachable:
        row("connect", f"[red]failed[/]: {escape(diag.failure or '')}")
        return
    row("connect", f"ok ({diag.connect_ms:.0f} ms to {escape(diag.address or '?')})")
    for probe in diag.probes:
        label = "implicit TLS" if probe.mode == "implicit-tls" else "plaintext"
        if probe.ok:
            row(label, f"[green]yes[/]: {escape(probe.greeting or '')}")
        else:
            row(label, f"no: {escape(probe.failure or '')}")
    if diag.failure:
        row("result", f"[red]{escape(diag.failure)}[/]")
        return
    style = {"implicit TLS": "green", "STARTTLS": "green"}.get(diag.mode, "yellow")
    row("mode", f"[bold {style}]{diag.mode}[/]")
    cert = next((p.cert for p in diag.probes if p.cert is not None), None)
    if cert is not None:
        name = escape(cert.checked_name)
        if cert.verified:
            row("certificate", f"[green]valid[/] for {name} (the name sent in SNI and checked)")
        else:
            row("certificate", f"[red]NOT valid[/] for {name}: {escape(cert.problem or '?')}")
        row("  names", escape(", ".join(cert.names) or "(none found)"))
        if cert.issuer:
            row("  issuer", escape(cert.issuer))
        if cert.not_after:
            row("  expires", f"{cert.not_after} ({cert.days_left} days)")
        if cert.tls_version:
            row("  protocol", cert.tls_version)
    auth = " ".join(diag.auth) or "none offered"
    if diag.auth_before_tls:
        auth += f" (before TLS: {' '.join(diag.auth_before_tls)})"
    row("AUTH", escape(auth))
    row("PIPELINING", "yes" if diag.pipelining else "no")
    row(
        "SIZE",
        f"{diag.size} bytes ({diag.size / 1048576:.1f} MiB)" if diag.size else "not announced",
    )
    out().print("\n[bold]Settings to use[/] (mailer.toml):")
    out().print(escape('  [[providers]]\n  type = "smtp"\n  [providers.config]'))
    for key, value in diag.settings.items():
        out().print(f"  {key} = {escape(_toml_value(value))}")
    for note in diag.notes:
        out().print(f"[cyan]note[/]: {escape(note)}")
    for warning in diag.warnings:
        out().print(f"[yellow]warning[/]: {escape(warning)}")
    for problem in diag.problems:
        out().print(f"[red]problem[/]: {escape(problem)}")


def _config_selectors(config: Path, domain: str) -> tuple[dict[str, str | None], str | None]:
    """The DKIM selectors the config signs ``domain`` with (selector -> key id), and the
    defaults' sender domain."""
    from .._config import ProviderEntry, load_config
    from .._domain.lookup import public_key_id
    from .._message.dkim import DKIMOptions

    loaded = load_config(config)
    found: dict[str, str | None] = {}

    def walk(entries: list[ProviderEntry]) -> None:
        for entry in entries:
            walk(entry.providers or [])
            dkim = entry.config.get("dkim")
            if isinstance(dkim, dict):
                options = DKIMOptions.model_validate(dkim)
                if options.domain.lower() == domain:
                    found[options.selector] = public_key_id(options)

    walk(list(loaded.providers))
    sender = loaded.defaults.get("sender") or loaded.defaults.get("from")
    sender_domain = str(sender).rpartition("@")[2].rstrip(">").lower() if sender else None
    return found, sender_domain


def _render_findings(domain: str, findings: list[Finding]) -> None:
    out().print(f"[bold]mailer doctor --domain {escape(domain)}[/]")
    for f in findings:
        style = _STYLE[f.status]
        out().print(
            f"  {f.check:<13} [{style}]{f.status:<4}[/] {escape(f.summary)}", soft_wrap=True
        )
        if f.status in ("warn", "fail") and f.need:
            out().print(f"  {'':<13}      [dim]rules:[/] {escape(f.need)}", soft_wrap=True)
        if f.status in ("warn", "fail") and f.change:
            out().print(f"  {'':<13}      [dim]change:[/] {escape(f.change)}", soft_wrap=True)


def _doctor_domain(
    domain: str,
    nameserver: str | None,
    selectors: list[str],
    sender: str | None,
    config: Path,
    timeout: float,
    as_json: bool,
) -> None:
    from .._domain import check_domain

    domain = domain.strip().rstrip(".").lower()
    found: dict[str, str | None] = {}
    config_sender = None
    if config.is_file():
        found, config_sender = _config_selectors(config, domain)
    for selector in selectors:
        found.setdefault(selector, None)
    from_domain = sender.rpartition("@")[2].lower() if sender else config_sender

    async def go() -> list[Finding]:
        _, findings = await check_domain(
            domain,
            nameserver=nameserver,
            selectors=found,
            from_domain=from_domain,
            timeout=timeout,
        )
        return findings

    findings = run(go)
    if as_json:
        out().print_json(
            json.dumps(
                {
                    "domain": domain,
                    "findings": [asdict(f) for f in findings],
                    "ok": not any(f.status == "fail" for f in findings),
                }
            )
        )
    else:
        _render_findings(domain, findings)
    failed = [f.check for f in findings if f.status == "fail"]
    if failed:
        fail(
            f"{domain} does not meet the bulk-sender rules: {', '.join(failed)}",
            "change the DNS records as each line says, then run the doctor again",
        )


@app.command()
@friendly
def doctor(
    host: Annotated[str | None, typer.Argument(help="SMTP server host name or IP address.")] = None,
    domain: Annotated[
        str | None,
        typer.Option("--domain", help="Check a sending domain's DNS (SPF, DKIM, DMARC...)."),
    ] = None,
    nameserver: Annotated[
        str | None, typer.Option(help="With --domain: ask this DNS server (IP[:port]).")
    ] = None,
    selector: Annotated[
        list[str] | None,
        typer.Option("--selector", help="With --domain: a DKIM selector to check (repeatable)."),
    ] = None,
    sender: Annotated[
        str | None, typer.Option("--from", help="With --domain: the From address (alignment).")
    ] = None,
    config: Annotated[
        Path, typer.Option("--config", "-c", help="With --domain: read DKIM selectors here.")
    ] = Path("mailer.toml"),
    port: Annotated[
        list[int] | None,
        typer.Option("--port", "-p", help="Port to probe (repeatable; default 587 and 465)."),
    ] = None,
    servername: Annotated[
        str | None, typer.Option(help="TLS name to send (SNI) and check; default HOST.")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="Trust this CA (PEM) instead of the system's.")
    ] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds for each connect, handshake and reply.")
    ] = 5.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Probe an SMTP server (TLS, certificate, AUTH, settings), or with --domain check a
    sending domain's DNS against the 2024 bulk-sender rules."""
    if domain is not None:
        if host is not None:
            fail("give HOST or --domain, not both", code=EXIT_USAGE)
        _doctor_domain(domain, nameserver, selector or [], sender, config, timeout, as_json)
        return
    if host is None:
        fail("give an SMTP HOST to probe, or --domain DOMAIN", code=EXIT_USAGE)
    ports = port or [587, 465]
    if ca_file is not None and not ca_file.is_file():
        fail(f"--ca-file {ca_file} is not a readable file", code=EXIT_USAGE)

    from ..providers._smtp.doctor import diagnose

    async def go() -> list[Diagnosis]:
        return [
            await diagnose(host, p, servername=servername, ca_file=ca_file, timeout=timeout)
            for p in ports
        ]

    results = run(go)
    if as_json:
        out().print_json(json.dumps([asdict(d) | {"ok": d.ok} for d in results]))
    else:
        for i, diag in enumerate(results):
            if i:
                out().print()
            _render_diagnosis(diag)
    if not any(d.ok for d in results):
        fail(
            f"no port probed on {host} is ready to use as is (see the problems above)",
            "fix the problems listed above, or try another --port",
        )
