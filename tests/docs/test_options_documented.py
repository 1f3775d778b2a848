"""Every configuration option is in the docs: the configuration reference is part of a
feature, and an option only the code knows is one no user can find.

Walks the config models (the Mailer's, health, retry, budget, the outbox, DKIM) and every
built-in provider's ``Config`` found through the ``mailer.providers`` entry points,
nested models included, and looks for each field name inside backticks somewhere under
docs/ (``name``, ``tls.name``, ``name = ...``). Plugins in plugins/ document their
options in their own READMEs and are left out.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel

from mailer._config import MailerConfig
from mailer._message.dkim import DKIMOptions
from mailer._outbox.config import OutboxConfig
from mailer._plugins import discover
from mailer._routing.budget import BudgetConfig
from mailer._routing.health import HealthConfig
from mailer._routing.runtime import RetryConfig

DOCS = "\n".join(p.read_text() for p in sorted((Path(__file__).parents[2] / "docs").glob("*.md")))


def models() -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = [
        MailerConfig,
        HealthConfig,
        RetryConfig,
        BudgetConfig,
        OutboxConfig,
        DKIMOptions,
    ]
    for info in discover():
        cls = info.provider_class
        if cls is not None and cls.__module__.startswith("mailer."):
            found.append(cls.Config)
    return found


def nested(annotation: Any) -> list[type[BaseModel]]:
    """The models inside an annotation (``X | None``, ``list[X]``...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in nested(arg)]


def undocumented() -> list[str]:
    missing: list[str] = []
    seen: set[type[BaseModel]] = set()
    todo = models()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, field in model.model_fields.items():
            pattern = r"`[^`\n]*\b" + re.escape(name) + r"\b[^`\n]*`"
            if not re.search(pattern, DOCS):
                missing.append(f"{model.__module__}.{model.__name__}.{name}")
            todo.extend(nested(field.annotation))
    return sorted(missing)


def test_every_option_is_documented() -> None:
    assert len(models()) >= 12  # the walk found the built-in providers
    assert undocumented() == []
