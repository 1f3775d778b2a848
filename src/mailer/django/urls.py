"""The ESPs' webhooks in a Django project (docs/events.md):
``path("mail/events/", include("mailer.django.urls"))`` answers ``POST
/mail/events/{provider name}``, through the project's SyncMailer (``settings.MAILER``)."""

from __future__ import annotations

from .._integrations.django_webhooks import webhook_view

app_name = "mailer"
urlpatterns = [webhook_view()]
