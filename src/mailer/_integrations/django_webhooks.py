"""The Django view behind ``mailer.django.urls``: the WSGI receiver's logic on Django's
request. CSRF-exempt (the ESP has no token: its signature or Basic credentials stand in),
and the body read from the stream (at most 5 MiB + 1 bytes), so Django's
DATA_UPLOAD_MAX_MEMORY_SIZE does not cut an ESP's batch short."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.views.decorators.csrf import csrf_exempt

from .._webhooks.wsgi import serve_sync
from .django import get_mailer

__all__ = ["webhook_view"]


def receive(request: HttpRequest, provider: str) -> HttpResponse:
    headers = {k.lower(): v for k, v in request.headers.items()}
    length_text = request.META.get("CONTENT_LENGTH")
    length = int(length_text) if length_text and length_text.isdigit() else None
    reply = serve_sync(
        get_mailer(),
        request.method or "GET",
        provider,
        headers,
        length,
        request.read,
        dict(request.GET.items()),
    )
    response = HttpResponse(reply.json(), status=reply.status, content_type="application/json")
    for name, value in reply.headers:
        if name != "content-type":
            response[name] = value
    return response


def webhook_view(**kwargs: Any) -> URLPattern:
    """``<provider>``: one route for every provider name."""
    return path("<str:provider>", csrf_exempt(receive), name="webhook", **kwargs)
