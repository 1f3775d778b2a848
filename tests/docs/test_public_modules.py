"""Public and private are visible: the public modules are listed once
(``mailer.PUBLIC_MODULES``), every other module has a private name, the docs import only
public modules, and the built-in providers have a public home that ``import mailer`` does
not load."""

from __future__ import annotations

import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import mailer
import mailer.providers
from mailer import PUBLIC_MODULES, Provider

ROOT = Path(__file__).parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `import mailer.x`, `import mailer.x as y`, `from mailer.x import y` (not mailer_acme)
IMPORT = re.compile(r"^\s*(?:from\s+(mailer(?:\.\w+)*)\s+import\b|import\s+(mailer(?:\.\w+)*))")


def _imports(page: Path) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        match = IMPORT.match(line)
        if match:
            found.append((number, match.group(1) or match.group(2)))
    return found


def test_the_docs_import_only_public_modules() -> None:
    seen = {module for page in PAGES for _, module in _imports(page)}
    assert {"mailer", "mailer.providers", "mailer.testing"} <= seen  # the check sees imports
    wrong = [
        f"{page.relative_to(ROOT)}:{number}: {module}"
        for page in PAGES
        for number, module in _imports(page)
        if module not in PUBLIC_MODULES
    ]
    assert not wrong, "docs import private modules:\n" + "\n".join(wrong)


def test_every_public_module_imports_and_every_other_module_is_private() -> None:
    for name in PUBLIC_MODULES:
        assert not any(part.startswith("_") for part in name.split(".")), name
        if name.startswith("mailer.django."):
            continue  # a Django app's modules, imported once settings exist: below
        importlib.import_module(name)
    # URLconfs and task modules are imported by Django after its settings are configured
    # (django-tasks' @task reads them): a fresh interpreter, as a project would have it.
    django_modules = [m for m in PUBLIC_MODULES if m.startswith("mailer.django.")]
    script = (
        "import django, importlib, sys\n"
        "from django.conf import settings\n"
        "settings.configure()\n"
        "django.setup()\n"
        "for name in sys.argv[1:]: importlib.import_module(name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, *django_modules],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the parts of a public package (other than the root ones) belong to it
    packages = [m for m in PUBLIC_MODULES if m not in ("mailer", "mailer.providers")]
    unlisted = [
        info.name
        for info in pkgutil.walk_packages(mailer.__path__, "mailer.")
        if info.name not in PUBLIC_MODULES
        and not any(part.startswith("_") for part in info.name.split("."))
        and not any(info.name.startswith(p + ".") for p in packages)
    ]
    assert not unlisted, f"neither listed in PUBLIC_MODULES nor private: {unlisted}"


def test_the_built_in_providers_have_a_public_home() -> None:
    names = mailer.providers.__all__
    assert names == sorted(mailer.providers._HOMES)
    for name in names:
        value = getattr(mailer.providers, name)
        assert isinstance(value, type) and value.__name__ == name
    from mailer.providers import SendGridProvider, SMTPProvider

    assert issubclass(SMTPProvider, Provider) and issubclass(SendGridProvider, Provider)
    smtp = SMTPProvider.from_config("primary", {"host": "smtp.example.com"})
    assert smtp.config.host == "smtp.example.com"
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        mailer.providers.Nope  # noqa: B018


def test_import_mailer_stays_lean() -> None:
    code = (
        "import sys, mailer, mailer.providers\n"
        "print(sorted(m for m in ('aiosmtplib', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"
