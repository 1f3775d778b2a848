"""Real Django (a tiny project in djangoproject/), real SMTP servers from mailer.testing."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import django
import pytest
from tests.smtp.conftest import smtp_server  # noqa: F401 - the shared server fixture

from mailer.testing import SMTPTestServer

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.djangoproject.settings")
django.setup()


def smtp_config(*servers: SMTPTestServer, **top: Any) -> dict[str, Any]:
    """A Mailer config sending to ``servers`` in order, named primary, secondary, ..."""
    names = ["primary", "secondary", "tertiary"]
    providers = [
        {"type": "smtp", "name": names[i], "config": server.config()}
        for i, server in enumerate(servers)
    ]
    return {"providers": providers, "retry": {"attempts": 1}, **top}


@pytest.fixture
def use_mailer() -> Iterator[Callable[[dict[str, Any]], None]]:
    """``use_mailer(config)`` points settings.MAILER at it for the test; the shared
    Mailers are closed afterwards."""
    from django.test import override_settings

    from mailer.django import close_mailers

    overrides: list[Any] = []

    def use(config: dict[str, Any]) -> None:
        override = override_settings(MAILER=config)
        override.enable()
        overrides.append(override)

    yield use
    for override in reversed(overrides):
        override.disable()
    close_mailers()
