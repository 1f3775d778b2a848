"""``mailer demo``: failover on loopback, no account needed; the demo itself is
``mailer._demo``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from .common import EXIT_FAILED, app, friendly, out, run


@app.command()
@friendly
def demo(
    messages: Annotated[
        int, typer.Option(min=10, max=5000, help="How many messages to send.")
    ] = 300,
    concurrency: Annotated[int, typer.Option(min=1, max=200, help="Sends in flight at once.")] = 20,
    rate: Annotated[
        float, typer.Option(min=1, max=2000, help="Messages started per second.")
    ] = 40.0,
) -> None:
    """Watch failover on loopback: two SMTP servers and a fake HTTP API, no account needed."""
    from .._demo.runner import DemoOptions, render_summary, run_demo

    options = DemoOptions(messages=messages, concurrency=concurrency, rate=rate)

    async def go() -> Any:
        return await run_demo(options, out())

    report = run(go)
    out().print()
    render_summary(report, out())
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
