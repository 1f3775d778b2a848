"""``mailer send``: one message from the command line, and what became of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .._log import one_line, redact
from .._result import Attempt
from .common import (
    EXIT_QUEUED,
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    app,
    fail,
    friendly,
    out,
    print_json,
    run,
)


def _read_text(value: str | None) -> str | None:
    if value == "-":
        return sys.stdin.read()
    if value is not None and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8")
    return value


def _failovers(attempts: list[Attempt]) -> list[tuple[str, Attempt, int]]:
    """(provider, its last failed attempt, how many) per run of failed attempts at one
    provider: a failover is leaving a provider, once, however often it was retried."""
    runs: list[tuple[str, Attempt, int]] = []
    for attempt in attempts:
        if attempt.ok:
            continue
        if runs and runs[-1][0] == attempt.provider:
            runs[-1] = (attempt.provider, attempt, runs[-1][2] + 1)
        else:
            runs.append((attempt.provider, attempt, 1))
    return runs


@app.command()
@friendly
def send(
    config: ConfigOption = Path("mailer.toml"),
    sender: Annotated[
        str | None, typer.Option("--from", help="Sender; defaults.sender if unset.")
    ] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient (repeatable).")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc", help="Cc recipient (repeatable).")] = None,
    bcc: Annotated[
        list[str] | None, typer.Option("--bcc", help="Bcc recipient (repeatable).")
    ] = None,
    subject: Annotated[str, typer.Option("--subject", "-s")] = "",
    text: Annotated[
        str | None, typer.Option("--text", help="Plain body; '-' reads stdin, @FILE reads a file.")
    ] = None,
    html: Annotated[
        str | None, typer.Option("--html", help="HTML body; @FILE reads a file.")
    ] = None,
    attach: Annotated[
        list[Path] | None, typer.Option("--attach", help="File to attach (repeatable).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", help="Extra header 'Name: value' (repeatable).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Send one message; print which provider took it and its Message-ID."""
    from .._errors import MessageError
    from .._mailer import Mailer
    from .._message import Message

    headers: dict[str, str] = {}
    for item in header or []:
        name, sep, value = item.partition(":")
        if not sep:
            fail(f"--header {item!r} is not 'Name: value'", code=EXIT_USAGE)
        headers[name.strip()] = value.strip()
    if not (to or cc or bcc):
        fail("no recipient", "give at least one --to (or --cc, --bcc)", EXIT_USAGE)
    fields: dict[str, Any] = {
        "to": to or [],
        "cc": cc or [],
        "bcc": bcc or [],
        "subject": subject,
        "text": _read_text(text),
        "html": _read_text(html),
        "attachments": list(attach or []),
        "headers": headers,
    }
    if sender is not None:
        fields["sender"] = sender
    message = Message(**fields)
    mailer = Mailer.from_config(config)
    if text is None and html is None:
        # an empty body is never what a person typing a command meant to send (a
        # MessageError, after the config is read: --json gets it as JSON, and a bad
        # config is still the first thing named)
        raise MessageError("no body: give --text or --html")

    async def go() -> Any:
        async with mailer:
            return await mailer.send(message)

    result = run(go)
    queued = result.status == "queued"
    if as_json:
        print_json(
            {
                "ok": True,
                "status": result.status,
                "provider": result.provider,
                "message_id": result.message_id,
                "provider_message_id": result.provider_message_id,
                "accepted": result.accepted,
                "rejected": {a: redact(r) for a, r in result.rejected.items()},
                "attempts": [
                    {
                        "provider": a.provider,
                        "outcome": a.outcome,
                        "error": redact(a.error) if a.error else None,
                        "code": a.code,
                        "duration": round(a.duration, 4),
                    }
                    for a in result.attempts
                ],
            }
        )
        if queued:
            raise typer.Exit(EXIT_QUEUED)
        return
    if queued:
        # not sent: every provider failed before its commit point and the outbox took it
        out().print(
            f"[yellow]queued[/] in the outbox  outbox-id {escape(result.message_id or '?')}  "
            "(a `mailer worker` delivers it; `mailer outbox list` shows it)"
        )
    else:
        out().print(
            f"[green]sent[/] via [bold]{escape(result.provider)}[/]  "
            f"message-id {escape(result.message_id or '?')}"
            + (
                f"  provider-id {escape(result.provider_message_id)}"
                if result.provider_message_id
                else ""
            )
        )
    label = "failed at" if queued else "failed over from"
    for provider, attempt, tries in _failovers(result.attempts):
        again = f" ({tries} attempts)" if tries > 1 else ""
        out().print(
            f"  [yellow]{label}[/] {escape(provider)}{again}: "
            f"{attempt.outcome}: {escape(one_line(attempt.error or ''))}"
        )
    for address, reply in result.rejected.items():
        out().print(f"  [red]rejected[/] {escape(address)}: {escape(one_line(reply))}")
    if queued:
        raise typer.Exit(EXIT_QUEUED)
