"""``mailer send``: one message from the command line, and what became of it."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .._log import one_line, redact
from .common import EXIT_USAGE, ConfigOption, JsonOption, app, fail, friendly, out, print_json, run


def _read_text(value: str | None) -> str | None:
    if value == "-":
        return sys.stdin.read()
    if value is not None and value.startswith("@"):
        return Path(value[1:]).read_text(encoding="utf-8")
    return value


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

    async def go() -> Any:
        async with mailer:
            return await mailer.send(message)

    result = run(go)
    if as_json:
        print_json(
            {
                "ok": True,
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
        return
    out().print(
        f"[green]sent[/] via [bold]{escape(result.provider)}[/]  "
        f"message-id {escape(result.message_id or '?')}"
        + (
            f"  provider-id {escape(result.provider_message_id)}"
            if result.provider_message_id
            else ""
        )
    )
    failed = [a for a in result.attempts if not a.ok]
    for attempt in failed:
        out().print(
            f"  [yellow]failed over[/] from {escape(attempt.provider)}: "
            f"{attempt.outcome}: {escape(one_line(attempt.error or ''))}"
        )
    for address, reply in result.rejected.items():
        out().print(f"  [red]rejected[/] {escape(address)}: {escape(one_line(reply))}")
