"""Flask integration: ``mail = Mail(app)`` with ``app.config["MAILER"]`` (docs/frameworks.md)."""

from ._integrations.flask import Mail

__all__ = ["Mail"]
