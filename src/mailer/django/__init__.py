"""Django integration: ``EMAIL_BACKEND = "mailer.django.EmailBackend"`` (docs/django.md)."""

from .._integrations.django import EmailBackend, MailerResult, close_mailers, get_mailer, to_message

__all__ = ["EmailBackend", "MailerResult", "close_mailers", "get_mailer", "to_message"]
