"""Django's own mail tests (tests/mail/tests.py of its source distribution), fetched once.

Django's wheel does not ship its test suite, so the sdist of the installed version is
downloaded with pip (PyPI only, as on CI) and cached under ``.venv/django-tests/``; it is
never committed. ``make test`` fetches it before the suite runs (``python -m
tests.integrations.django_suite``); a bare ``pytest`` fetches it on first use.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import django

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".venv" / "django-tests" / django.__version__
MEMBER = f"django-{django.__version__}/tests/mail/tests.py"


def tests_file() -> Path:
    """tests/mail/tests.py of the installed Django's sdist, downloaded if not cached."""
    target = CACHE / "tests.py"
    if target.is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / f"django-{django.__version__}.tar.gz"
    if not archive.is_file():
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(CACHE)]
        subprocess.run([*pip, "--no-binary", ":all:", f"django=={django.__version__}"], check=True)
    with tarfile.open(archive) as tar:
        source = tar.extractfile(MEMBER)
        assert source is not None, f"{MEMBER} is not in {archive}"
        data = source.read()
    partial = target.with_suffix(".part")
    partial.write_bytes(data)
    partial.replace(target)  # whole or absent: a second run never reads half a file
    return target


def load() -> ModuleType:
    """Django's tests/mail/tests.py as a module (``django_mail_tests``)."""
    name = "django_mail_tests"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, tests_file())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    print(tests_file())
