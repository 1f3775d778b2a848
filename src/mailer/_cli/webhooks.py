"""``mailer webhooks serve``: the ESPs' webhook receivers on a real ASGI server (uvicorn,
the ``webhooks`` extra), one ``POST /{provider name}`` per provider with a ``webhook``
block."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import EXIT_USAGE, ConfigOption, app, fail, friendly, out

__all__ = ["webhooks_app"]

webhooks_app = typer.Typer(
    name="webhooks",
    help="Receive the ESPs' delivery events over HTTP.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(webhooks_app)


@webhooks_app.command("serve")
@friendly
def serve(
    config: ConfigOption = Path("mailer.toml"),
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The TCP port to listen on.")] = 8025,
) -> None:
    """Serve POST /{provider name} for every provider whose config has a webhook block,
    until interrupted; put it behind your TLS-terminating proxy."""
    try:
        import uvicorn
    except ImportError:
        fail(
            "mailer webhooks serve needs uvicorn: pip install 'mailer-failover[webhooks]'",
            code=EXIT_USAGE,
        )
    from .._mailer import Mailer
    from .._webhooks.asgi import asgi_app
    from .._webhooks.handler import WebhookHandler

    mailer = Mailer.from_config(config)
    handler = WebhookHandler(mailer)
    if not handler.parsers:
        fail("no provider in the config has a webhook block (docs/events.md)", code=EXIT_USAGE)
    out().print(f"webhooks for {', '.join(sorted(handler.parsers))} on http://{host}:{port}/")
    uvicorn.run(
        asgi_app(mailer, handler=handler, close=True),
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
    )
