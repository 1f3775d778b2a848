"""Flask integration: ``mail = Mail(app)`` with ``app.config["MAILER"]`` (docs/frameworks.md)."""

from .integrations.flask import Mail

__all__ = ["Mail"]
